"""The curvature engine against dense float64 Hessians and closed forms."""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import phasescope
from phasescope.curvature import (
    DenseOperator,
    HessianOperator,
    hutchinson_trace,
    hutchpp_trace,
    lanczos,
    power_iteration,
)
from phasescope.errors import PhasescopeError
from phasescope.models import MLP
from phasescope.models.losses import mean_squared_error
from tests.cases import dense_hessian


def test_top_eigenvalues_match_dense_hessian(case):
    reference = torch.linalg.eigvalsh(dense_hessian(case["model"], case["loss_fn"], case["inputs"],
                                                    case["targets"])).flip(0)
    result = phasescope.sharpness(case["model"], case["loss_fn"], (case["inputs"], case["targets"]), k=3)
    assert result.converged
    assert_close(result.eigenvalues, reference[:3], rtol=1e-4, atol=0)
    assert torch.all(result.eigenvalues[:-1] >= result.eigenvalues[1:])
    assert result.eigenvectors.shape == (reference.shape[0], 3)


def test_eigenvectors_are_eigenvectors(case):
    hessian = dense_hessian(case["model"], case["loss_fn"], case["inputs"], case["targets"])
    result = phasescope.sharpness(case["model"], case["loss_fn"], (case["inputs"], case["targets"]), k=2,
                                  tol=1e-8)
    for i in range(2):
        vector = result.eigenvectors[:, i]
        assert_close(hessian @ vector, result.eigenvalues[i] * vector, rtol=0, atol=1e-6 * result.top)


def test_most_negative_eigenvalue_matches_dense(case):
    reference = torch.linalg.eigvalsh(dense_hessian(case["model"], case["loss_fn"], case["inputs"],
                                                    case["targets"]))
    result = phasescope.most_negative_eigenvalue(case["model"], case["loss_fn"],
                                                 (case["inputs"], case["targets"]), tol=1e-6)
    assert result.converged
    assert abs(result.top - float(reference[0])) <= 1e-4 * float(reference.abs().max())


