"""Norms against closed forms."""

import pytest
import torch
from torch import nn

from phasescope.models import DiagonalLinearNetwork
from phasescope.models.norms import diagonal_predictor_norms, layer_norms, norm_rows, parameter_norms


def test_parameter_and_layer_norms_closed_form():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.0]]))
        model[0].bias.copy_(torch.tensor([-1.0, 1.0]))
        model[1].weight.copy_(torch.tensor([[4.0, 0.0]]))
        model[1].bias.copy_(torch.tensor([-3.0]))
    assert parameter_norms(model) == pytest.approx({"l1": 15.0, "l2": (1 + 4 + 9 + 1 + 1 + 16 + 9) ** 0.5})
    layers = layer_norms(model)
    assert layers["0"] == pytest.approx({"l1": 8.0, "l2": 16 ** 0.5})
    assert layers["1"] == pytest.approx({"l1": 7.0, "l2": 5.0})
    rows = norm_rows(model)
    assert {(r["metric"], r.get("component")) for r in rows} == {
        ("l1", None), ("l2", None), ("l1", "0"), ("l2", "0"), ("l1", "1"), ("l2", "1")}


@pytest.mark.parametrize("parameterization, expected", [
    ("ww", [1.0, 4.0, 9.0]), ("uu-vv", [1.0 - 4.0, 4.0 - 1.0, 9.0 - 0.25]), ("uv", [2.0, 2.0, 1.5])])
def test_diagonal_predictor_norms(parameterization, expected):
    model = DiagonalLinearNetwork(3, parameterization)
    with torch.no_grad():
        model.u.copy_(torch.tensor([1.0, -2.0, 3.0]))
        if parameterization != "ww":
            model.v.copy_(torch.tensor([2.0, -1.0, 0.5]))
    beta = torch.tensor(expected, dtype=torch.float64)
    assert diagonal_predictor_norms(model) == pytest.approx({"l1": float(beta.abs().sum()),
                                                             "l2": float(beta.norm())})
    assert model(torch.eye(3)).squeeze(1).tolist() == pytest.approx(expected)
