"""A grid of learning-rate sweeps read as one table: every combination's final states with their measured
regimes, and its gradient-flow summaries, with the axis values as columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from phasescope.analysis.edge_of_stability import classify_regimes, final_state, flow_summary
from phasescope.run import MetricStore, validate_config
from phasescope.train.grid import grid_members
from phasescope.train.sweep import SweepConfig


def grid_table(path: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every combination's final states (with measured regimes) and flow summaries, stacked.

    Returns:
        (members, flows): ``members`` has one row per (combination, lr, seed) with the columns of
        ``classify_regimes`` and one column per axis; ``flows`` one row per (combination, seed)
        with s_gf, eta_c, the flow's final sharpness and l1, and the axis columns.
    """
    tables, flows = [], []
    for values, run in grid_members(path):
        config = validate_config(run.read_config_dict(), SweepConfig, source=str(run.config_path))
        store = MetricStore(run)
        rows = store.read("sweep")
        flow = flow_summary(store.read("gradient_flow"))
        table = classify_regimes(final_state(rows), flow, rows[rows.metric == "sharpness"], config.regimes)
        tables.append(table.assign(combination=run.name, **values))
        flows.append(flow.assign(combination=run.name, **values))
    return pd.concat(tables, ignore_index=True), pd.concat(flows, ignore_index=True)
