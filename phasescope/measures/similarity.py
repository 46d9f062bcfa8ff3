"""Surface similarity: how much of word-level translation success is explained by how alike the
source and target words look.

The reference ("Copy First, Translate Later", arXiv 2604.17633) finds that early translation is
dominated by copying and surface similarity. Per checkpoint, each WLT item's success (its
probability mass on valid targets, or top-1) is regressed linearly on five similarity features of
its word pair, and the R^2 is split over the features by the Shapley decomposition ("dominance
analysis": Lindeman, Merenda & Gold 1980; Grömping 2007): a feature's share is the average, over
every order of adding the features, of the R^2 gained when it is added. The shares sum to the full
R^2; they are computed exactly from the R^2 of all 2^k feature subsets.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from phasescope.errors import PhasescopeError

FEATURES = ("identical", "shared_first_token", "token_jaccard", "edit_distance", "same_script")


def r_squared(features: np.ndarray, target: np.ndarray) -> float:
    """R^2 of the least-squares fit of ``target`` (n,) on ``features`` (n, j) plus an intercept.

    Features without variance add nothing; a constant target gives 0.
    """
    target = np.asarray(target, dtype=np.float64)
    centered_target = target - target.mean()
    total = float(centered_target @ centered_target)
    if features.shape[1] == 0 or total == 0.0:
        return 0.0
    centered = features - features.mean(axis=0)
    coefficients, *_ = np.linalg.lstsq(centered, centered_target, rcond=None)
    residual = centered_target - centered @ coefficients
    return max(0.0, 1.0 - float(residual @ residual) / total)


def shapley_r2(features: np.ndarray, target: np.ndarray, names: Sequence[str] | None = None
               ) -> tuple[float, dict[str, float]]:
    """The full R^2 and its Shapley decomposition over the features.

    ``share_j = sum over S not containing j of |S|! (k - |S| - 1)! / k! * (R^2(S + j) - R^2(S))``,
    exact over all 2^k subsets (k up to ~15 is practical).

    Args:
        features: (n, k) one column per feature.
        target: (n,) the explained variable.
        names: the k feature names (default ``x0..``).

    Returns:
        (R^2 of all features, {name: share}); the shares sum to the R^2.
    """
    features = np.asarray(features, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if features.ndim != 2 or target.ndim != 1 or features.shape[0] != target.shape[0]:
        raise PhasescopeError(f"expected features (n, k) and a target (n,), got shapes {features.shape} and "
                              f"{target.shape}")
    n, k = features.shape
    names = list(names) if names is not None else [f"x{j}" for j in range(k)]
    if len(names) != k:
        raise PhasescopeError(f"{k} features but {len(names)} names")
    if k > 20:
        raise PhasescopeError(f"exact Shapley shares over {k} features need 2^{k} regressions; at most 20")
    if n < 2:
        raise PhasescopeError(f"at least 2 items are needed for an R^2, got {n}")
    r2 = {}
    for size in range(k + 1):
        for subset in itertools.combinations(range(k), size):
            r2[subset] = r_squared(features[:, list(subset)], target)
    shares = dict.fromkeys(names, 0.0)
    for subset, value in r2.items():
        for j in range(k):
            if j in subset:
                continue
            weight = math.factorial(len(subset)) * math.factorial(k - len(subset) - 1) / math.factorial(k)
            shares[names[j]] += weight * (r2[tuple(sorted((*subset, j)))] - value)
    return r2[tuple(range(k))], shares


def normalized_edit_distance(first: str, second: str) -> float:
    """Levenshtein distance over characters divided by the longer length (0 for identical, 1 for disjoint)."""
    if not first and not second:
        return 0.0
    previous = list(range(len(second) + 1))
    for i, a in enumerate(first, 1):
        current = [i]
        for j, b in enumerate(second, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1] / max(len(first), len(second))


def token_jaccard(first: Sequence[int], second: Sequence[int]) -> float:
    """|A & B| / |A | B| of the two token-id sets (1 for identical tokenizations)."""
    a, b = set(first), set(second)
    return len(a & b) / len(a | b) if a | b else 1.0
