"""Mechanism trajectories of study B read from the metric store: the middle-layer swap benefit and the
middle blocks' share of path attribution, set against behaviours by the report's lead/lag."""

from __future__ import annotations

import pandas as pd

from phasescope.analysis.phases import select_rows, trajectory
from phasescope.measures.ablations import LAYER_RANGE


def _window(component: str) -> tuple[int, int] | None:
    """(first, last) block of a swapped window ``layers.I-J`` (or ``layers.I``); None for other groups."""
    match = LAYER_RANGE.match(component)
    if match is None or match.group(3) is not None:
        return None
    first = int(match.group(1))
    return first, int(match.group(2)) if match.group(2) is not None else first


def middle_swap_benefit(frame: pd.DataFrame) -> pd.DataFrame | None:
    """The layer-swap benefit (no shared token) of the window nearest the middle of the model."""
    rows = select_rows(frame, measure="layer_swap", metric="benefit", subset="no_overlap")
    windows = {name: _window(name) for name in rows.component.dropna().unique()}
    windows = {name: bounds for name, bounds in windows.items() if bounds is not None}
    if not windows:
        return None
    depth = max(last for _, last in windows.values()) + 1
    middle = min(windows, key=lambda name: (abs(sum(windows[name]) / 2 - (depth - 1) / 2), windows[name]))
    return trajectory(rows[rows.component == middle]).assign(component=middle)


def middle_attribution_share(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Per checkpoint: the middle third of the blocks' share of the absolute path attribution."""
    rows = select_rows(frame, measure="path_attribution", metric="attribution", subset="no_overlap")
    if rows.empty or rows.layer.isna().all():
        return None
    depth = int(rows.layer.max()) + 1
    middle = rows.layer.between(depth / 3, 2 * depth / 3, inclusive="left")
    total = rows.assign(value=rows.value.abs()).groupby("step").agg(tokens=("tokens", "first"), total=("value", "sum"))
    inside = rows[middle].assign(value=rows[middle].value.abs()).groupby("step")["value"].sum()
    share = (inside.reindex(total.index).fillna(0) / total["total"]).rename("value")
    return total[["tokens"]].join(share).reset_index()
