"""Norm versus sharpness on diagonal linear networks: the min-l1 and the min-sharpness interpolators.

Fojtik, Matveev, Chou, Kutyniok and Maly, "Conflicting Biases at the Edge of Stability: Norm versus
Sharpness Regularization" (arXiv 2505.21423): gradient flow from a small initialization finds the
min-l1 interpolator (Woodworth et al., COLT 2020), the edge of stability pushes towards low
sharpness, and on diagonal networks the two interpolators differ and neither minimizes the
generalization error.

Setting. A diagonal network predicts ``f(x) = <beta, x>`` with ``beta = w*w`` ("ww"),
``u*u - v*v`` ("uu-vv") or ``u*v`` ("uv"); the training loss is phasescope's mean squared error
``L = 1/(2n) sum_i (<beta, x_i> - y_i)^2`` over the rows of ``X`` (n, d). With the Jacobian
``J = X dbeta/dtheta`` (n, p) the Hessian is ``J^T J / n + (1/n) sum_i r_i d^2 f_i``; at an
interpolator every residual ``r_i`` is 0, so the sharpness is ``lambda_max(J^T J / n) =
lambda_max(J J^T / n)``, and ``J J^T = X diag(g) X^T`` where ``g_j`` sums the squared partial
derivatives of ``beta_j``: ``4 w_j^2`` (ww), ``4 (u_j^2 + v_j^2)`` (uu-vv), ``u_j^2 + v_j^2`` (uv).

Representation. For uu-vv and uv many parameters give the same beta; the sharpness *of beta* is the
smallest over them (the flattest representation): ``u^2 + v^2 >= |u^2 - v^2|`` and
``u^2 + v^2 >= 2|uv|``, with equality at ``(u, v) = (sqrt(beta+), sqrt(beta-))`` and at the
balanced ``|u| = |v| = sqrt|beta|``. So, with ``c = 4`` (ww, uu-vv) or ``c = 2`` (uv),

    S(beta) = lambda_max((c/n) X diag(|beta|) X^T),      beta >= 0 for ww.

Gradient flow reaches these representations: for uv it conserves ``u^2 - v^2`` (and GD multiplies it
by ``1 - eta^2 g^2``), so the balanced start ``u = v = alpha`` stays balanced; for uu-vv it conserves
``u*v = alpha^2``, so ``u^2 + v^2 = sqrt(beta^2 + 4 alpha^4)``, the flattest one as alpha -> 0
(GD shrinks ``u*v`` by ``1 - 4 eta^2 g^2`` per step). Use ``gauss_newton_sharpness`` for the
parameters a run actually holds.

Solvers: numpy and scipy only. cvxpy is not needed, and not a dependency: it would bring a modelling
layer and its own solvers for two small problems. The min-l1 interpolator is a linear program
(``scipy.optimize.linprog``, HiGHS). The min-sharpness interpolator minimizes the largest eigenvalue of
an n x n matrix affine in ``|beta|`` over a polyhedron: a small semidefinite program, which scipy
cannot pose, solved here by a log-barrier interior-point method (Boyd and Vandenberghe, "Convex
Optimization", 2004, sections 11.3 and 11.6) followed by a polish on the optimal support and, where
needed, Kelley cutting planes. Its accuracy is not assumed but certified: any PSD ``Z`` with trace 1
gives a lower bound through one more linear program (weak duality, ``sharpness_lower_bound``), and
``solve_min_sharpness`` reports the certified relative gap (typically 1e-9 to 1e-7). Sizes: n up to
a few tens of points, d up to a few hundred features, the scale of a theory instance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular
from scipy.optimize import linprog
from threadpoolctl import threadpool_limits

from phasescope.errors import PhasescopeError
from phasescope.models.diagonal import PARAMETERIZATIONS

# Sum of squared partial derivatives of beta_j per unit |beta_j| in the flattest representation.
_CURVATURE_FACTOR = {"ww": 4.0, "uu-vv": 4.0, "uv": 2.0}
_HIGHS_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


def _check_parameterization(parameterization: str) -> None:
    if parameterization not in PARAMETERIZATIONS:
        raise PhasescopeError(f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, "
                              f"got {parameterization!r}")


def _as_design(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise PhasescopeError(f"X must be a non-empty matrix (n, d), got shape {X.shape}")
    return X


def _as_vector(value, length: int, name: str) -> np.ndarray:
    vector = np.asarray(value, dtype=np.float64)
    if vector.shape != (length,):
        raise PhasescopeError(f"{name} must have shape ({length},), got {vector.shape}")
    return vector


def _check_nonnegative(beta: np.ndarray) -> None:
    negative = int(np.sum(beta < 0))
    if negative:
        raise PhasescopeError(f"ww networks only represent beta >= 0, got {negative} negative entries "
                              f"(smallest {beta.min():.3g})")


def _check_problem(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = _as_design(X)
    return X, _as_vector(y, X.shape[0], "y")


def _weighted_gram_top_eigenvalue(X: np.ndarray, weights: np.ndarray) -> float:
    """``lambda_max((1/n) X diag(weights) X^T)`` for weights >= 0, through the smaller Gram matrix."""
    scaled = X * np.sqrt(weights)  # (n, d)
    gram = scaled @ scaled.T if X.shape[0] <= X.shape[1] else scaled.T @ scaled
    return float(np.linalg.eigvalsh(gram)[-1]) / X.shape[0]


def gauss_newton_sharpness(X, params: dict, parameterization: str) -> float:
    """``lambda_max(J^T J / n)`` for any diagonal-network parameters: the sharpness at zero residuals.

    ``J J^T = X diag(g) X^T`` with ``g = 4 u^2`` (ww), ``4 (u^2 + v^2)`` (uu-vv), ``u^2 + v^2`` (uv).
    Away from an interpolator this is only the Gauss-Newton part of the Hessian.

    Args:
        X: (n, d) inputs.
        params: ``{"u": (d,)}`` for ww, ``{"u": (d,), "v": (d,)}`` otherwise, named as in
            ``DiagonalLinearNetwork``; arrays or tensors (``dict(model.named_parameters())`` works).
    """
    _check_parameterization(parameterization)
    X = _as_design(X)
    names = ("u",) if parameterization == "ww" else ("u", "v")
    missing = [name for name in names if name not in params]
    if missing:
        raise PhasescopeError(f"{parameterization} parameters need {', '.join(names)}, missing {', '.join(missing)}")
    values = [params[name].detach().cpu().numpy() if hasattr(params[name], "detach") else params[name]
              for name in names]  # tensors, nn.Parameters included
    squares = [_as_vector(np.asarray(value, dtype=np.float64).reshape(-1), X.shape[1], name) ** 2
               for name, value in zip(names, values)]
    if parameterization == "ww":
        weights = 4.0 * squares[0]
    else:
        weights = (4.0 if parameterization == "uu-vv" else 1.0) * (squares[0] + squares[1])
    return _weighted_gram_top_eigenvalue(X, weights)


def flattest_parameters(beta, parameterization: str) -> dict[str, np.ndarray]:
    """Parameters realizing ``beta`` with the smallest ``J^T J`` (see the module docstring).

    ww: ``u = sqrt(beta)``; uu-vv: ``u = sqrt(max(beta, 0))``, ``v = sqrt(max(-beta, 0))``;
    uv: ``u = sign(beta) sqrt|beta|``, ``v = sqrt|beta|``.
    """
    _check_parameterization(parameterization)
    beta = np.asarray(beta, dtype=np.float64).reshape(-1)
    if parameterization == "ww":
        _check_nonnegative(beta)
        return {"u": np.sqrt(beta)}
    if parameterization == "uu-vv":
        return {"u": np.sqrt(np.maximum(beta, 0.0)), "v": np.sqrt(np.maximum(-beta, 0.0))}
    root = np.sqrt(np.abs(beta))
    return {"u": np.sign(beta) * root, "v": root}


def interpolator_sharpness(X, beta, parameterization: str) -> float:
    """Sharpness at an interpolator, closed form: ``lambda_max((c/n) X diag(|beta|) X^T)``.

    ``c = 4`` for ww and uu-vv, ``c = 2`` for uv; the flattest parameters realizing beta (exact for
    ww, the small-initialization limit of gradient flow for uu-vv, balanced for uv). Valid where
    ``X beta = y``; elsewhere it is the Gauss-Newton part only.
    """
    _check_parameterization(parameterization)
    X = _as_design(X)
    beta = _as_vector(beta, X.shape[1], "beta")
    if parameterization == "ww":
        _check_nonnegative(beta)
    return _weighted_gram_top_eigenvalue(X, _CURVATURE_FACTOR[parameterization] * np.abs(beta))


def _split_design(X: np.ndarray, nonnegative: bool) -> np.ndarray:
    """Constraint matrix over z = beta (nonnegative) or z = [p, q] with beta = p - q."""
    return X if nonnegative else np.hstack([X, -X])


def _merge(z: np.ndarray, d: int, nonnegative: bool) -> np.ndarray:
    return z.copy() if nonnegative else z[:d] - z[d:]


def min_l1_interpolator(X, y, nonnegative: bool = False) -> np.ndarray:
    """``argmin ||beta||_1`` subject to ``X beta = y`` (and ``beta >= 0`` if ``nonnegative``).

    A linear program (HiGHS): ``beta = p - q`` with ``p, q >= 0`` and objective ``sum(p + q)``,
    or directly ``sum(beta)`` when nonnegative. The answer is a vertex: at most n non-zeros.

    Raises:
        PhasescopeError: if no (nonnegative) beta interpolates the data.
    """
    X, y = _check_problem(X, y)
    design = _split_design(X, nonnegative)
    result = linprog(np.ones(design.shape[1]), A_eq=design, b_eq=y, bounds=(0, None), method="highs",
                     options=_HIGHS_OPTIONS)
    if result.status != 0:
        kind = "nonnegative " if nonnegative else ""
        raise PhasescopeError(f"no {kind}interpolator: X beta = y has no {kind}solution ({result.message})")
    return _merge(np.maximum(result.x, 0.0), X.shape[1], nonnegative)


@dataclass
class MinSharpnessSolution:
    """A certified solution of ``min S(beta)`` over interpolators.

    Attributes:
        beta: (d,) the interpolator.
        sharpness: ``S(beta)``, its sharpness (flattest representation).
        lower_bound: a weak-duality lower bound on the minimum (``sharpness_lower_bound``).
        dual_matrix: (n, n) the multiplier ``Z >= 0``, ``trace Z = 1``, that gives the bound.
        newton_steps: Newton steps the barrier method took.
    """

    beta: np.ndarray
    sharpness: float
    lower_bound: float
    dual_matrix: np.ndarray
    newton_steps: int

    @property
    def relative_gap(self) -> float:
        """``(sharpness - lower_bound) / sharpness``: at most how much sharper than the optimum beta is."""
        return (self.sharpness - self.lower_bound) / self.sharpness if self.sharpness > 0 else 0.0


def solve_min_sharpness(X, y, parameterization: str = "ww", rtol: float = 1e-7,
                        max_newton_steps: int = 2000) -> MinSharpnessSolution:
    """``argmin S(beta)`` over interpolators ``X beta = y`` (``beta >= 0`` for ww), with a certificate.

    ``S(beta) = lambda_max((c/n) X diag(|beta|) X^T)`` is convex in beta (the largest eigenvalue of
    a matrix that is affine in ``|beta|`` and grows with it in the PSD order). For uu-vv and uv,
    ``beta = p - q`` with ``p, q >= 0``; ``p + q >= |beta|`` entrywise, so minimizing over (p, q)
    has the same optimum. Four stages, each keeping the best interpolator (upper bound) and the
    best multiplier Z (lower bound, ``sharpness_lower_bound``) found so far:

    1. a log-barrier interior-point method (``_barrier_maximize_scale``) until its own gap is below
       ``rtol / 10`` or round-off stops it (relative gaps of about 1e-8);
    2. polishing on the support and the multiplicity of the top eigenvalue (``_polish_interpolator``);
    3. multipliers from complementary slackness (``_complementary_multipliers``);
    4. if the certified gap still exceeds ``rtol``: Kelley's cutting planes (``_cutting_planes``).

    The certified ``relative_gap`` is typically 1e-9 to 1e-7 (1e-16 when the optimum is a vertex,
    as for one data point), and at worst about 1e-5 on signed problems with a highly multiple top
    eigenvalue; read it off the result rather than assuming ``rtol``.

    Raises:
        PhasescopeError: if no (nonnegative, for ww) interpolator exists.
    """
    _check_parameterization(parameterization)
    X, y = _check_problem(X, y)
    n, d = X.shape
    nonnegative = parameterization == "ww"
    factor = _CURVATURE_FACTOR[parameterization]
    if not np.any(y):  # beta = 0 interpolates and has sharpness 0
        return MinSharpnessSolution(np.zeros(d), 0.0, 0.0, np.eye(n) / n, 0)
    # Small dense matrices: BLAS threads only contend with each other (100x slower on a busy machine).
    with threadpool_limits(limits=1, user_api="blas"):
        candidates, multipliers, steps = _barrier_candidates(X, y, factor, nonnegative, rtol, max_newton_steps)
        barrier_beta = min(candidates, key=lambda beta: interpolator_sharpness(X, beta, parameterization))
        candidates += _polished_candidates(X, y, barrier_beta, factor)
        best_beta = min(candidates, key=lambda beta: interpolator_sharpness(X, beta, parameterization))
        multipliers += _complementary_multipliers(X, best_beta, factor) + _complementary_multipliers(X, barrier_beta,
                                                                                                     factor)
        bounds = [sharpness_lower_bound(X, y, multiplier, parameterization) for multiplier in multipliers]
        best_sharpness, lower_bound = interpolator_sharpness(X, best_beta, parameterization), max(bounds)
        dual_matrix = multipliers[int(np.argmax(bounds))]
        if best_sharpness - lower_bound > rtol * best_sharpness:
            refined_beta, refined_multiplier = _cutting_planes(X, y, factor, nonnegative, best_beta, rtol / 2)
            refined_sharpness = interpolator_sharpness(X, refined_beta, parameterization)
            if refined_sharpness < best_sharpness and _interpolates(X, y, refined_beta):
                best_beta, best_sharpness = refined_beta, refined_sharpness
            refined_bound = sharpness_lower_bound(X, y, refined_multiplier, parameterization)
            if refined_bound > lower_bound:
                lower_bound, dual_matrix = refined_bound, refined_multiplier
    return MinSharpnessSolution(beta=best_beta, sharpness=best_sharpness, lower_bound=lower_bound,
                                dual_matrix=dual_matrix, newton_steps=steps)


def min_sharpness_interpolator(X, y, parameterization: str = "ww", rtol: float = 1e-7) -> np.ndarray:
    """The interpolator of smallest sharpness ``S(beta)`` (see ``solve_min_sharpness``), (d,)."""
    return solve_min_sharpness(X, y, parameterization, rtol=rtol).beta


def sharpness_lower_bound(X, y, dual_matrix, parameterization: str = "ww") -> float:
    """Weak-duality lower bound on the smallest sharpness of an interpolator.

    ``lambda_max(M) = max <Z, M>`` over ``Z >= 0`` (PSD) with ``trace Z = 1``, so for any such Z

        min_beta S(beta) >= min_{X beta = y} <Z, (c/n) X diag(|beta|) X^T>
                          = min_{X beta = y} sum_j (c/n) (x^j)^T Z x^j |beta_j|,

    a weighted-l1 linear program (x^j: column j of X; beta >= 0 for ww). Equality for the optimal Z.
    """
    _check_parameterization(parameterization)
    X, y = _check_problem(X, y)
    dual_matrix = np.asarray(dual_matrix, dtype=np.float64)
    n = X.shape[0]
    if dual_matrix.shape != (n, n):
        raise PhasescopeError(f"dual_matrix must have shape ({n}, {n}), got {dual_matrix.shape}")
    dual_matrix = 0.5 * (dual_matrix + dual_matrix.T)
    eigenvalues = np.linalg.eigvalsh(dual_matrix)
    if eigenvalues[0] < -1e-12 * max(eigenvalues[-1], 1.0):
        raise PhasescopeError(f"dual_matrix must be positive semidefinite, smallest eigenvalue {eigenvalues[0]:.3g}")
    dual_matrix = dual_matrix / np.trace(dual_matrix)
    costs = _CURVATURE_FACTOR[parameterization] / n * np.einsum("ij,ik,kj->j", X, dual_matrix, X)
    nonnegative = parameterization == "ww"
    weights = costs if nonnegative else np.concatenate([costs, costs])
    result = linprog(np.maximum(weights, 0.0), A_eq=_split_design(X, nonnegative), b_eq=y, bounds=(0, None),
                     method="highs", options=_HIGHS_OPTIONS)
    if result.status != 0:
        raise PhasescopeError(f"no interpolator for the bound: {result.message}")
    return float(result.fun)


def one_point_interpolators(x, y: float, parameterization: str = "ww") -> dict[str, np.ndarray]:
    """Closed forms for one data point ``<beta, x> = y``: {"min_l1": beta, "min_sharpness": beta}.

    With one point, write each coordinate's share of the target as ``s_j = beta_j x_j`` (so
    ``sum_j s_j = y``; ``s_j`` has the sign of y for ww, where ``beta >= 0``). Both objectives are
    linear in ``|s|``:

        ||beta||_1 = sum_j |s_j| / |x_j|,        S(beta) = c sum_j |beta_j| x_j^2 = c sum_j |s_j| |x_j|.

    The l1 norm pays ``1/|x_j|`` per unit of the target and the sharpness pays ``|x_j|``, so the
    min-l1 interpolator puts all of y on the largest feature, ``beta = y / x_max e_max``, and the
    min-sharpness interpolator on the smallest non-zero one, ``beta = y / x_min e_min``: opposite
    coordinates. Eligible features are the non-zero ones, and for ww those with ``x_j y > 0``. Ties go
    to the first index (any split among tied features is optimal too).
    """
    _check_parameterization(parameterization)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise PhasescopeError(f"x must be one non-empty data point (d,), got shape {x.shape}")
    y = float(y)
    zeros = np.zeros_like(x)
    if y == 0.0:
        return {"min_l1": zeros, "min_sharpness": zeros.copy()}
    eligible = x * y > 0 if parameterization == "ww" else x != 0
    if not np.any(eligible):
        need = "a feature with the sign of y" if parameterization == "ww" else "a non-zero feature"
        raise PhasescopeError(f"no interpolator of one point: need {need}, got x = {x}, y = {y}")
    magnitude = np.where(eligible, np.abs(x), np.nan)
    solutions = {}
    for name, index in (("min_l1", int(np.nanargmax(magnitude))), ("min_sharpness", int(np.nanargmin(magnitude)))):
        beta = zeros.copy()
        beta[index] = y / x[index]
        solutions[name] = beta
    return solutions


def generalization_error(beta, beta_star, noise_std: float = 0.0) -> float:
    """``E (<beta, x> - y)^2 = ||beta - beta*||^2 + sigma^2`` for ``x ~ N(0, I)``, ``y = <beta*, x> + N(0, sigma^2)``.

    The plain expected squared error, without phasescope's factor 1/2 (see ``expected_test_loss``).
    """
    beta = np.asarray(beta, dtype=np.float64).reshape(-1)
    beta_star = _as_vector(np.asarray(beta_star, dtype=np.float64).reshape(-1), beta.size, "beta_star")
    if noise_std < 0:
        raise PhasescopeError(f"noise_std must be >= 0, got {noise_std}")
    return float(np.sum((beta - beta_star) ** 2) + noise_std ** 2)


def expected_test_loss(beta, beta_star, noise_std: float = 0.0) -> float:
    """Expected ``mean_squared_error`` on fresh data: ``0.5 (||beta - beta*||^2 + sigma^2)``."""
    return 0.5 * generalization_error(beta, beta_star, noise_std)


def theory_rows(X, y, beta_star, noise_std: float, parameterization: str = "ww") -> list[dict]:
    """Tidy rows comparing the min-l1 and the min-sharpness interpolators of ``(X, y)``.

    Metrics per component ("min_l1", "min_sharpness"): ``l1_norm`` (of beta), ``sharpness``
    (``interpolator_sharpness``), ``generalization_error`` and ``expected_test_loss`` (isotropic
    Gaussian inputs; see those functions for the factor 1/2).
    """
    _check_parameterization(parameterization)
    X, y = _check_problem(X, y)
    interpolators = {"min_l1": min_l1_interpolator(X, y, nonnegative=parameterization == "ww"),
                     "min_sharpness": min_sharpness_interpolator(X, y, parameterization)}
    rows = []
    for component, beta in interpolators.items():
        values = {"l1_norm": float(np.abs(beta).sum()),
                  "sharpness": interpolator_sharpness(X, beta, parameterization),
                  "generalization_error": generalization_error(beta, beta_star, noise_std),
                  "expected_test_loss": expected_test_loss(beta, beta_star, noise_std)}
        rows += [{"metric": metric, "value": value, "component": component} for metric, value in values.items()]
    return rows


def _interpolates(X: np.ndarray, y: np.ndarray, beta: np.ndarray) -> bool:
    return bool(np.abs(X @ beta - y).max() <= 1e-9 * max(float(np.abs(y).max()), 1.0))


def _top_eigenspace(X: np.ndarray, beta: np.ndarray, factor: float) -> np.ndarray:
    """Eigenvectors (n, r) of ``M(beta)`` whose eigenvalues are within 1e-3 of the largest: where a
    near-optimal beta keeps the top eigenvalue's multiplicity."""
    eigenvalues, eigenvectors = np.linalg.eigh(factor / X.shape[0] * (X * np.abs(beta)) @ X.T)
    return eigenvectors[:, eigenvalues >= (1 - 1e-3) * eigenvalues[-1]][:, ::-1]


