"""Across learning rates: the final state of every sweep member, eta_c and the regime of each rate.

Regimes of "Conflicting Biases at the Edge of Stability" (arXiv 2505.21423): below
eta_c = 2 / s_GF training is *flow-aligned* (final sharpness and norm close to gradient flow's);
above it, training runs at the *edge of stability* (final sharpness near 2/eta); a run whose loss
blew up is *diverged*.
"""

from __future__ import annotations

import pandas as pd

from phasescope.errors import PhasescopeError
from phasescope.train.status import status_from_rows

FINAL_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "l1", "l2", "sharpness")


def final_state(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (lr, seed): status, steps taken and every metric at the member's stopping step.

    Args:
        frame: the ``sweep`` measure's rows of a run (``MetricStore.read("sweep")``).

    Returns:
        Columns lr, seed, steps, status, and FINAL_METRICS (NaN where not recorded, e.g. the
        sharpness of a diverged member), sorted by seed then lr.
    """
    if frame.empty:
        raise PhasescopeError("the run has no sweep metrics yet (was `phasescope sweep` run to the end?)")
    stops = frame[frame.metric == "steps"][["lr", "seed", "value"]].rename(columns={"value": "steps"})
    status = frame[frame.metric.isin(["diverged", "reached_threshold"])].pivot_table(
        index=["lr", "seed"], columns="metric", values="value").reset_index()
    table = stops.merge(status, on=["lr", "seed"])
    table["status"] = [status_from_rows(d, r) for d, r in zip(table["diverged"], table["reached_threshold"])]
    table["steps"] = table["steps"].astype(int)
    at_stop = frame.merge(table[["lr", "seed", "steps"]], on=["lr", "seed"])
    at_stop = at_stop[(at_stop.step == at_stop.steps) & at_stop.metric.isin(FINAL_METRICS)]
    values = at_stop.pivot_table(index=["lr", "seed"], columns="metric", values="value", aggfunc="last")
    table = table.merge(values.reset_index(), on=["lr", "seed"], how="left")
    for metric in FINAL_METRICS:
        if metric not in table:
            table[metric] = float("nan")
    return table[["lr", "seed", "steps", "status", *FINAL_METRICS]].sort_values(["seed", "lr"]).reset_index(drop=True)


def flow_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Gradient flow's summary per seed: s_gf, eta_c, final sharpness, l1, l2, time and loss.

    Args:
        frame: the ``gradient_flow`` measure's rows.
    """
    summary = frame[frame.subset == "summary"]
    if summary.empty:
        raise PhasescopeError("the run has no gradient-flow summary (flow.enabled was false?)")
    return summary.pivot_table(index="seed", columns="metric", values="value").reset_index()


def classify_regimes(final: pd.DataFrame, flow: pd.DataFrame) -> pd.DataFrame:
    """Add ``eta_c`` (of the member's seed), ``two_over_eta`` and ``regime`` to a final-state table."""
    table = final.merge(flow[["seed", "eta_c"]], on="seed", how="left")
    table["two_over_eta"] = 2.0 / table["lr"]
    table["regime"] = ["diverged" if status == "diverged" else
                       "edge_of_stability" if lr >= eta_c else "flow_aligned"
                       for status, lr, eta_c in zip(table["status"], table["lr"], table["eta_c"])]
    return table


def best_learning_rate(table: pd.DataFrame, metric: str = "test_loss") -> pd.Series:
    """The row (mean over seeds) with the lowest ``metric`` among members that did not diverge."""
    ok = table[table.status != "diverged"]
    if ok.empty:
        raise PhasescopeError("every member diverged: no best learning rate")
    means = ok.groupby("lr")[metric].mean()
    return pd.Series({"lr": float(means.idxmin()), metric: float(means.min())})
