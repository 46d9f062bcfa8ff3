"""Diagonal-network theory (study A) against Hessians, brute force, closed forms and Monte Carlo."""

import itertools

import numpy as np
import pytest
import torch

import phasescope
from phasescope.analysis import (
    expected_test_loss,
    flattest_parameters,
    gauss_newton_sharpness,
    generalization_error,
    generalization_optimal_interpolator,
    interpolator_sharpness,
    min_l1_interpolator,
    min_sharpness_interpolator,
    one_point_interpolators,
    sharpness_lower_bound,
    solve_min_sharpness,
    theory_rows,
)
from phasescope.errors import PhasescopeError
from phasescope.models import DiagonalLinearNetwork
from phasescope.models.losses import mean_squared_error
from phasescope.report.theory_figure import draw_theory_figure
from tests.reference_min_sharpness import barrier_min_sharpness

PARAMETERIZATIONS = ["ww", "uu-vv", "uv"]


def _hessian_sharpness(X: np.ndarray, params: dict, parameterization: str) -> float:
    """phasescope.sharpness of a float64 network holding ``params``, on data it interpolates exactly."""
    model = DiagonalLinearNetwork(X.shape[1], parameterization).double()
    with torch.no_grad():
        for name, value in params.items():
            getattr(model, name).copy_(torch.from_numpy(value))
    inputs = torch.from_numpy(X)
    with torch.no_grad():
        targets = model(inputs)  # (n, 1): zero residuals
    return phasescope.sharpness(model, mean_squared_error, (inputs, targets), k=1, tol=1e-10).top


def _random_params(parameterization: str, d: int, rng: np.random.Generator) -> dict:
    names = ("u",) if parameterization == "ww" else ("u", "v")
    return {name: rng.standard_normal(d) for name in names}


def _predictor(params: dict, parameterization: str) -> np.ndarray:
    u, v = params["u"], params.get("v")
    return {"ww": lambda: u * u, "uu-vv": lambda: u * u - v * v, "uv": lambda: u * v}[parameterization]()


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_gauss_newton_sharpness_is_the_hessian_sharpness_at_an_interpolator(parameterization):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 7))
    params = _random_params(parameterization, 7, rng)
    assert gauss_newton_sharpness(X, params, parameterization) == pytest.approx(
        _hessian_sharpness(X, params, parameterization), rel=1e-6)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_interpolator_sharpness_is_the_sharpness_of_the_flattest_parameters(parameterization):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 6))
    beta = rng.standard_normal(6)
    beta = np.abs(beta) if parameterization == "ww" else beta
    flattest = flattest_parameters(beta, parameterization)
    np.testing.assert_allclose(_predictor(flattest, parameterization), beta, rtol=1e-12, atol=1e-12)
    closed_form = interpolator_sharpness(X, beta, parameterization)
    assert closed_form == pytest.approx(_hessian_sharpness(X, flattest, parameterization), rel=1e-6)
    factor = 2.0 if parameterization == "uv" else 4.0
    assert closed_form == pytest.approx(np.linalg.eigvalsh(factor / 3 * (X * np.abs(beta)) @ X.T)[-1], rel=1e-12)
    # Any other representation of beta is at least as sharp.
    for _ in range(5):
        params = _random_params(parameterization, 6, rng)
        assert gauss_newton_sharpness(X, params, parameterization) >= interpolator_sharpness(
            X, _predictor(params, parameterization) if parameterization != "ww" else params["u"] ** 2,
            parameterization) * (1 - 1e-12)


def test_gradient_flow_representation_of_uu_minus_vv():
    """Gradient flow conserves u*v = alpha^2, so u^2 + v^2 = sqrt(beta^2 + 4 alpha^4)."""
    rng = np.random.default_rng(2)
    X, beta, alpha = rng.standard_normal((3, 5)), rng.standard_normal(5), 0.3
    u = np.sqrt((beta + np.sqrt(beta ** 2 + 4 * alpha ** 4)) / 2)
    v = alpha ** 2 / u
    np.testing.assert_allclose(u * u - v * v, beta, atol=1e-12)
    expected = np.linalg.eigvalsh(4 / 3 * (X * np.sqrt(beta ** 2 + 4 * alpha ** 4)) @ X.T)[-1]
    assert gauss_newton_sharpness(X, {"u": u, "v": v}, "uu-vv") == pytest.approx(expected, rel=1e-12)


