"""The Lanczos stopping rule (eigenvalue error bounds, the random-start certificate, warm starts)
against dense float64 spectra and a second, plain Lanczos implementation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import phasescope
from phasescope.curvature import (
    lanczos,
    log_hidden_component_bound,
    random_start_threshold,
    ritz_value_error_bounds,
)
from phasescope.errors import PhasescopeError
from phasescope.models import MLP
from phasescope.models.losses import mean_squared_error
from tests.cases import dense_hessian

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: one thread is faster


# Ten outliers above a bulk, like the Hessian of a 10-class MSE network (the benchmark's spectrum).
OUTLIERS = [19.0, 16.9, 16.1, 15.6, 14.6, 13.6, 13.3, 11.3, 10.9, 7.4]


def matrix_with_spectrum(eigenvalues: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A dense symmetric matrix with the given eigenvalues and random eigenvectors (columns of Q)."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=generator,
                                           dtype=torch.float64))
    return basis @ torch.diag(eigenvalues) @ basis.T, basis


def outliers_and_bulk(n: int, seed: int = 0) -> torch.Tensor:
    bulk = 2.0 * torch.rand(n - len(OUTLIERS), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.cat([torch.tensor(OUTLIERS, dtype=torch.float64), bulk])


def plain_lanczos(matrix: np.ndarray, start: np.ndarray, steps: int):
    """An independent Lanczos (numpy, full reorthogonalization): the tridiagonal's diagonal, its
    off-diagonal including the last coupling, and the Ritz values and vectors (in T's coordinates)."""
    basis = [start / np.linalg.norm(start)]
    alphas, betas = [], []
    for j in range(steps):
        w = matrix @ basis[j]
        alphas.append(basis[j] @ w)
        stacked = np.array(basis)
        for _ in range(2):
            w = w - stacked.T @ (stacked @ w)
        betas.append(np.linalg.norm(w))
        basis.append(w / betas[-1])
    tridiagonal = np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)
    ritz_values, ritz_vectors = np.linalg.eigh(tridiagonal)
    return np.array(alphas), np.array(betas), ritz_values, ritz_vectors


def test_hidden_component_bound_holds_for_every_eigenvalue_beyond_the_point():
    eigenvalues = outliers_and_bulk(120)
    matrix, basis = matrix_with_spectrum(eigenvalues)
    start = np.random.default_rng(0).standard_normal(120)
    start /= np.linalg.norm(start)
    components = np.abs(basis.numpy().T @ start)  # |u_i . q_1|
    for steps in (3, 6, 10, 14, 18):
        _, betas, ritz_values, _ = plain_lanczos(matrix.numpy(), start, steps)
        for point in (ritz_values.max() + 0.05, ritz_values.max() + 1.0, ritz_values.min() - 0.05):
            bound = math.exp(log_hidden_component_bound(ritz_values, float(np.sum(np.log(betas))), point))
            beyond = eigenvalues.numpy() > point if point > ritz_values.max() else eigenvalues.numpy() < point
            assert np.all(components[beyond] <= bound * (1 + 1e-8))
    # once the outliers are resolved, the bound 1% above the top is far below a random start's components
    above = math.exp(log_hidden_component_bound(ritz_values, float(np.sum(np.log(betas))), 1.01 * ritz_values.max()))
    assert above < 1e-3 * components.mean()


def test_ritz_value_error_bounds_hold_and_beat_the_residual():
    eigenvalues = outliers_and_bulk(120)
    matrix, _ = matrix_with_spectrum(eigenvalues)
    start = np.random.default_rng(1).standard_normal(120)
    for steps in (16, 20, 24):
        _, betas, ritz_values, ritz_vectors = plain_lanczos(matrix.numpy(), start, steps)
        residuals = np.abs(betas[-1] * ritz_vectors[-1, :])
        wanted = np.argsort(ritz_values)[::-1][:3]
        bounds = ritz_value_error_bounds(ritz_values, residuals, wanted)
        errors = np.abs(eigenvalues.numpy()[:3] - ritz_values[wanted])  # the top three are resolved by now
        assert np.all(errors <= bounds * (1 + 1e-8) + 1e-12)
        assert np.all(bounds <= residuals[wanted])
    assert bounds[0] < 1e-3 * residuals[wanted][0]  # quadratic in the residual once converging


