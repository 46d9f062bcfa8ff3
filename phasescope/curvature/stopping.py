"""When a Lanczos run may stop: error bounds on Ritz values, and a probabilistic certificate that
a random start vector has not hidden a larger eigenvalue.

A Krylov method sees only the eigenvectors its start vector touches. From a random start a Ritz
value can settle, with a small residual, on the second eigenvalue while the first has not yet
entered the Krylov space; no residual test detects that. On the benchmark's MLP (checkpoint at
step 40, seeded start) a residual test at 1e-2 after 11 steps and the gap bound at 1e-4 after 13
both accepted ``lambda_2``, 4.3% below ``lambda_1``. The certificate below bounds the probability
of that failure instead of assuming it away with a fixed minimum number of steps (20 before, as
ARPACK's default subspace).
"""

from __future__ import annotations

import math

import numpy as np

from phasescope.errors import PhasescopeError


def ritz_value_error_bounds(ritz_values: np.ndarray, residuals: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Bounds on ``|theta_i - lambda|`` for the wanted Ritz values ``theta_i`` and their nearest eigenvalues.

    Each bound is ``min(r_i, r_i**2 / gap_i)``: ``r_i`` always bounds the distance to the nearest
    eigenvalue (Krylov–Bogoliubov), and once ``theta_i`` is separated from the rest of the spectrum by
    ``gap_i`` the error is quadratic in the residual (the gap theorem: Parlett, "The Symmetric
    Eigenvalue Problem", 1998, Theorem 11.7.1; Saad, "Numerical Methods for Large Eigenvalue
    Problems", 2011, Section 4.3). The gap is estimated from the other Ritz values, each moved
    towards ``theta_i`` by its own residual (``gap_i = min_j |theta_i - theta_j| - r_j``), so a
    neighbour that has not settled shrinks the gap; where that estimate is not positive, the bound
    is the residual alone. A relative tolerance ``tol`` on the eigenvalue is thus met with a residual
    of about ``sqrt(tol * |theta| * gap)`` rather than ``tol * |theta|``: far fewer steps.

    The estimate is only as good as the Ritz values: an eigenvalue that no Ritz value has seen yet
    can sit inside the gap. From a random start, :func:`log_hidden_component_bound` bounds that risk.

    Args:
        ritz_values: (m,) all Ritz values of the current Krylov space.
        residuals: (m,) their residual norms ``||A y_j - theta_j y_j||``.
        wanted: indices into ``ritz_values`` of the values to bound.

    Returns:
        (len(wanted),) the bounds, in the units of the eigenvalues.
    """
    bounds = np.empty(len(wanted))
    for position, i in enumerate(wanted):
        others = np.arange(len(ritz_values)) != i
        if not others.any():
            bounds[position] = residuals[i]
            continue
        gap = np.min(np.abs(ritz_values[others] - ritz_values[i]) - residuals[others])
        bounds[position] = min(residuals[i], residuals[i] ** 2 / gap) if gap > 0 else residuals[i]
    return bounds


def log_hidden_component_bound(ritz_values: np.ndarray, log_beta_product: float, point: float) -> float:
    """``log`` of ``prod(beta_j) / prod_i |point - theta_i|``: a bound on the start vector's component.

    After ``m`` Lanczos steps from a unit start ``q_1``, ``q_{m+1} = p_m(A) q_1 / (beta_1 ... beta_m)``
    with ``p_m`` the characteristic polynomial of the tridiagonal matrix, whose roots are the Ritz
    values. For an eigenpair ``(lambda, u)`` this gives ``|u . q_1| <= prod(beta_j) / |p_m(lambda)|``,
    and beyond the outermost Ritz value ``|p_m|`` only grows. So every eigenvector whose eigenvalue lies
    beyond ``point`` (above it when ``point`` is above all Ritz values, below it when below all) has a
    start component at most this bound (Kuczyński & Woźniakowski, "Probabilistic bounds on the extremal
    eigenvalues and condition number by the Lanczos algorithm", SIAM J. Matrix Anal. Appl. 15, 1994;
    van Dorsselaer, Hochstenbach & van der Vorst, "Computing probabilistic bounds for extreme
    eigenvalues of symmetric matrices with the Lanczos method", SIAM J. Matrix Anal. Appl. 22, 2001).

    Args:
        ritz_values: (m,) the Ritz values; ``point`` must lie outside their range.
        log_beta_product: ``sum(log(beta_j))`` over the ``m`` off-diagonals including the last residual
            coupling; ``-inf`` once the Krylov space is invariant (nothing is hidden then).
    """
    return float(log_beta_product - np.sum(np.log(np.abs(point - ritz_values))))


def random_start_threshold(size: int, failure_probability: float, deterministic_weight: float = 0.0) -> float:
    """A component ``t`` that a random start falls below, along any fixed unit vector, with probability
    at most ``failure_probability``.

    The start is ``s = w + g`` with ``g ~ N(0, I / n)`` and ``w`` deterministic (a warm start) of norm
    ``deterministic_weight``, normalized to ``s / ||s||``. For a unit ``u``, ``u . g ~ N(0, 1 / n)`` whatever
    ``w`` is, so ``P(|u . s| <= a) <= a sqrt(2 n / pi)``; and ``||g|| <= 1 + eta`` except with probability
    ``exp(-n eta^2 / 2)`` (Gaussian concentration of the norm), which takes a tenth of the budget. Hence
    ``P(|u . s| / ||s|| <= t) <= t (||w|| + 1 + eta) sqrt(2 n / pi) + delta / 10 <= delta``.
    """
    if not 0 < failure_probability < 1:
        raise PhasescopeError(f"failure_probability must be in (0, 1), got {failure_probability}")
    eta = math.sqrt(2 * math.log(10 / failure_probability) / size)
    return 0.9 * failure_probability / ((deterministic_weight + 1 + eta) * math.sqrt(2 * size / math.pi))