def _basic_solutions(X: np.ndarray, y: np.ndarray, nonnegative: bool) -> list[np.ndarray]:
    """Every basic solution of X beta = y (support of size n), the candidates for a vertex optimum."""
    n, d = X.shape
    solutions = []
    for support in itertools.combinations(range(d), n):
        block = X[:, support]
        if abs(np.linalg.det(block)) < 1e-10:
            continue
        beta = np.zeros(d)
        beta[list(support)] = np.linalg.solve(block, y)
        if not nonnegative or beta.min() >= -1e-12:
            solutions.append(beta)
    return solutions


@pytest.mark.parametrize("nonnegative", [False, True])
def test_min_l1_interpolator_matches_vertex_enumeration(nonnegative):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((3, 8))
    y = X @ np.abs(rng.standard_normal(8)) if nonnegative else rng.standard_normal(3)
    beta = min_l1_interpolator(X, y, nonnegative=nonnegative)
    np.testing.assert_allclose(X @ beta, y, atol=1e-10)
    assert not nonnegative or beta.min() >= 0
    vertices = _basic_solutions(X, y, nonnegative)
    best = min(vertices, key=lambda vertex: np.abs(vertex).sum())
    assert np.abs(beta).sum() == pytest.approx(np.abs(best).sum(), rel=1e-9)
    np.testing.assert_allclose(beta, best, atol=1e-8)