def test_random_start_threshold_bounds_the_probability():
    n, delta, samples = 30, 0.2, 20000
    generator = torch.Generator().manual_seed(0)
    unit = torch.zeros(n, dtype=torch.float64)
    unit[0] = 1.0
    orthogonal = torch.zeros(n, dtype=torch.float64)
    orthogonal[1] = 1.0
    for deterministic in (None, orthogonal, (unit + orthogonal) / math.sqrt(2)):
        weight = 0.0 if deterministic is None else 1.0
        threshold = random_start_threshold(n, delta, weight)
        starts = torch.randn(samples, n, generator=generator, dtype=torch.float64) / math.sqrt(n)
        if deterministic is not None:
            starts = starts + deterministic
        frequency = float(((starts @ unit).abs() / starts.norm(dim=1) <= threshold).double().mean())
        assert frequency <= delta
    assert random_start_threshold(n, 1e-3) < random_start_threshold(n, 1e-2)
    assert random_start_threshold(n, 1e-3, 1.0) < random_start_threshold(n, 1e-3, 0.0)
    with pytest.raises(PhasescopeError, match="failure_probability"):
        random_start_threshold(n, 1.5)


def test_certificate_finds_the_top_eigenvalue_where_the_error_bound_alone_returns_the_second():
    # eigenvalues 10 and 9.5 above a bulk below 5: from the start of seed 2 the top Ritz value first
    # settles on 9.5, with a residual and a gap bound that both look converged
    n = 400
    eigenvalues = torch.cat([torch.tensor([10.0, 9.5], dtype=torch.float64),
                             5 * torch.rand(n - 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)])
    matrix, _ = matrix_with_spectrum(eigenvalues, seed=5)
    uncertified = lanczos(matrix, tol=1e-4, criterion="eigenvalue", certify=False, seed=2)
    assert uncertified.converged and abs(uncertified.eigenvalues[0].item() - 9.5) < 1e-3  # the failure
    certified = lanczos(matrix, tol=1e-4, criterion="eigenvalue", seed=2)
    assert certified.converged and certified.certified
    assert abs(certified.eigenvalues[0].item() - 10.0) <= 1e-4 * 10.0
    assert certified.num_matvecs < 20  # fewer than the fixed floor it replaces


def test_certified_lanczos_meets_tol_on_an_outlier_spectrum_from_many_starts():
    eigenvalues = outliers_and_bulk(300)
    matrix, _ = matrix_with_spectrum(eigenvalues, seed=1)
    for seed in range(12):
        result = lanczos(matrix, tol=1e-4, criterion="eigenvalue", seed=seed)
        assert result.converged and result.certified
        assert abs(result.eigenvalues[0].item() - OUTLIERS[0]) <= 1e-4 * OUTLIERS[0]
        assert result.error_bounds[0] <= 1e-4 * abs(result.eigenvalues[0].item())


def test_eigenvalue_criterion_matches_dense_hessian(case):
    reference = torch.linalg.eigvalsh(dense_hessian(case["model"], case["loss_fn"], case["inputs"],
                                                    case["targets"])).flip(0)
    data = (case["inputs"], case["targets"])
    result = phasescope.sharpness(case["model"], case["loss_fn"], data, k=2, tol=1e-6, criterion="eigenvalue")
    assert result.converged and result.certified
    assert_close(result.eigenvalues, reference[:2], rtol=1e-6, atol=0)
    assert torch.all(result.error_bounds <= 1e-6 * result.eigenvalues.abs())
    residual = phasescope.sharpness(case["model"], case["loss_fn"], data, k=2, tol=1e-6)
    assert result.num_hvps <= residual.num_hvps


