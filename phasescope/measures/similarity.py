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
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from phasescope.data.wlt import SURFACE_FEATURES
from phasescope.errors import PhasescopeError
from phasescope.measures.ablations import checkpoint_wlt_scores
from phasescope.measures.registry import Measure, MeasureContext, register_measure
from phasescope.measures.wlt_inputs import WLTDataConfig, item_subsets


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
    centered = centered[:, np.any(centered != 0, axis=0)]  # a constant feature adds exactly nothing
    if centered.shape[1] == 0:
        return 0.0
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


# --- the measure -----------------------------------------------------------------------------------
SUCCESS_COLUMNS = {"p_target": "p_target", "top1": "top1_correct"}


def surface_similarity_shares(scores: pd.DataFrame, success: str = "p_target",
                              features: Sequence[str] = SURFACE_FEATURES) -> tuple[float, dict[str, float]]:
    """Shapley shares of R^2 of per-item WLT success on the similarity features of its word pair.

    Args:
        scores: :func:`~phasescope.measures.translation.wlt_scores` (features: ``identical``,
            ``shared_first_token``, ``token_jaccard``, ``edit_distance`` (normalized), ``same_script``).
        success: ``"p_target"`` (mass on valid target first tokens) or ``"top1"``.
    """
    if success not in SUCCESS_COLUMNS:
        raise PhasescopeError(f"success must be one of {', '.join(SUCCESS_COLUMNS)}, got {success!r}")
    missing = [name for name in [*features, SUCCESS_COLUMNS[success]] if name not in scores.columns]
    if missing:
        raise PhasescopeError(f"the WLT scores lack column(s) {', '.join(missing)}")
    matrix = scores[list(features)].astype(float).to_numpy()
    return shapley_r2(matrix, scores[SUCCESS_COLUMNS[success]].astype(float).to_numpy(), list(features))


class SurfaceSimilarityConfig(WLTDataConfig):
    """Config of ``surface_similarity``."""

    success: Literal["p_target", "top1"] = "p_target"  # the explained per-item WLT success
    # items regressed: all (shared first tokens is itself a feature), or one subset
    subset: Literal["all", "overlap", "no_overlap", "heldout_overlap", "heldout_no_overlap"] = "all"
    batch_size: int = Field(64, ge=1)  # prompts per forward pass


def compute_surface_similarity(context: MeasureContext, config: SurfaceSimilarityConfig) -> list[dict]:
    """``r2_total`` and ``r2_share`` per feature (``component``), ``subset`` = the items regressed."""
    scores = checkpoint_wlt_scores(context, config, config.batch_size)
    mask = item_subsets(scores).get(config.subset)
    if mask is None or mask.sum() < 2:
        raise PhasescopeError(f"the WLT set has fewer than 2 items in subset {config.subset!r}")
    total, shares = surface_similarity_shares(scores[mask], config.success)
    return [{"metric": "r2_total", "value": total, "subset": config.subset},
            *({"metric": "r2_share", "value": value, "component": feature, "subset": config.subset}
              for feature, value in shares.items())]


SURFACE_SIMILARITY_MEASURE = register_measure(Measure(
    name="surface_similarity", config_cls=SurfaceSimilarityConfig, compute=compute_surface_similarity,
    description="share of WLT success variance explained by each surface-similarity feature (Shapley R^2)",
))