def _random_interpolators(X: np.ndarray, y: np.ndarray, nonnegative: bool, count: int,
                          rng: np.random.Generator) -> list[np.ndarray]:
    """Convex combinations of basic feasible solutions (ww), or of those moved along the null space."""
    vertices = np.array(_basic_solutions(X, y, nonnegative))
    samples = []
    null_space = np.linalg.svd(X)[2][X.shape[0]:].T  # (d, d - n)
    for _ in range(count):
        picked = vertices[rng.choice(len(vertices), size=min(4, len(vertices)), replace=False)]
        beta = rng.dirichlet(np.ones(len(picked))) @ picked
        if not nonnegative:
            beta = beta + null_space @ rng.standard_normal(null_space.shape[1]) * rng.uniform(0, 0.5)
        samples.append(beta)
    return samples


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_min_sharpness_interpolator_is_feasible_certified_and_flattest(parameterization):
    rng = np.random.default_rng(4)
    nonnegative = parameterization == "ww"
    X = rng.standard_normal((4, 10))
    y = X @ np.abs(rng.standard_normal(10)) if nonnegative else rng.standard_normal(4)
    solution = solve_min_sharpness(X, y, parameterization)
    np.testing.assert_allclose(X @ solution.beta, y, atol=1e-9)
    assert not nonnegative or solution.beta.min() >= 0
    assert solution.sharpness == pytest.approx(interpolator_sharpness(X, solution.beta, parameterization), rel=1e-12)
    assert solution.lower_bound <= solution.sharpness * (1 + 1e-9)
    assert solution.relative_gap <= 1e-6
    assert solution.lower_bound == pytest.approx(
        sharpness_lower_bound(X, y, solution.dual_matrix, parameterization), rel=1e-9)
    min_l1 = min_l1_interpolator(X, y, nonnegative=nonnegative)
    assert solution.sharpness <= interpolator_sharpness(X, min_l1, parameterization) * (1 + 1e-9)
    others = _random_interpolators(X, y, nonnegative, 200, rng)
    sharpness = np.array([interpolator_sharpness(X, beta, parameterization) for beta in others])
    assert max(np.abs(X @ beta - y).max() for beta in others) < 1e-9
    assert solution.sharpness <= sharpness.min() * (1 + 1e-9)
    assert solution.lower_bound <= sharpness.min()


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("shape", [(4, 10), (12, 40)])
def test_cvxpy_optimum_agrees_with_the_barrier_solver_and_its_certificate(parameterization, shape):
    """Two implementations of the semidefinite program (cvxpy with Clarabel, and the log-barrier method
    phasescope shipped before) reach the same sharpness, each within its own certified gap."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal(shape)
    y = X @ np.abs(rng.standard_normal(shape[1])) if parameterization == "ww" else rng.standard_normal(shape[0])
    ours, reference = solve_min_sharpness(X, y, parameterization), barrier_min_sharpness(X, y, parameterization)
    for solution in (ours, reference):
        assert solution.relative_gap <= 1e-6
        assert solution.lower_bound <= solution.sharpness * (1 + 1e-12)
    # each optimum lies above the other's certified lower bound: the two agree within the gaps
    assert reference.lower_bound <= ours.sharpness * (1 + 1e-12)
    assert ours.lower_bound <= reference.sharpness * (1 + 1e-12)
    assert ours.sharpness == pytest.approx(reference.sharpness, rel=1e-6)


@pytest.mark.parametrize("parameterization", ["ww", "uv"])
def test_sharpness_lower_bound_holds_for_any_multiplier(parameterization):
    rng = np.random.default_rng(5)
    X = np.abs(rng.standard_normal((3, 8)))
    y = X @ np.abs(rng.standard_normal(8))
    optimum = solve_min_sharpness(X, y, parameterization).sharpness
    for _ in range(20):
        root = rng.standard_normal((3, rng.integers(1, 4)))
        assert sharpness_lower_bound(X, y, root @ root.T, parameterization) <= optimum * (1 + 1e-9)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_one_point_interpolators_put_their_mass_on_opposite_features(parameterization):
    rng = np.random.default_rng(6)
    x = rng.uniform(0.2, 2.0, size=9)
    y = 1.7
    closed = one_point_interpolators(x, y, parameterization)
    largest, smallest = int(np.argmax(x)), int(np.argmin(x))
    assert np.flatnonzero(closed["min_l1"]).tolist() == [largest]
    assert np.flatnonzero(closed["min_sharpness"]).tolist() == [smallest]
    assert closed["min_l1"][largest] == pytest.approx(y / x[largest])
    assert closed["min_sharpness"][smallest] == pytest.approx(y / x[smallest])
    factor = 2.0 if parameterization == "uv" else 4.0
    assert interpolator_sharpness(x[None], closed["min_sharpness"], parameterization) == pytest.approx(
        factor * y * x[smallest])
    numerical_l1 = min_l1_interpolator(x[None], [y], nonnegative=parameterization == "ww")
    np.testing.assert_allclose(numerical_l1, closed["min_l1"], atol=1e-9)
    numerical = solve_min_sharpness(x[None], [y], parameterization)
    np.testing.assert_allclose(numerical.beta, closed["min_sharpness"], atol=1e-7 * y / x[smallest])
    assert numerical.relative_gap <= 1e-9


def test_one_point_interpolators_with_signed_features():
    x, y = np.array([0.5, -3.0, 1.0, -0.2]), -2.0
    signed = one_point_interpolators(x, y, "uu-vv")
    np.testing.assert_allclose(signed["min_l1"], [0, 2.0 / 3.0, 0, 0])
    np.testing.assert_allclose(signed["min_sharpness"], [0, 0, 0, 10.0])
    nonnegative = one_point_interpolators(x, y, "ww")  # only features with the sign of y are eligible
    np.testing.assert_allclose(nonnegative["min_l1"], [0, 2.0 / 3.0, 0, 0])
    np.testing.assert_allclose(nonnegative["min_sharpness"], [0, 0, 0, 10.0])
    with pytest.raises(PhasescopeError, match="sign of y"):
        one_point_interpolators(np.array([1.0, 2.0]), -1.0, "ww")


def test_generalization_error_matches_monte_carlo():
    rng = np.random.default_rng(7)
    beta, beta_star, noise = rng.standard_normal(5), rng.standard_normal(5), 0.3
    inputs = rng.standard_normal((200_000, 5))
    targets = inputs @ beta_star + noise * rng.standard_normal(200_000)
    squared_errors = (inputs @ beta - targets) ** 2
    assert generalization_error(beta, beta_star, noise) == pytest.approx(squared_errors.mean(), rel=2e-2)
    assert expected_test_loss(beta, beta_star, noise) == pytest.approx(0.5 * squared_errors.mean(), rel=2e-2)
    assert generalization_error(beta, beta_star, noise) == pytest.approx(
        np.sum((beta - beta_star) ** 2) + noise ** 2, rel=1e-15)


def _sparse_regression(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """n = 10 noisy samples of a 3-sparse nonnegative teacher in d = 40 dimensions."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((10, 40))
    beta_star = np.zeros(40)
    beta_star[:3] = [1.0, 0.8, 0.6]
    noise = 0.5
    return X, X @ beta_star + noise * rng.standard_normal(10), beta_star, noise


