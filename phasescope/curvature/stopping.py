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
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.linalg import eigh_tridiagonal

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


# How far beyond the outermost Ritz value the certificate rules out a hidden eigenvalue: half the gap
# to the next Ritz value, and at most this fraction of the value itself. Half the gap alone is not
# enough: with eigenvalues 10 and 9.5 above a bulk below 5, one random start in three returned 9.5
# after 7 steps (the gap to the bulk made the hidden 10 look covered); with the 1% cap none did.
CERTIFIED_RESOLUTION = 1e-2


def certificate_point(outermost: float, next_one: float, scale: float) -> float:
    """The point beyond which no eigenvalue may hide: ``theta_1 + min(gap / 2, resolution * scale)``, the
    scale being the tolerance's (``|theta_1|`` for the largest, the largest ``|theta|`` for the smallest)."""
    distance = min(abs(outermost - next_one) / 2, CERTIFIED_RESOLUTION * scale)
    return outermost + distance if outermost > next_one else outermost - distance


@dataclass(frozen=True)
class AccuracyTest:
    """Stopping rule 1 of :func:`~phasescope.curvature.lanczos.lanczos`: every wanted Ritz value is accurate.

    ``criterion="residual"``: the residuals are at most ``tol * scale``; ``"eigenvalue"``: the error
    bounds of :func:`ritz_value_error_bounds` are.
    """

    tol: float
    criterion: Literal["residual", "eigenvalue"] = "residual"

    def bounds(self, ritz_values: np.ndarray, residuals: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        """(len(wanted),) what is held to ``tol * scale``: error bounds or residuals of the wanted values."""
        if self.criterion == "eigenvalue":
            return ritz_value_error_bounds(ritz_values, residuals, wanted)
        return residuals[wanted]

    def met(self, bounds: np.ndarray, scale: np.ndarray) -> bool:
        return bool(np.all(bounds <= self.tol * scale))


class HiddenEigenvalueCertificate:
    """Stopping rule 2: from a random start, no eigenvalue beyond the outermost Ritz value is hidden, but
    with probability ``failure_probability`` (:func:`log_hidden_component_bound` against
    :func:`random_start_threshold`), checked on the current Krylov block.

    Args:
        size: the operator's dimension.
        required: whether the run must be certified (a random start, or a mixed warm one).
        warm_weight: norm of the start's deterministic part (0 for a random start).
        when_exhausted: a trusted warm start's run becomes certified once its own Krylov space is
            exhausted and a fresh random block begins.
    """

    def __init__(self, size: int, failure_probability: float, *, required: bool, warm_weight: float,
                 when_exhausted: bool) -> None:
        self.size, self.failure_probability = size, failure_probability
        self.required, self.when_exhausted = required, when_exhausted
        self.log_threshold = math.log(random_start_threshold(size, failure_probability, warm_weight))
        self.certified = False
        self.block_start = 0  # first step of the current Krylov block
        self.log_beta_product = 0.0  # log(beta_1 ... beta_m) of the current block

    @property
    def satisfied(self) -> bool:
        return self.certified or not self.required

    def check(self, ritz_values: np.ndarray, order: np.ndarray, alphas: list[float], betas: list[float], beta: float,
              invariant: bool, scale: float) -> None:
        """After a step with residual norm ``beta``: is the outermost Ritz value certified now?"""
        if not self.required or self.certified:
            return
        # Invariant: every eigenvector the block's random start touches (all, almost surely) is seen.
        separated = len(ritz_values) > 1 and ritz_values[order[0]] != ritz_values[order[1]]
        if invariant or not separated:
            self.certified = invariant
            return
        own = ritz_values if self.block_start == 0 else eigh_tridiagonal(  # the current block's own Ritz values
            np.array(alphas[self.block_start:]), np.array(betas[self.block_start:len(alphas) - 1]), eigvals_only=True)
        point = certificate_point(ritz_values[order[0]], ritz_values[order[1]], scale)
        self.certified = log_hidden_component_bound(own, self.log_beta_product + math.log(beta), point) \
            <= self.log_threshold

    def extend(self, beta: float) -> None:
        """The block goes on with residual norm ``beta``."""
        self.log_beta_product += math.log(beta)

    def new_block(self, start: int) -> None:
        """A fresh random block begins at step ``start`` (the previous one was invariant)."""
        self.block_start, self.log_beta_product = start, 0.0
        if self.when_exhausted and not self.required:  # the trusted warm start's own space is exhausted
            self.required, self.certified = True, False
            self.log_threshold = math.log(random_start_threshold(self.size, self.failure_probability, 0.0))
