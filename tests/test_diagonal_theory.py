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


def test_neither_interpolator_minimizes_the_generalization_error():
    """On a seeded sparse regression (n < d), the two interpolators differ, and an interpolator
    between them (a convex combination, also nonnegative) generalizes better than both."""
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


def test_theory_rows_are_consistent_with_the_functions():
    X, y, beta_star, noise = _sparse_regression()
    rows = theory_rows(X, y, beta_star, noise, "ww")
    table = {(row["component"], row["metric"]): row["value"] for row in rows}
    assert set(table) == {(component, metric) for component in ("min_l1", "min_sharpness")
                          for metric in ("l1_norm", "sharpness", "generalization_error", "expected_test_loss")}
    assert table["min_l1", "l1_norm"] == pytest.approx(np.abs(min_l1_interpolator(X, y, nonnegative=True)).sum())
    assert table["min_sharpness", "sharpness"] < table["min_l1", "sharpness"]
    assert table["min_l1", "l1_norm"] < table["min_sharpness", "l1_norm"]
    for component in ("min_l1", "min_sharpness"):
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
    expected = {name: generalization_error(beta, beta_star, noise)
                for name, beta in [("min_l1", min_l1), ("min_sharpness", min_sharpness)]}
    assert drawn.interpolator_errors == pytest.approx(expected, rel=1e-9)
    assert drawn.gd_errors[float(rates[0])] == pytest.approx(expected["min_l1"], rel=1e-9)
    gd = {rate: generalization_error(beta, beta_star, noise) for rate, beta in gd_solutions.items()}
    assert drawn.gd_errors == pytest.approx(gd, rel=1e-9)
    best_rate = min(gd, key=gd.get)  # here a mixture of the two interpolators generalizes better than both
    assert gd[best_rate] < min(expected.values())
    assert drawn.caption().endswith(f"the lowest is GD at eta = {best_rate:.3g}.")


def test_theory_figure_with_interpolators_only(tmp_path):
    x = np.array([[0.3, 1.2, 0.7, 2.0]])
    drawn = draw_theory_figure(x, [1.0], np.array([0.0, 0.5, 0.5, 0.0]), 0.1, None, tmp_path / "one_point",
                               parameterization="uu-vv")
    _assert_png_and_pdf(drawn.paths)
    assert drawn.gd_errors == {} and "GD" not in drawn.caption()
