"""Study B's behaviours read from the metric store, with their onsets and change points.

A behaviour is one metric of one measure on one subset of items (translation without shared first
tokens, copying, minimal pairs ...): its trajectory is the pooled row where the measure writes one,
else the mean of its items, and its onset interval comes from resampling the items (directions or
languages). The report draws what these functions find.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from phasescope.analysis.phases import (
    ChangePoint,
    Onset,
    detect_change_points,
    detect_onset,
    item_matrix,
    select_rows,
    trajectory,
)

MIN_CHECKPOINTS = 5  # fewer checkpoints than this: a trajectory gets no onset or change points
# An accuracy or a probability has left its start only after a move of at least 5 points (not a
# drift from 0.000 to 0.004 of a behaviour that never appears)
ACCURACY_ONSET = 0.05


@dataclass(frozen=True)
class BehaviourSpec:
    """A behaviour: which rows, which columns name its items, how it is labelled."""

    key: str
    label: str
    measure: str
    metric: str
    subset: str | None
    items: tuple[str, ...]


BEHAVIOURS = [
    BehaviourSpec("wlt_no_overlap", "translation, no shared first token (WLT top-1)", "wlt", "top1_accuracy",
                  "no_overlap", ("src", "tgt")),
    BehaviourSpec("wlt_overlap", "translation, shared first token (WLT top-1)", "wlt", "top1_accuracy", "overlap",
                  ("src", "tgt")),
    BehaviourSpec("wlt_heldout", "translation of held-out concepts, no shared token", "wlt", "top1_accuracy",
                  "heldout_no_overlap", ("src", "tgt")),
    BehaviourSpec("copying", "copying: source first token top-1 (no shared token)", "wlt", "copy_top1",
                  "no_overlap", ("src", "tgt")),
    BehaviourSpec("minimal_pairs", "linguistic ability: minimal-pair accuracy", "minimal_pairs", "accuracy", None,
                  ("src",)),
]


@dataclass
class Analysed:
    """A trajectory (columns step, tokens, value in step order) with what the analysis found in it."""

    points: pd.DataFrame
    onset: Onset | None = None
    change_points: list[ChangePoint] | None = None


def behaviour_points(frame: pd.DataFrame, spec: BehaviourSpec) -> tuple[pd.DataFrame, np.ndarray | None] | None:
    """(trajectory, per-item matrix or None) of a behaviour; None if its rows are absent."""
    where = {"component": None} if spec.measure == "minimal_pairs" else {}
    if spec.subset is not None:
        where["subset"] = spec.subset
    rows = select_rows(frame, measure=spec.measure, metric=spec.metric, **where)
    if spec.measure == "minimal_pairs" and not rows.empty:
        # MultiBLiMP where it was run, else the pairs from held-out real sentences, else the built-in pairs
        preference = {"multiblimp": 0, "heldout": 1}
        rows = rows[rows.subset == min(rows.subset.dropna().unique(), key=lambda s: preference.get(s, 2))] \
            if rows.subset.notna().any() else rows
    if rows.empty:
        return None
    pooled = rows[list(spec.items)].isna().all(axis=1)
    if not (~pooled).any():
        return trajectory(rows), None
    matrix, points, _ = item_matrix(rows[~pooled], spec.items)
    values = (trajectory(rows[pooled]).set_index("step")["value"].reindex(points.step).to_numpy()
              if pooled.any() else np.nanmean(matrix, axis=0))
    return points.assign(value=values), matrix


def analyse(points: pd.DataFrame, direction: str = "up", items: np.ndarray | None = None,
            min_change: float = 0.0) -> Analysed:
    """The trajectory's onset (a move of at least ``min_change`` out of the initial band, interval over
    ``items``) and change points, when it has enough checkpoints."""
    if len(points) < MIN_CHECKPOINTS or not np.isfinite(points.value).any():
        return Analysed(points)
    tokens = points.tokens.to_numpy() if points.tokens.notna().all() else None
    values, steps = points.value.to_numpy(dtype=float), points.step.to_numpy()
    onset = detect_onset(values, steps, tokens, items=items, direction=direction, min_change=min_change)
    return Analysed(points, onset, detect_change_points(values, steps, tokens))


def analyse_behaviour(frame: pd.DataFrame, spec: BehaviourSpec, direction: str = "up") -> Analysed | None:
    """A behaviour's trajectory with its onset and change points; None if its rows are absent."""
    found = behaviour_points(frame, spec)
    if found is None:
        return None
    points, items = found
    return analyse(points, direction, items, min_change=ACCURACY_ONSET)


def item_onsets(matrix: np.ndarray, steps: np.ndarray) -> list[int | None]:
    """The onset index of each row of an (items, T) accuracy matrix on its own (a rise of at least
    :data:`ACCURACY_ONSET`); None for rows that never rise or have too few checkpoints."""
    if matrix.shape[1] < MIN_CHECKPOINTS:
        return [None] * len(matrix)
    return [detect_onset(row, steps, direction="up", min_change=ACCURACY_ONSET).index
            if np.isfinite(row).sum() >= MIN_CHECKPOINTS else None for row in matrix]