def test_warm_start_with_the_competitor_sees_a_crossing():
    # the top two eigenvalues swap between two "checkpoints", their eigenvectors turning a little
    n = 200
    eigenvalues = outliers_and_bulk(n)
    eigenvalues[:2] = torch.tensor([10.0, 9.8], dtype=torch.float64)
    eigenvalues[2:10] = torch.linspace(9.0, 6.0, 8, dtype=torch.float64)
    before, basis = matrix_with_spectrum(eigenvalues, seed=2)
    previous = lanczos(before, tol=1e-8, criterion="eigenvalue")
    assert previous.next_vector is not None
    assert abs(float(previous.next_vector @ basis[:, 1])) > 0.99  # the competitor is the second eigenvector
    angle = 0.05
    rotation = torch.eye(n, dtype=torch.float64)
    rotation[:2, :2] = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    swapped = eigenvalues.clone()
    swapped[:2] = torch.tensor([9.8, 10.0], dtype=torch.float64)
    after_basis = basis @ rotation
    after = after_basis @ torch.diag(swapped) @ after_basis.T
    start = previous.eigenvectors[:, 0] + 0.1 * previous.next_vector
    warm = lanczos(after, v0=start, tol=1e-6, criterion="eigenvalue")
    assert abs(warm.eigenvalues[0].item() - 10.0) <= 1e-6 * 10.0


def test_warm_starts_along_a_trajectory_match_dense_hessians():
    torch.manual_seed(0)
    model = MLP((5,), 3, depth=2, width=8, activation="tanh").double()
    inputs = torch.randn(40, 5, dtype=torch.float64)
    targets = F.one_hot(torch.randint(0, 3, (40,)), 3).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    previous, warm_hvps, cold_hvps = None, 0, 0
    for _ in range(6):
        exact = float(torch.linalg.eigvalsh(dense_hessian(model, mean_squared_error, inputs, targets))[-1])
        warm = phasescope.sharpness(model, mean_squared_error, (inputs, targets), tol=1e-6, v0=previous,
                                    criterion="eigenvalue")
        cold = phasescope.sharpness(model, mean_squared_error, (inputs, targets), tol=1e-6, criterion="eigenvalue")
        assert abs(warm.top - exact) <= 1e-6 * abs(exact)
        assert abs(cold.top - exact) <= 1e-6 * abs(exact)
        warm_hvps, cold_hvps, previous = warm_hvps + warm.num_hvps, cold_hvps + cold.num_hvps, warm
        for _ in range(5):
            optimizer.zero_grad()
            mean_squared_error(model(inputs), targets).backward()
            optimizer.step()
    assert warm_hvps < cold_hvps


def test_certify_true_mixes_a_random_start_into_a_warm_one():
    eigenvalues = outliers_and_bulk(150)
    matrix, basis = matrix_with_spectrum(eigenvalues, seed=3)
    wrong = basis[:, 1] + 1e-3 * basis[:, 0]  # almost the second eigenvector
    certified = lanczos(matrix, v0=wrong, tol=1e-6, criterion="eigenvalue", certify=True)
    assert certified.certified
    assert abs(certified.eigenvalues[0].item() - OUTLIERS[0]) <= 1e-6 * OUTLIERS[0]
    with pytest.raises(PhasescopeError, match="criterion"):
        lanczos(matrix, criterion="exact")


def test_smallest_eigenvalue_near_zero_is_certified_on_the_spectrum_scale():
    # the bottom of a Hessian spectrum sits near zero: tolerance and certificate scale with max |theta|
    eigenvalues = outliers_and_bulk(300)
    eigenvalues[-1] = -1e-3
    matrix, _ = matrix_with_spectrum(eigenvalues, seed=4)
    result = lanczos(matrix, which="smallest", tol=1e-6, criterion="eigenvalue")
    assert result.converged and result.certified
    assert abs(result.eigenvalues[0].item() + 1e-3) <= 1e-6 * OUTLIERS[0]
    assert result.num_matvecs < 150