def test_hvp_matches_dense_and_is_independent_of_chunking(case):
    data = (case["inputs"], case["targets"])
    hessian = dense_hessian(case["model"], case["loss_fn"], *data)
    vector = torch.randn(hessian.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = hessian @ vector
    for chunk_size in (None, 1, 5, 7):
        operator = HessianOperator(case["model"], case["loss_fn"], data, chunk_size=chunk_size)
        assert_close(operator.matvec(vector), expected, rtol=1e-10, atol=1e-12)
    batches = [(case["inputs"][i:i + 3], case["targets"][i:i + 3]) for i in range(0, case["n"], 3)]
    operator = HessianOperator(case["model"], case["loss_fn"], batches)
    assert_close(operator.matvec(vector), expected, rtol=1e-10, atol=1e-12)


def test_all_hvp_methods_agree(case):
    data = (case["inputs"], case["targets"])
    vector = torch.randn(sum(p.numel() for p in case["model"].parameters()), dtype=torch.float64)
    forward = HessianOperator(case["model"], case["loss_fn"], data, method="func")
    backward = HessianOperator(case["model"], case["loss_fn"], data, method="double_backward")
    assert_close(forward.matvec(vector), backward.matvec(vector), rtol=1e-10, atol=1e-12)
    graph = HessianOperator(case["model"], case["loss_fn"], data, method="graph", chunk_size=7)
    for _ in range(2):  # the kept graph gives the same product every time
        assert_close(graph.matvec(vector), backward.matvec(vector), rtol=1e-10, atol=1e-12)


def test_auto_falls_back_to_double_backward_for_mse_loss():
    model = MLP((4,), 2, depth=1, width=3).double()
    inputs, targets = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    # several chunks: "auto" takes forward-over-reverse, and double backward where it fails
    fallback = HessianOperator(model, F.mse_loss, (inputs, targets), chunk_size=4)
    result = fallback.matvec(torch.ones(fallback.size, dtype=torch.float64))
    assert fallback.method == "double_backward"
    forward = HessianOperator(model, lambda o, t: (o - t).pow(2).mean(), (inputs, targets), chunk_size=4)
    assert_close(forward.matvec(torch.ones(forward.size, dtype=torch.float64)), result)
    assert forward.method == "func"
    # one chunk: "auto" keeps the gradient graph
    graph = HessianOperator(model, F.mse_loss, (inputs, targets))
    assert graph.method == "graph"
    assert_close(graph.matvec(torch.ones(graph.size, dtype=torch.float64)), result)


def test_float32_chunking_agrees_to_float_tolerance():
    torch.manual_seed(0)
    model = MLP((10,), 3, depth=2, width=16)
    inputs, targets = torch.randn(100, 10), F.one_hot(torch.randint(0, 3, (100,)), 3).float()
    vector = torch.randn(sum(p.numel() for p in model.parameters()))
    whole = HessianOperator(model, mean_squared_error, (inputs, targets)).matvec(vector)
    chunked = HessianOperator(model, mean_squared_error, (inputs, targets), chunk_size=13).matvec(vector)
    assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


def test_parameter_subset_is_the_dense_sub_block(case):
    model = case["model"]
    first_layer = next(name for name, _ in model.named_modules() if name and list(_.parameters(recurse=False)))
    names = [name for name, _ in model.named_parameters() if name.startswith(first_layer + ".")]
    block = dense_hessian(model, case["loss_fn"], case["inputs"], case["targets"], names=names)
    result = phasescope.sharpness(model, case["loss_fn"], (case["inputs"], case["targets"]),
                                  params=[first_layer], tol=1e-8)
    assert_close(result.eigenvalues[0], torch.linalg.eigvalsh(block)[-1], rtol=1e-6, atol=0)
    assert result.eigenvectors.shape[0] == block.shape[0]


def test_hessian_trace_estimators_converge_to_dense_trace():
    torch.manual_seed(0)
    case_model = MLP((6,), 3, depth=2, width=8, activation="tanh").double()
    inputs = torch.randn(30, 6, dtype=torch.float64)
    targets = F.one_hot(torch.randint(0, 3, (30,)), 3).double()
    hessian = dense_hessian(case_model, mean_squared_error, inputs, targets)
    exact = float(torch.trace(hessian))
    operator = DenseOperator(hessian)
    errors = {}
    for name, estimator in [("hutchinson", hutchinson_trace), ("hutchpp", hutchpp_trace)]:
        errors[name] = [sum(abs(estimator(operator, budget, seed=s).estimate - exact) for s in range(10)) / 10
                        for budget in (9, 90, 900)]
        # the error falls with the budget, and the largest budget is close to the dense trace
        assert errors[name][2] < errors[name][0]
        assert errors[name][2] < 0.05 * abs(exact)
    # Hutch++ beats Hutchinson on a Hessian's decaying spectrum at equal budget
    assert errors["hutchpp"][1] < errors["hutchinson"][1]
    estimate = phasescope.hessian_trace(case_model, mean_squared_error, (inputs, targets), num_matvecs=300)
    assert estimate.num_matvecs == 300
    assert abs(estimate.estimate - exact) < 0.05 * abs(exact)


def test_hutchpp_is_exact_on_low_rank_operators():
    basis, _ = torch.linalg.qr(torch.randn(50, 4, dtype=torch.float64))
    matrix = basis @ torch.diag(torch.tensor([5.0, 3.0, -2.0, 1.0], dtype=torch.float64)) @ basis.T
    assert abs(hutchpp_trace(matrix, num_matvecs=15).estimate - 7.0) < 1e-10


def test_lanczos_on_a_dense_matrix_with_known_spectrum():
    eigenvalues = torch.tensor([10.0, 9.5, 4.0, 3.0, 1.0, 0.5, 0.0, -0.5, -2.0, -7.0], dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    matrix = basis @ torch.diag(eigenvalues) @ basis.T
    top = lanczos(matrix, k=2, tol=1e-10)
    assert_close(top.eigenvalues, eigenvalues[:2])
    bottom = lanczos(matrix, k=1, which="smallest", tol=1e-10)
    assert_close(bottom.eigenvalues, eigenvalues[-1:])
    exact_start = lanczos(matrix, k=1, v0=basis[:, 0], min_iter=1)  # an eigenvector: an invariant subspace
    assert exact_start.num_matvecs == 1 and exact_start.converged
    assert_close(exact_start.eigenvalues, eigenvalues[:1])
    # a start on the third eigenvector is invariant too, with a zero residual; the minimum number of
    # steps (fresh random directions after the invariant subspace) still finds the top eigenvalue
    wrong_start = lanczos(matrix, k=1, v0=basis[:, 2], tol=1e-10)
    assert wrong_start.converged
    assert_close(wrong_start.eigenvalues, eigenvalues[:1])
    # a matvec callable works too
    assert_close(lanczos(lambda v: matrix @ v, size=10, k=1, tol=1e-10).eigenvalues, eigenvalues[:1])


def test_power_iteration_baseline_matches_dense(case):
    hessian = dense_hessian(case["model"], case["loss_fn"], case["inputs"], case["targets"])
    eigenvalues = torch.linalg.eigvalsh(hessian)
    dominant = eigenvalues[eigenvalues.abs().argmax()]
    result = power_iteration(hessian, tol=1e-7, max_iter=20000)
    assert result.converged
    assert_close(result.eigenvalues[0], dominant, rtol=1e-4, atol=0)


def test_warm_start_from_a_nearby_point_needs_fewer_hvps():
    torch.manual_seed(0)
    model = MLP((8,), 3, depth=2, width=20, activation="tanh")
    inputs = torch.randn(200, 8)
    targets = F.one_hot(torch.randint(0, 3, (200,)), 3).float()
    data = (inputs, targets)
    previous = phasescope.sharpness(model, mean_squared_error, data, tol=1e-4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(5):  # a few full-batch GD steps: the next checkpoint
        optimizer.zero_grad()
        mean_squared_error(model(inputs), targets).backward()
        optimizer.step()
    cold = phasescope.sharpness(model, mean_squared_error, data, tol=1e-4)
    warm = phasescope.sharpness(model, mean_squared_error, data, tol=1e-4, v0=previous)
    assert cold.converged and warm.converged
    assert warm.num_hvps < cold.num_hvps
    assert_close(torch.tensor(warm.top), torch.tensor(cold.top), rtol=1e-4, atol=0)


def test_preconditioned_sharpness_matches_dense_and_reports_thresholds():
    torch.manual_seed(0)
    model = MLP((5,), 2, depth=1, width=6, activation="tanh").double()
    inputs = torch.randn(40, 5, dtype=torch.float64)
    targets = torch.randn(40, 2, dtype=torch.float64)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(3):
        optimizer.zero_grad()
        mean_squared_error(model(inputs), targets).backward()
        optimizer.step()
    # independent reference: P from the optimizer state by hand, dense P^-1/2 H P^-1/2
    diagonal = []
    for p in model.parameters():
        state = optimizer.state[p]
        v_hat = state["exp_avg_sq"] / (1 - 0.999 ** int(state["step"]))
        diagonal.append((v_hat.sqrt() + 1e-8).reshape(-1))
    scale = torch.cat(diagonal).rsqrt()
    hessian = dense_hessian(model, mean_squared_error, inputs, targets)
    expected = torch.linalg.eigvalsh(scale[:, None] * hessian * scale[None, :])[-1]
    result = phasescope.preconditioned_sharpness(model, mean_squared_error, (inputs, targets), optimizer,
                                                 lr=0.01, tol=1e-8)
    assert_close(torch.tensor(result.eigenvalue, dtype=torch.float64), expected, rtol=1e-6, atol=0)
    assert result.adam_threshold == pytest.approx(38 / 0.01)
    assert result.gd_threshold == pytest.approx(2 / 0.01)


def test_bad_input_raises_one_line_errors():
    model = MLP((4,), 2, depth=1, width=3)
    inputs, targets = torch.randn(8, 4), torch.randn(8, 2)
    with pytest.raises(PhasescopeError, match="scalar"):
        phasescope.sharpness(model, lambda o, t: (o - t) ** 2, (inputs, targets))
    with pytest.raises(PhasescopeError, match="does not fit"):
        phasescope.sharpness(model, mean_squared_error, (torch.randn(8, 5), targets))
    with pytest.raises(PhasescopeError, match="nan"):
        phasescope.sharpness(model, mean_squared_error, (inputs * float("nan"), targets))
    with pytest.raises(PhasescopeError, match="k must be between 1 and the number of parameters"):
        phasescope.sharpness(model, mean_squared_error, (inputs, targets), k=10_000)
    with pytest.raises(PhasescopeError, match="no trainable parameter matches"):
        phasescope.sharpness(model, mean_squared_error, (inputs, targets), params=["nope"])
    with pytest.raises(PhasescopeError, match="same number of rows"):
        phasescope.sharpness(model, mean_squared_error, (inputs, targets[:3]))