def _barrier_candidates(X: np.ndarray, y: np.ndarray, factor: float, nonnegative: bool, rtol: float,
                        max_newton_steps: int) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Interpolators and multipliers from the barrier method, started inside the feasible set."""
    d = X.shape[1]
    feasible = min_l1_interpolator(X, y, nonnegative=nonnegative)
    if nonnegative:
        interior = _relative_interior_point(X, y, feasible)
    else:
        # Adding the same s > 0 to p and q keeps p - q: every coordinate can be positive.
        shift = max(float(np.mean(np.abs(feasible))), 1e-3 * float(np.linalg.norm(y)), 1e-12)
        interior = np.concatenate([np.maximum(feasible, 0) + shift, np.maximum(-feasible, 0) + shift])
    support = interior > 0  # coordinates the constraints force to 0 are left out
    points, multipliers, steps = _barrier_maximize_scale(X[:, support] if nonnegative else X, y, factor, nonnegative,
                                                         interior[support], rtol, max_newton_steps)
    design = _split_design(X, nonnegative)
    candidates = []
    for point in points:
        z = np.zeros_like(interior)
        z[support] = point
        z *= (y @ y) / (y @ (design @ z))  # beta = z / tau
        candidates.append(_merge(_project_onto_interpolators(design, y, z), d, nonnegative))
    return candidates, multipliers, steps


def _relative_interior_point(design: np.ndarray, y: np.ndarray, feasible: np.ndarray) -> np.ndarray:
    """A point of ``{z >= 0 : design z = y}`` positive on every coordinate that can be positive there.

    Linear program over the homogenized cone ``design z = tau y``, ``z, tau >= 0``: maximize
    ``sum s`` with ``s <= z``, ``0 <= s <= 1``. Adding cone points raises coordinates, so at the
    optimum ``s_j = 1`` exactly where ``z_j`` can be positive; averaging with a feasible point
    returns to ``tau = 1``.
    """
    n, m = design.shape
    # Variables [z (m), tau (1), s (m)].
    objective = np.concatenate([np.zeros(m + 1), -np.ones(m)])
    equality = np.hstack([design, -y[:, None], np.zeros((n, m))])
    slack = np.hstack([-np.eye(m), np.zeros((m, 1)), np.eye(m)])  # s - z <= 0
    bounds = [(0, None)] * (m + 1) + [(0, 1)] * m
    result = linprog(objective, A_ub=slack, b_ub=np.zeros(m), A_eq=equality, b_eq=np.zeros(n), bounds=bounds,
                     method="highs", options=_HIGHS_OPTIONS)
    assert result.status == 0, result.message
    cone_point, tau, positive = result.x[:m], result.x[m], result.x[m + 1:] > 0.5
    point = (np.maximum(cone_point, 0.0) + feasible) / (tau + 1.0)
    return np.where(positive, point, 0.0)


def _project_onto_interpolators(design: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Remove the round-off residual of ``design z = y`` by the smallest change relative to z; clip at 0."""
    correction = np.linalg.lstsq(design * z, y - design @ z, rcond=None)[0]
    return np.maximum(z * (1.0 + correction), 0.0)