@pytest.mark.parametrize("nonnegative", [False, True])
def test_generalization_optimal_interpolator_is_the_projection_of_the_teacher(nonnegative):
    """Optimality checked through the KKT conditions of min ||beta - beta*||^2 s.t. X beta = y (beta >= 0):
    beta - beta* = X^T lambda + mu with mu >= 0 and mu_j beta_j = 0; and no sampled interpolator beats it."""
    X, y, beta_star, noise = _sparse_regression()
    if not nonnegative:
        y = y - 3.0 * X[:, 5]  # a signed problem whose projection leaves the nonnegative orthant
    best = generalization_optimal_interpolator(X, y, beta_star, nonnegative=nonnegative)
    np.testing.assert_allclose(X @ best, y, atol=1e-9)
    support = best > 1e-9 if nonnegative else np.ones(X.shape[1], dtype=bool)
    multiplier = np.linalg.lstsq(X[:, support].T, (best - beta_star)[support], rcond=None)[0]
    slack = (best - beta_star) - X.T @ multiplier  # mu: zero on the support, >= 0 off it
    np.testing.assert_allclose(slack[support], 0.0, atol=1e-7)
    if nonnegative:
        assert best.min() >= 0 and slack[~support].min() >= -1e-7
        assert (generalization_optimal_interpolator(X, y, beta_star) < -1e-6).any()  # the constraint is active
    rng = np.random.default_rng(9)
    null_space = np.linalg.svd(X)[2][X.shape[0]:].T  # (d, d - n)
    error = generalization_error(best, beta_star, noise)
    for _ in range(300):
        other = best + null_space @ rng.standard_normal(null_space.shape[1]) * rng.uniform(0, 0.3)
        if not nonnegative or other.min() >= 0:
            assert error <= generalization_error(other, beta_star, noise) + 1e-9
    for beta in (min_l1_interpolator(X, y, nonnegative), min_sharpness_interpolator(X, y, "ww" if nonnegative
                                                                                      else "uu-vv")):
        assert error <= generalization_error(beta, beta_star, noise) + 1e-9


def test_generalization_optimal_error_matches_monte_carlo_on_fresh_samples():
    """The closed-form population loss of the generalization-optimal interpolator against fresh data drawn
    from the same model (x ~ N(0, I), y = <beta*, x> + noise)."""
    X, y, beta_star, noise = _sparse_regression()
    best = generalization_optimal_interpolator(X, y, beta_star, nonnegative=True)
    rng = np.random.default_rng(10)
    inputs = rng.standard_normal((400_000, X.shape[1]))
    targets = inputs @ beta_star + noise * rng.standard_normal(len(inputs))
    assert generalization_error(best, beta_star, noise) == pytest.approx(((inputs @ best - targets) ** 2).mean(),
                                                                         rel=1e-2)


def test_neither_interpolator_minimizes_the_generalization_error():
    """On a seeded sparse regression (n < d), the two interpolators differ, and an interpolator
    between them (a convex combination, also nonnegative) generalizes better than both; the
    generalization-optimal interpolator is better still."""
    X, y, beta_star, noise = _sparse_regression()
    min_l1 = min_l1_interpolator(X, y, nonnegative=True)
    min_sharpness = min_sharpness_interpolator(X, y, "ww")
    assert np.linalg.norm(min_sharpness - min_l1) > 0.5
    assert interpolator_sharpness(X, min_sharpness, "ww") < 0.9 * interpolator_sharpness(X, min_l1, "ww")
    assert np.abs(min_l1).sum() < 0.9 * np.abs(min_sharpness).sum()
    errors = {name: generalization_error(beta, beta_star, noise)
              for name, beta in (("min_l1", min_l1), ("min_sharpness", min_sharpness))}
    direction = min_sharpness - min_l1
    weight = -(min_l1 - beta_star) @ direction / (direction @ direction)  # the best point of the segment
    assert 0.1 < weight < 0.9
    between = min_l1 + weight * direction
    np.testing.assert_allclose(X @ between, y, atol=1e-9)
    assert generalization_error(between, beta_star, noise) < min(errors.values()) - 0.2
    best = generalization_optimal_interpolator(X, y, beta_star, nonnegative=True)
    assert generalization_error(best, beta_star, noise) <= generalization_error(between, beta_star, noise)


def test_theory_rows_are_consistent_with_the_functions():
    X, y, beta_star, noise = _sparse_regression()
    rows = theory_rows(X, y, beta_star, noise, "ww")
    table = {(row["component"], row["metric"]): row["value"] for row in rows}
    assert set(table) == {(component, metric) for component in ("min_l1", "min_sharpness", "generalization_optimal")
                          for metric in ("l1_norm", "sharpness", "generalization_error", "expected_test_loss")}
    assert table["min_l1", "l1_norm"] == pytest.approx(np.abs(min_l1_interpolator(X, y, nonnegative=True)).sum())
    assert table["min_sharpness", "sharpness"] < table["min_l1", "sharpness"]
    assert table["min_l1", "l1_norm"] < table["min_sharpness", "l1_norm"]
    assert table["generalization_optimal", "generalization_error"] <= min(
        table[component, "generalization_error"] for component in ("min_l1", "min_sharpness"))
    for component in ("min_l1", "min_sharpness", "generalization_optimal"):
        assert table[component, "expected_test_loss"] == pytest.approx(0.5 * table[component, "generalization_error"])


