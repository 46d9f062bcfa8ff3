"""Across learning rates: the final state of every sweep member, eta_c and the regime of each rate.

Regimes of "Conflicting Biases at the Edge of Stability" (arXiv 2505.21423): below
eta_c = 2 / s_GF training is *flow-aligned* (final sharpness and norm close to gradient flow's);
above it, training runs at the *edge of stability* (final sharpness near 2/eta); a run whose loss
blew up is *diverged*. The paper predicts the regime from eta and eta_c; phasescope measures it from
each member's own trajectory (``classify_regimes``) and keeps the prediction beside it, so that a
rate where the two disagree is shown, not hidden.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from phasescope.errors import PhasescopeError
from phasescope.train.sweep import RegimeCriteria

REGIMES = ("flow_aligned", "edge_of_stability", "diverged", "unresolved")


FINAL_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "l1", "l2", "sharpness")


def final_state(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (lr, seed): status, steps taken and every metric at the member's stopping step.

    Args:
        frame: the ``sweep`` measure's rows of a run (``MetricStore.read("sweep")``).

    Returns:
        Columns lr, seed, steps, status, and FINAL_METRICS (NaN where not recorded, e.g. the
        sharpness of a diverged member), sorted by seed then lr.
    """
    from phasescope.train.status import status_from_rows  # phasescope.train imports this module's criteria

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


def predicted_regime(status: str, lr: float, eta_c: float) -> str:
    """The regime the theory assigns to a rate: edge of stability from eta_c = 2/s_GF up."""
    return "diverged" if status == "diverged" else "edge_of_stability" if lr >= eta_c else "flow_aligned"


def classify_regimes(final: pd.DataFrame, flow: pd.DataFrame, trajectories: pd.DataFrame | None = None,
                     criteria: RegimeCriteria = RegimeCriteria()) -> pd.DataFrame:
    """Each member's regime, measured from its own trajectory, beside the one ``eta >= eta_c`` predicts.

    - ``diverged``: the loss blew up (the member's status);
    - ``flow_aligned``: it reached epsilon with final sharpness and l1 norm both within
      ``criteria.flow_rtol`` of gradient flow's (at the flow's own stop, where its loss fell below
      epsilon); checked first, so a rate within ``flow_rtol`` of eta_c, where both tests can pass,
      counts as flow-aligned;
    - ``edge_of_stability``: every sharpness sample in the last ``criteria.window`` of its steps
      lies within a factor ``criteria.band`` of 2/eta;
    - ``unresolved``: none of these (including a member with no sharpness sample in its window).

    Args:
        final: ``final_state`` rows; flow: ``flow_summary`` rows (``eta_c``, ``final_sharpness``,
            ``final_l1`` per seed); trajectories: the sweep's ``sharpness`` rows (step, lr, seed, value);
            None uses the final sharpness alone.

    Returns:
        ``final`` with ``eta_c``, ``two_over_eta``, ``regime`` (measured), ``predicted_regime``,
        ``agrees`` (the two match), ``flow_gap`` (largest relative gap of sharpness and l1 to the
        flow's) and ``band_low``, ``band_high`` (smallest and largest sharpness x eta/2 in the window).
    """
    table = final.merge(flow[["seed", "eta_c", "final_sharpness", "final_l1"]].rename(
        columns={"final_sharpness": "flow_sharpness", "final_l1": "flow_l1"}), on="seed", how="left")
    table["two_over_eta"] = 2.0 / table["lr"]
    table["flow_gap"] = np.maximum((table.sharpness / table.flow_sharpness - 1).abs(),
                                   (table.l1 / table.flow_l1 - 1).abs())
    if trajectories is None or trajectories.empty:
        trajectories = table[["lr", "seed", "steps", "sharpness"]].rename(columns={"steps": "step",
                                                                                   "sharpness": "value"})
    samples = trajectories[["lr", "seed", "step", "value"]].merge(table[["lr", "seed", "steps"]], on=["lr", "seed"])
    samples = samples[(samples.step >= (1 - criteria.window) * samples.steps) & (samples.step <= samples.steps)]
    ratio = samples.assign(ratio=samples.value * samples.lr / 2).groupby(["lr", "seed"]).ratio.agg(["min", "max"])
    table = table.merge(ratio.rename(columns={"min": "band_low", "max": "band_high"}).reset_index(),
                        on=["lr", "seed"], how="left")
    in_band = (table.band_low >= 1 / criteria.band) & (table.band_high <= criteria.band)
    aligned = (table.status == "reached_threshold") & (table.flow_gap <= criteria.flow_rtol)
    table["regime"] = np.select([table.status == "diverged", aligned, in_band],
                                ["diverged", "flow_aligned", "edge_of_stability"], "unresolved")
    table["predicted_regime"] = [predicted_regime(status, lr, eta_c)
                                 for status, lr, eta_c in zip(table.status, table.lr, table.eta_c)]
    table["agrees"] = table.regime == table.predicted_regime
    return table.drop(columns=["flow_sharpness", "flow_l1"])


def disagreements(table: pd.DataFrame) -> list[str]:
    """One line per member whose measured regime differs from ``eta >= eta_c``'s, with the numbers why."""
    lines = []
    for row in table[~table.agrees].itertuples(index=False):
        lines.append(f"eta = {row.lr:.4g} (seed {int(row.seed)}): measured {row.regime.replace('_', ' ')}, "
                     f"eta_c predicts {row.predicted_regime.replace('_', ' ')} (final sharpness {row.sharpness:.4g}, "
                     f"2/eta {row.two_over_eta:.4g}, {100 * row.flow_gap:.1f}% from gradient flow; sharpness x eta/2 "
                     f"{row.band_low:.3g} to {row.band_high:.3g} over its last steps)")
    return lines


def best_learning_rate(table: pd.DataFrame, metric: str = "test_loss") -> pd.Series:
    """The row (mean over seeds) with the lowest ``metric`` among members that did not diverge."""
    ok = table[table.status != "diverged"]
    if ok.empty:
        raise PhasescopeError("every member diverged: no best learning rate")
    means = ok.groupby("lr")[metric].mean()
    return pd.Series({"lr": float(means.idxmin()), metric: float(means.min())})