def _barrier_maximize_scale(X: np.ndarray, y: np.ndarray, factor: float, nonnegative: bool, start: np.ndarray,
                            rtol: float, max_newton_steps: int) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Solve the homogenized problem ``max tau`` s.t. ``design z = tau y``, ``M(z) <= I``, ``z >= 0``.

    ``M(z) = (factor/n) X diag(w) X^T`` with ``w = z`` (nonnegative) or ``w = p + q`` is linear, so
    ``beta = z / tau`` is an interpolator with ``S(beta) <= 1 / tau`` and the optimal values satisfy
    ``min S = 1 / max tau``. Writing ``tau(z) = <y, design z> / ||y||^2`` and keeping the part of
    ``design z`` orthogonal to y at 0 leaves the LMI free of an epigraph variable. A log-barrier
    method (Boyd and Vandenberghe, "Convex Optimization", sections 11.3 and 11.6) minimizes
    ``-kappa tau(z) - log det(I - M(z)) - sum log z`` for growing kappa; at each centre
    ``max tau - tau <= (n + m) / kappa``.

    Numerics: the Hessian of ``-log det S`` is ``F^T F`` with ``F[:, k] = vec(K dM/dz_k K^T)``
    (``S = C C^T``, ``K = C^-1``) and that of ``-sum log z`` is ``diag(1/z^2)``, the identity in the
    variables ``z / z_current`` where steps are computed (``_newton_step``). ``S`` is carried along by
    its updates instead of being recomputed as ``I - M(z)``: near the optimum its small eigenvalues lie
    below the round-off of that difference. ``start`` must be strictly positive with ``design start``
    a positive multiple of y.

    Returns:
        Candidate points z (m,) and multipliers ``S^-1 / trace S^-1`` (n, n) (the last well-centred
        iterate and the last one), and the number of Newton steps.
    """
    n, d = X.shape
    design = _split_design(X, nonnegative)
    m = design.shape[1]
    fold = np.vstack([np.eye(d)] * (1 if nonnegative else 2))  # (m, d): dw/dz
    identity = np.eye(n)
    scale = factor / n
    tau_gradient = design.T @ y / (y @ y)  # tau(z) = tau_gradient @ z
    # Orthonormal rows spanning the constraints "design z has no component orthogonal to y".
    _, singular_values, right = np.linalg.svd(design - np.outer(y, y @ design) / (y @ y), full_matrices=False)
    constraint = right[singular_values > 1e-10 * np.linalg.norm(design)]  # none for one data point

    def matrix(z: np.ndarray) -> np.ndarray:
        return scale * (X * (fold.T @ z)) @ X.T

    # Rows of vec(symmetric n x n) that carry its Frobenius norm: the upper triangle, off-diagonal times sqrt 2.
    upper = np.triu_indices(n)
    packed = upper[0] * n + upper[1]
    packing_weights = np.where(upper[0] == upper[1], 1.0, np.sqrt(2.0))
    z = start / (2.0 * float(np.linalg.eigvalsh(matrix(start))[-1]))  # M(z) has norm 1/2
    slack = identity - matrix(z)
    degree = n + m
    # Start on the central path as nearly as possible: kappa fitting -kappa grad tau + grad barrier = 0
    # in least squares over the directions the constraints allow (Boyd and Vandenberghe, 11.3.1).
    null_basis = np.linalg.svd(np.vstack([constraint * z, np.zeros((1, m))]), full_matrices=True)[2][len(constraint):]
    pull = null_basis @ (tau_gradient * z)
    push = null_basis @ ((fold @ (scale * np.sum((solve_triangular(np.linalg.cholesky(slack), identity, lower=True)
                                                    @ X) ** 2, axis=0)) - 1.0 / z) * z)
    kappa = float(pull @ push) / float(pull @ pull)
    if not kappa > 0:
        kappa = 1.0 / float(tau_gradient @ z)
    steps = 0
    points, multipliers = [], []
    while steps < max_newton_steps:
        decrement = np.inf
        for _ in range(100):
            inverse_root = solve_triangular(np.linalg.cholesky(slack), identity, lower=True)  # K (n, n)
            columns = inverse_root @ X  # b_j = K a_j (n, d)
            # F = packed vec(K M(e_j) K^T) (n(n+1)/2, d), in the variables z / z_current where the
            # Hessian of -sum log z is the identity.
            outer = (columns[:, None, :] * columns[None, :, :]).reshape(n * n, d)[packed]
            stiff_factor = (scale * packing_weights[:, None] * outer @ fold.T) * z
            gradient = (-kappa * tau_gradient + fold @ (scale * np.sum(columns ** 2, axis=0)) - 1.0 / z) * z
            step, decrement = _newton_step(stiff_factor, gradient, constraint * z)
            step *= z
            steps += 1
            if decrement / 2 <= 1e-10 or steps >= max_newton_steps:
                break
            # Backtracking line search (alpha = 0.25, beta = 0.5) inside the domain on the change of the
            # centring objective, written through S^(-1/2) dS S^(-T/2) = K dS K^T (eigenvalues e):
            # log det(S + l dS) - log det S = sum log(1 + l e), accurate where S is nearly singular.
            relative_slack_step = np.linalg.eigvalsh(-scale * (columns * (fold.T @ step)) @ columns.T)
            ratios = np.concatenate([step / z, relative_slack_step])
            length = min(1.0, 0.99 / float(np.max(-ratios))) if np.any(ratios < 0) else 1.0
            while length > 1e-12:
                change = (-kappa * length * float(tau_gradient @ step)
                          - float(np.sum(np.log1p(length * relative_slack_step)))
                          - float(np.sum(np.log1p(length * step / z))))
                if change <= -0.25 * length * decrement:
                    break
                length *= 0.5
            if length <= 1e-12:  # round-off dominates the Newton direction: the attainable accuracy
                break
            slack_step = -matrix(step)
            z, slack = z + length * step, slack + length * slack_step
            # Steps keep constraint z = 0 only up to round-off; remove the drift apart from the step,
            # whose descent a restoring component would spoil.
            if len(constraint):
                restored = z * (1.0 - np.linalg.lstsq(constraint * z, constraint @ z, rcond=None)[0])
                restored_slack = slack - matrix(restored - z)
                if np.all(restored > 0) and np.all(np.linalg.eigvalsh(restored_slack) > 0):
                    z, slack = restored, restored_slack
        if decrement / 2 > 1e-6:
            break
        points.append(z.copy())
        multipliers.append(inverse_root.T @ inverse_root)
        if degree / kappa <= rtol * float(tau_gradient @ z) / 10:
            break
        kappa *= 16.0
    points, multipliers = points[-1:] + [z], multipliers[-1:] + [inverse_root.T @ inverse_root]
    return points, [inverse / np.trace(inverse) for inverse in multipliers], steps


def _newton_step(stiff_factor: np.ndarray, gradient: np.ndarray, constraint: np.ndarray) -> tuple[np.ndarray, float]:
    """Newton step for the Hessian ``I + F^T F`` (F = ``stiff_factor``) under ``A dx = 0``, and its squared decrement.

    Through the SVD ``F = U diag(s) V^T``, ``(I + F^T F)^(-1/2) = I - V diag(1 - (1 + s^2)^(-1/2)) V^T``
    exactly; in ``xi = (I + F^T F)^(1/2) dx`` the step is minus the projection of
    ``w = (I + F^T F)^(-1/2) g`` onto the null space of ``A (I + F^T F)^(-1/2)``. Near the end of a
    barrier method ``s`` spans ``1 .. kappa``; this keeps the error of the step at
    ``eps * ||g||``, while any route through a factorization of ``I + F^T F`` (normal equations,
    Cholesky, QR of ``[F; I]``) loses the step to round-off of order ``eps * kappa^2``.
    """
    _, singular_values, right = np.linalg.svd(stiff_factor, full_matrices=False)
    shrink = 1.0 - 1.0 / np.sqrt(1.0 + singular_values ** 2)

    def inverse_square_root(vectors: np.ndarray) -> np.ndarray:
        columns = vectors.reshape(len(vectors), -1)
        return (columns - right.T @ (shrink[:, None] * (right @ columns))).reshape(vectors.shape)

    scaled_gradient = inverse_square_root(gradient)
    if len(constraint):
        basis = np.linalg.qr(inverse_square_root(constraint.T))[0]
        scaled_gradient = scaled_gradient - basis @ (basis.T @ scaled_gradient)
    return -inverse_square_root(scaled_gradient), float(scaled_gradient @ scaled_gradient)


def _polished_candidates(X: np.ndarray, y: np.ndarray, beta: np.ndarray, factor: float) -> list[np.ndarray]:
    """``_polish_interpolator`` for every plausible multiplicity of the top eigenvalue."""
    polished = (_polish_interpolator(X, y, beta, factor, rank)
                for rank in range(1, _top_eigenspace(X, beta, factor).shape[1] + 1))
    return [candidate for candidate in polished if candidate is not None and _interpolates(X, y, candidate)]


def _polish_interpolator(X: np.ndarray, y: np.ndarray, beta: np.ndarray, factor: float, rank: int,
                         iterations: int = 4) -> np.ndarray | None:
    """Refine a near-optimal interpolator on its support and top-eigenvalue multiplicity.

    With the support J and signs of beta and the top eigenspace V (n, rank) of ``M(beta)`` fixed,
    an optimum solves the linear equations ``X_J beta_J = y`` and ``V^T M(beta) V = lambda I``
    (Overton's characterization of a multiple largest eigenvalue); the error of V enters the
    solution only at second order, so re-reading V from the solution converges quickly. Returns
    None when the solution leaves the sign pattern of beta.
    """
    n = X.shape[0]
    support = np.abs(beta) > 1e-6 * np.abs(beta).max()
    signs = np.sign(beta[support])
    first, second = np.triu_indices(rank)
    polished = beta.copy()
    for _ in range(iterations):
        eigenvectors = np.linalg.eigh(factor / n * (X * np.abs(polished)) @ X.T)[1][:, ::-1][:, :rank]
        projected = eigenvectors.T @ X[:, support]  # (rank, s)
        weights = np.where(first == second, 1.0, np.sqrt(2.0))[:, None]  # so that both rows weigh alike
        eigen_rows = np.hstack([weights * factor / n * projected[first] * projected[second] * signs,
                                -weights * (first == second)[:, None]])
        equations = np.vstack([np.hstack([X[:, support], np.zeros((n, 1))]), eigen_rows])
        right_side = np.concatenate([y, np.zeros(len(first))])
        # The smallest change that solves them: when the optimal face is not a point (more unknowns
        # than equations) this stays near beta, which the barrier put at the face's centre.
        current = np.concatenate([polished[support], [0.0]])
        current[-1] = np.linalg.lstsq(-eigen_rows[:, -1:], eigen_rows[:, :-1] @ current[:-1], rcond=None)[0][0]
        solution = (current + np.linalg.lstsq(equations, right_side - equations @ current, rcond=None)[0])[:-1]
        if np.any(solution * signs <= 0):
            return None
        polished = np.zeros_like(beta)
        polished[support] = solution
    return polished


def _complementary_multipliers(X: np.ndarray, beta: np.ndarray, factor: float) -> list[np.ndarray]:
    """Multipliers ``Z = V W V^T`` read off a near-optimal beta by complementary slackness.

    At the optimum Z lives on the top eigenspace V of ``M(beta)`` and the certificate's linear
    program has zero reduced cost wherever ``beta_j != 0``:
    ``(factor/n) (V^T x^j)^T W (V^T x^j) = sign(beta_j) <mu, x^j>``, with ``trace W = 1``. Solving these
    equations for ``(mu, W)`` by least squares, for each plausible multiplicity r of the top
    eigenvalue, gives multipliers far closer to optimal than the barrier's ``S^-1``, which converges
    only like ``kappa^(-1/2)`` on degenerate problems. W is projected onto the PSD matrices of trace
    1, so every candidate gives a valid bound whatever its accuracy.
    """
    n = X.shape[0]
    top = _top_eigenspace(X, beta, factor)
    support = np.abs(beta) > 1e-6 * np.abs(beta).max()
    signed_columns = X[:, support] * np.sign(beta[support])  # (n, s)
    multipliers = []
    for rank in range(1, top.shape[1] + 1):
        projected = top[:, :rank].T @ X[:, support]  # (r, s)
        first, second = np.triu_indices(rank)
        # Unknowns [mu (n), upper triangle of W]; <p, W p> = sum over the upper triangle, off-diagonal twice.
        quadratic = projected[first] * projected[second] * np.where(first == second, 1.0, 2.0)[:, None]
        equations = np.vstack([np.hstack([signed_columns.T, -factor / n * quadratic.T]),
                               np.concatenate([np.zeros(n), (first == second).astype(float)])])
        right_side = np.concatenate([np.zeros(signed_columns.shape[1]), [1.0]])
        solution = np.linalg.lstsq(equations, right_side, rcond=None)[0][n:]
        weights = np.zeros((rank, rank))
        weights[first, second] = solution
        weights = weights + np.triu(weights, 1).T
        values, vectors = np.linalg.eigh(weights)
        values = np.maximum(values, 0.0)
        if values.sum() <= 0:
            continue
        basis = top[:, :rank] @ vectors
        multipliers.append((basis * (values / values.sum())) @ basis.T)
    return multipliers


def _cutting_planes(X: np.ndarray, y: np.ndarray, factor: float, nonnegative: bool, beta: np.ndarray,
                    target: float, max_iterations: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Kelley's cutting-plane method from a near-optimal beta: better bounds where the others stall.

    ``S(beta) >= <v, M(beta) v>`` for unit v, so ``min t`` s.t. ``t >= <v_k, M(beta) v_k>`` for
    finitely many v_k over the interpolators is a linear program whose value bounds the minimum from
    below, and whose multipliers ``theta_k`` give ``Z = sum_k theta_k v_k v_k^T`` (the dual side:
    column generation for the multiplier). Cuts are the top eigenvectors of ``M`` at each LP solution
    and their pairwise combinations (a multiple top eigenvalue needs cuts between its eigenvectors).
    Stops when the bound is within ``target`` of the best beta found.

    Returns:
        The flattest interpolator seen, and the multiplier Z (n, n) of the last linear program.
    """
    n, d = X.shape
    design = _split_design(X, nonnegative)
    directions: list[np.ndarray] = []

    def add_cuts(point: np.ndarray) -> None:
        top = _top_eigenspace(X, point, factor)
        directions.extend(top.T)
        for i in range(top.shape[1]):
            for j in range(i):
                directions.extend([(top[:, i] + top[:, j]) / np.sqrt(2), (top[:, i] - top[:, j]) / np.sqrt(2)])

    best_beta, best_sharpness = beta, _weighted_gram_top_eigenvalue(X, factor * np.abs(beta))
    multiplier = np.eye(n) / n
    add_cuts(beta)
    for _ in range(max_iterations):
        cuts = np.array(directions)  # (K, n)
        costs = factor / n * (cuts @ X) ** 2  # (K, d): <v_k, M(e_j) v_k>
        costs = costs if nonnegative else np.hstack([costs, costs])
        result = linprog(np.concatenate([[1.0], np.zeros(design.shape[1])]),
                         A_ub=np.hstack([-np.ones((len(cuts), 1)), costs]), b_ub=np.zeros(len(cuts)),
                         A_eq=np.hstack([np.zeros((n, 1)), design]), b_eq=y,
                         bounds=[(None, None)] + [(0, None)] * design.shape[1], method="highs", options=_HIGHS_OPTIONS)
        if result.status != 0:
            break
        weights = np.maximum(-result.ineqlin.marginals, 0.0)
        if weights.sum() > 0:
            multiplier = (cuts.T * (weights / weights.sum())) @ cuts
        point = _merge(np.maximum(result.x[1:], 0.0), d, nonnegative)
        sharpness = _weighted_gram_top_eigenvalue(X, factor * np.abs(point))
        if sharpness < best_sharpness:
            best_beta, best_sharpness = point, sharpness
        if best_sharpness - result.fun <= target * best_sharpness:
            break
        add_cuts(point)
    return best_beta, multiplier
