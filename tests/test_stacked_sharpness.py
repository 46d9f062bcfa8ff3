"""The sharpness of a stack of members at once (a learning-rate grid) against dense float64 Hessians
and against phasescope.sharpness run on each member alone."""

import pytest
import torch

import phasescope
from phasescope.curvature.batched import stacked_sharpness
from phasescope.errors import PhasescopeError
from phasescope.models import MLP
from phasescope.models.losses import mean_squared_error
from phasescope.train.functional import stack_parameters
from tests.cases import dense_hessian


def _members(count: int, dtype=torch.float64) -> list[MLP]:
    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        models.append(MLP((6,), 3, depth=1, width=5, init_scale=1.0 + 0.3 * seed).to(dtype))
    return models


def _data(dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(20, 6, generator=generator, dtype=dtype), torch.randn(20, 3, generator=generator, dtype=dtype)


def test_each_member_matches_its_dense_hessian():
    models, (inputs, targets) = _members(5), _data()
    result = stacked_sharpness(models[0], mean_squared_error, stack_parameters(models), (inputs, targets), tol=1e-8)
    assert result.converged.all()
    for i, model in enumerate(models):
        hessian = dense_hessian(model, mean_squared_error, inputs, targets)
        eigenvalues, eigenvectors = torch.linalg.eigh(hessian)
        assert result.values[i] == pytest.approx(float(eigenvalues[-1]), rel=1e-10)
        assert abs(float(result.eigenvectors[i] @ eigenvectors[:, -1])) == pytest.approx(1.0, abs=1e-8)


def test_stack_agrees_with_a_loop_over_members_and_warm_starts_save_products():
    models, (inputs, targets) = _members(6, torch.float32), _data(torch.float32)
    params = stack_parameters(models)
    stacked = stacked_sharpness(models[0], mean_squared_error, params, (inputs, targets), tol=1e-4)
    alone = [phasescope.sharpness(model, mean_squared_error, (inputs, targets), tol=1e-4) for model in models]
    assert stacked.values.tolist() == pytest.approx([result.top for result in alone], rel=1e-5)
    # the same stopping rule per member: the products each needs are those of its own run, give or take a step
    assert (stacked.num_hvps - torch.tensor([result.num_hvps for result in alone])).abs().max() <= 3
    moved = {name: p * 1.01 for name, p in params.items()}
    warm = stacked_sharpness(models[0], mean_squared_error, moved, (inputs, targets), tol=1e-4,
                             v0=stacked.eigenvectors)
    cold = stacked_sharpness(models[0], mean_squared_error, moved, (inputs, targets), tol=1e-4)
    assert warm.values.tolist() == pytest.approx(cold.values.tolist(), rel=1e-5)
    assert warm.num_hvps.sum() < cold.num_hvps.sum()


def test_bad_input_is_one_line():
    models, data = _members(2), _data()
    params = stack_parameters(models)
    with pytest.raises(PhasescopeError, match="tol must be positive"):
        stacked_sharpness(models[0], mean_squared_error, params, data, tol=0)
    with pytest.raises(PhasescopeError, match=r"v0 must have shape \(2, "):
        stacked_sharpness(models[0], mean_squared_error, params, data, v0=torch.ones(3, 5))
