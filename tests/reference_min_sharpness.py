"""The log-barrier interior-point solver of the min-sharpness interpolator that phasescope shipped
before it posed the problem to cvxpy: kept here as an independent second implementation that the
tests compare cvxpy's optimum against (Boyd and Vandenberghe, "Convex Optimization", 2004, sections
11.3 and 11.6, then a polish on the optimal support and Kelley cutting planes)."""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular
from scipy.optimize import linprog
from threadpoolctl import threadpool_limits

from phasescope.analysis.diagonal_theory import (
    _HIGHS_OPTIONS,
    MinSharpnessSolution,
    _merge,
    _project_onto_interpolators,
    _split_design,
    _weighted_gram_top_eigenvalue,
    interpolator_sharpness,
    min_l1_interpolator,
    min_sharpness_problem,
    sharpness_lower_bound,
)


def _interpolates(X: np.ndarray, y: np.ndarray, beta: np.ndarray) -> bool:
    return bool(np.abs(X @ beta - y).max() <= 1e-9 * max(float(np.abs(y).max()), 1.0))


def barrier_min_sharpness(X, y, parameterization: str = "ww", rtol: float = 1e-7,
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
    X, y, nonnegative, factor, trivial = min_sharpness_problem(X, y, parameterization)
    if trivial is not None:
        return trivial
    n, d = X.shape
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
                                dual_matrix=dual_matrix, iterations=steps)


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