def test_user_errors_name_what_was_expected():
    X = np.ones((2, 3))
    with pytest.raises(PhasescopeError, match="parameterization must be one of"):
        interpolator_sharpness(X, np.ones(3), "wv")
    with pytest.raises(PhasescopeError, match="only represent beta >= 0"):
        interpolator_sharpness(X, np.array([1.0, -1.0, 0.0]), "ww")
    with pytest.raises(PhasescopeError, match=r"beta must have shape \(3,\)"):
        interpolator_sharpness(X, np.ones(4), "uv")
    with pytest.raises(PhasescopeError, match="no nonnegative interpolator"):
        min_l1_interpolator(np.array([[1.0, 2.0]]), [-1.0], nonnegative=True)
    with pytest.raises(PhasescopeError, match="missing v"):
        gauss_newton_sharpness(X, {"u": np.ones(3)}, "uv")


def _assert_png_and_pdf(paths):
    png, pdf = paths
    assert png.suffix == ".png" and pdf.suffix == ".pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000


def test_theory_figure_with_gd_solutions(tmp_path):
    X, y, beta_star, noise = _sparse_regression()
    min_l1 = min_l1_interpolator(X, y, nonnegative=True)
    min_sharpness = min_sharpness_interpolator(X, y, "ww")
    rates = np.geomspace(1e-3, 1e-1, 6)
    # Synthetic GD solutions moving from the min-l1 towards the min-sharpness interpolator with eta.
    gd_solutions = {float(rate): min_l1 + weight * (min_sharpness - min_l1)
                    for rate, weight in zip(rates, np.linspace(0, 1, len(rates)))}
    drawn = draw_theory_figure(X, y, beta_star, noise, gd_solutions, tmp_path / "figures" / "theory")
    assert drawn.paths == [tmp_path / "figures" / "theory.png", tmp_path / "figures" / "theory.pdf"]
    _assert_png_and_pdf(drawn.paths)
    # the caption's numbers are panel (b)'s: the generalization error of each solution
    best = generalization_optimal_interpolator(X, y, beta_star, nonnegative=True)
    expected = {name: generalization_error(beta, beta_star, noise)
                for name, beta in [("min_l1", min_l1), ("min_sharpness", min_sharpness),
                                   ("generalization_optimal", best)]}
    assert drawn.interpolator_errors == pytest.approx(expected, rel=1e-9)
    # the table behind the panels: one row per interpolator and per rate
    table = drawn.table
    assert list(table.solution) == ["min-l1", "min-sharpness", "generalization-optimal"] + ["GD"] * len(rates)
    assert table.generalization_error.tolist() == pytest.approx(
        [expected["min_l1"], expected["min_sharpness"], expected["generalization_optimal"],
         *(generalization_error(gd_solutions[float(rate)], beta_star, noise) for rate in rates)], rel=1e-9)
    assert table.l1_norm.iloc[0] == pytest.approx(np.abs(min_l1).sum())
    assert drawn.gd_errors[float(rates[0])] == pytest.approx(expected["min_l1"], rel=1e-9)
    gd = {rate: generalization_error(beta, beta_star, noise) for rate, beta in gd_solutions.items()}
    assert drawn.gd_errors == pytest.approx(gd, rel=1e-9)
    best_rate = min(gd, key=gd.get)  # here a mixture of the two interpolators generalizes better than both
    assert expected["generalization_optimal"] <= gd[best_rate] < min(expected["min_l1"], expected["min_sharpness"])
    assert drawn.caption().endswith(f"the lowest besides the generalization-optimal one is GD at eta = "
                                    f"{best_rate:.3g}.")


def test_theory_figure_with_interpolators_only(tmp_path):
    x = np.array([[0.3, 1.2, 0.7, 2.0]])
    drawn = draw_theory_figure(x, [1.0], np.array([0.0, 0.5, 0.5, 0.0]), 0.1, None, tmp_path / "one_point",
                               parameterization="uu-vv")
    _assert_png_and_pdf(drawn.paths)
    assert drawn.gd_errors == {} and "GD" not in drawn.caption()
