import pytest
import torch

from tests.cases import CASES, make_case
from tests.lm_fixtures import tiny_tokenizer

torch.set_num_threads(2)


@pytest.fixture(params=CASES, ids=[case["name"] for case in CASES])
def case(request) -> dict:
    """Each curvature case: model, loss_fn, inputs, targets in float64."""
    return make_case(request.param)


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny byte-level BPE of tests/lm_fixtures.py (modules with another tokenizer define their own)."""
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models and problems run fastest on one thread, and a second one stalls when other processes load
    the CPU; modules ask for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
