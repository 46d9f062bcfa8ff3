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

Solvers. The min-l1 interpolator is a linear program (``scipy.optimize.linprog``, HiGHS). The
min-sharpness interpolator minimizes the largest eigenvalue of an n x n matrix affine in ``|beta|``
over a polyhedron, a small semidefinite program, posed to cvxpy and solved by Clarabel. Its accuracy
is not assumed but certified: any PSD ``Z`` with trace 1 gives a lower bound through one more linear
program (weak duality, ``sharpness_lower_bound``), and ``solve_min_sharpness`` reports the certified
relative gap. The generalization-optimal interpolator, the one the theorem compares both against, is
a projection of the teacher onto the interpolators (closed form; a quadratic program through cvxpy
when beta >= 0). Sizes: n up to a few tens of points, d up to a few hundred features, the scale of a
theory instance.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
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


def min_sharpness_problem(X, y, parameterization: str
                          ) -> tuple[np.ndarray, np.ndarray, bool, float, MinSharpnessSolution | None]:
    """The checked min-sharpness problem of any solver: (X, y, nonnegative beta?, the curvature factor of the
    parameterization, the solution when y = 0 (beta = 0 interpolates with sharpness 0) else None)."""
    _check_parameterization(parameterization)
    X, y = _check_problem(X, y)
    n, d = X.shape
    trivial = None if np.any(y) else MinSharpnessSolution(np.zeros(d), 0.0, 0.0, np.eye(n) / n, 0)
    return X, y, parameterization == "ww", _CURVATURE_FACTOR[parameterization], trivial


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
        iterations: interior-point iterations the solver took.
    """

    beta: np.ndarray
    sharpness: float
    lower_bound: float
    dual_matrix: np.ndarray
    iterations: int

    @property
    def relative_gap(self) -> float:
        """``(sharpness - lower_bound) / sharpness``: at most how much sharper than the optimum beta is."""
        return (self.sharpness - self.lower_bound) / self.sharpness if self.sharpness > 0 else 0.0


def solve_min_sharpness(X, y, parameterization: str = "ww") -> MinSharpnessSolution:
    """``argmin S(beta)`` over interpolators ``X beta = y`` (``beta >= 0`` for ww), with a certificate.

    ``S(beta) = lambda_max((c/n) X diag(|beta|) X^T)`` is convex in beta (the largest eigenvalue of
    a matrix that is affine in ``|beta|`` and grows with it in the PSD order). For uu-vv and uv,
    ``beta = p - q`` with ``p, q >= 0``; ``p + q >= |beta|`` entrywise, so minimizing over (p, q)
    has the same optimum. The semidefinite program

        min t   s.t.   t I - (c/n) X diag(p + q) X^T >= 0 (PSD),   X (p - q) = y,   p, q >= 0

    goes to cvxpy with the Clarabel interior-point solver. The multiplier of the matrix inequality
    is a PSD ``Z`` with trace 1, which ``sharpness_lower_bound`` turns into a lower bound through one
    more linear program (weak duality): the certificate is computed, not taken from the solver.
    Clarabel's residual in ``X beta = y`` is removed by the smallest relative change of beta, so the
    returned beta interpolates to round-off. The certified ``relative_gap`` is 1e-13 on small problems
    and about 2e-7 on the demo's (30 points, 100 features), where Clarabel stops near its tolerance.

    Raises:
        PhasescopeError: if no (nonnegative, for ww) interpolator exists, or the solver fails.
    """
    import cvxpy as cp

    X, y, nonnegative, factor, trivial = min_sharpness_problem(X, y, parameterization)
    if trivial is not None:
        return trivial
    n, d = X.shape
    min_l1_interpolator(X, y, nonnegative=nonnegative)  # raises the plain "no interpolator" error
    design = _split_design(X, nonnegative)
    z = cp.Variable(design.shape[1], nonneg=True)  # beta (ww) or [p, q]
    weights = z if nonnegative else z[:d] + z[d:]
    top = cp.Variable()
    curvature = (factor / n) * (X @ cp.diag(weights) @ X.T)
    inequality = top * np.eye(n) - (curvature + curvature.T) / 2 >> 0
    problem = cp.Problem(cp.Minimize(top), [inequality, design @ z == y])
    # Small dense matrices: BLAS threads only contend with each other on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        _solve(problem, "min-sharpness")
        beta = _merge(_project_onto_interpolators(design, y, np.maximum(z.value, 0.0)), d, nonnegative)
        dual_matrix = np.asarray(inequality.dual_value, dtype=np.float64)
        dual_matrix = 0.5 * (dual_matrix + dual_matrix.T)
        eigenvalues, eigenvectors = np.linalg.eigh(dual_matrix)  # clip the solver's round-off to PSD
        dual_matrix = (eigenvectors * np.maximum(eigenvalues, 0.0)) @ eigenvectors.T
        lower_bound = sharpness_lower_bound(X, y, dual_matrix, parameterization)
    return MinSharpnessSolution(beta=beta, sharpness=interpolator_sharpness(X, beta, parameterization),
                                lower_bound=lower_bound, dual_matrix=dual_matrix / np.trace(dual_matrix),
                                iterations=int(problem.solver_stats.num_iters or 0))


def min_sharpness_interpolator(X, y, parameterization: str = "ww") -> np.ndarray:
    """The interpolator of smallest sharpness ``S(beta)`` (see ``solve_min_sharpness``), (d,)."""
    return solve_min_sharpness(X, y, parameterization).beta


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


def generalization_optimal_interpolator(X, y, beta_star, nonnegative: bool = False) -> np.ndarray:
    """The interpolator with the smallest generalization error: ``argmin ||beta - beta*||^2`` s.t. ``X beta = y``.

    With isotropic Gaussian inputs the generalization error of a linear predictor is
    ``||beta - beta*||^2 + sigma^2`` (``generalization_error``), so among interpolators the best one
    is the Euclidean projection of the teacher onto ``{beta : X beta = y}``: in closed form
    ``beta* + X^+ (y - X beta*)``. With ``nonnegative`` (what ww networks represent) the projection
    onto ``{beta >= 0 : X beta = y}`` is a quadratic program, solved by cvxpy (Clarabel). It uses
    the teacher, so no learner can pick it: it is the floor that min-l1, min-sharpness and GD's
    solutions are measured against.

    Raises:
        PhasescopeError: if no (nonnegative) beta interpolates the data.
    """
    X, y = _check_problem(X, y)
    beta_star = _as_vector(np.asarray(beta_star, dtype=np.float64).reshape(-1), X.shape[1], "beta_star")
    feasible = min_l1_interpolator(X, y, nonnegative=nonnegative)  # raises the plain "no interpolator" error
    projection = beta_star + np.linalg.lstsq(X, y - X @ beta_star, rcond=None)[0]
    if not nonnegative or projection.min() >= 0:
        return projection
    import cvxpy as cp

    beta = cp.Variable(X.shape[1], nonneg=True)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(beta - beta_star)), [X @ beta == y])
    with threadpool_limits(limits=1, user_api="blas"):
        _solve(problem, "generalization-optimal")
    solution = _project_onto_interpolators(X, y, np.maximum(beta.value, 0.0))
    # never worse than a known interpolator (guards a solver that stopped early)
    return min((solution, feasible), key=lambda b: float(np.sum((b - beta_star) ** 2)))


INTERPOLATORS = ("min_l1", "min_sharpness", "generalization_optimal")


def interpolators(X, y, beta_star, parameterization: str = "ww") -> dict[str, np.ndarray]:
    """The three interpolators of study A's theorem, by name (``INTERPOLATORS``): min-l1,
    min-sharpness and generalization-optimal (beta >= 0 for ww)."""
    _check_parameterization(parameterization)
    nonnegative = parameterization == "ww"
    return {"min_l1": min_l1_interpolator(X, y, nonnegative=nonnegative),
            "min_sharpness": min_sharpness_interpolator(X, y, parameterization),
            "generalization_optimal": generalization_optimal_interpolator(X, y, beta_star, nonnegative=nonnegative)}


def theory_rows(X, y, beta_star, noise_std: float, parameterization: str = "ww") -> list[dict]:
    """Tidy rows comparing the three interpolators of ``(X, y)`` (``interpolators``).

    Metrics per component ("min_l1", "min_sharpness", "generalization_optimal"): ``l1_norm`` (of beta), ``sharpness``
    (``interpolator_sharpness``), ``generalization_error`` and ``expected_test_loss`` (isotropic
    Gaussian inputs; see those functions for the factor 1/2).
    """
    X, y = _check_problem(X, y)
    rows = []
    for component, beta in interpolators(X, y, beta_star, parameterization).items():
        values = {"l1_norm": float(np.abs(beta).sum()),
                  "sharpness": interpolator_sharpness(X, beta, parameterization),
                  "generalization_error": generalization_error(beta, beta_star, noise_std),
                  "expected_test_loss": expected_test_loss(beta, beta_star, noise_std)}
        rows += [{"metric": metric, "value": value, "component": component} for metric, value in values.items()]
    return rows


def _solve(problem, name: str) -> None:
    """Solve a cvxpy problem with Clarabel at tight tolerances. Clarabel may stop a little short of
    them ("optimal_inaccurate", relative residuals near 1e-8 on the larger theory instances): that is
    accepted without a warning, because the callers certify or bound what they return."""
    import cvxpy as cp

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Solution may be inaccurate")
            problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    except cp.SolverError as error:
        raise PhasescopeError(f"the {name} program failed: {error}") from None
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or problem.variables()[0].value is None:
        raise PhasescopeError(f"the {name} program ended {problem.status}")


def _project_onto_interpolators(design: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Remove the round-off residual of ``design z = y`` by the smallest change relative to z; clip at 0."""
    correction = np.linalg.lstsq(design * z, y - design @ z, rcond=None)[0]
    return np.maximum(z * (1.0 + correction), 0.0)
