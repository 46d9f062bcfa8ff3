import pytest
import torch

from tests.cases import CASES, make_case

torch.set_num_threads(2)


@pytest.fixture(params=CASES, ids=[case["name"] for case in CASES])
def case(request) -> dict:
    """Each curvature case: model, loss_fn, inputs, targets in float64."""
    return make_case(request.param)
