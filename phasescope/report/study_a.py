"""The report of a learning-rate sweep run: its final-state table, eta_c, and figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from phasescope.analysis.edge_of_stability import (
    REGIMES,
    best_learning_rate,
    classify_regimes,
    disagreements,
    final_state,
    flow_summary,
)
from phasescope.errors import PhasescopeError
from phasescope.report.sweep_figures import draw_sweep_figures
from phasescope.report.theory_figure import TheoryFigure
from phasescope.run import MetricStore, RunDir, validate_config


@dataclass
class SweepReport:
    """What a sweep report found: the per-member table (with regimes), flow summary, best rate, files."""

    table: pd.DataFrame
    flow: pd.DataFrame
    best: pd.Series
    paths: list[Path]
    theory: TheoryFigure | None = None  # the diagonal-network theory figure, for diagonal sweeps


def sweep_report(run: RunDir) -> SweepReport:
    """Draw every study-A figure of a sweep run into ``run/report`` and return the numbers behind them."""
    from phasescope.train.sweep import SweepConfig

    raw = run.read_config_dict()
    if raw.get("kind") != "sweep":
        raise PhasescopeError(f"{run.path} is a {raw.get('kind')!r} run; the report draws learning-rate sweeps "
                              "(runs of `phasescope sweep`)")
    config = validate_config(raw, SweepConfig, source=str(run.config_path))
    store = MetricStore(run)
    sweep_rows = store.read("sweep")
    flow_rows = store.read("gradient_flow")
    if flow_rows.empty:
        raise PhasescopeError(f"run {run.path} has no gradient-flow metrics: the report needs flow.enabled: true")
    flow = flow_summary(flow_rows)
    trajectories = sweep_rows[sweep_rows.metric == "sharpness"]
    table = classify_regimes(final_state(sweep_rows), flow, trajectories, config.regimes)
    paths = draw_sweep_figures(table, flow, trajectories, run.report_dir)
    theory = _theory_figure(run, config, table) if config.model.arch == "diagonal" else None
    if theory is not None:
        paths += theory.paths
    return SweepReport(table, flow, best_learning_rate(table), paths, theory)


def _theory_figure(run: RunDir, config, table: pd.DataFrame) -> TheoryFigure | None:
    """The diagonal-network theory figure, with the GD solution of every rate from the last checkpoint."""
    import torch

    from phasescope.data import load_supervised_data
    from phasescope.models.diagonal import diagonal_predictor
    from phasescope.report.theory_figure import draw_theory_figure
    from phasescope.run import load_checkpoint

    data = load_supervised_data(config.data, config.loss)
    if data.beta_star is None:
        return None
    saved = load_checkpoint(run.latest_checkpoint().path)
    members = saved.train_meta["members"]
    parameterization = config.model.parameterization
    v = saved.model_state.get("v")
    beta = diagonal_predictor(parameterization, saved.model_state["u"].double(), None if v is None else v.double())
    # only members that reached epsilon are (near) interpolators, where the theory applies
    solutions = {m["lr"]: beta[i].numpy() for i, m in enumerate(members)
                 if m["status"] == "reached_threshold" and m["seed"] == config.seeds[0]
                 and torch.isfinite(beta[i]).all()}
    return draw_theory_figure(data.train_inputs.double().numpy(), data.train_targets.double().numpy().ravel(),
                              data.beta_star.double().numpy(), data.noise_std, solutions,
                              run.report_dir / "diagonal_theory", parameterization=parameterization)


SWEEP_FIGURES = [  # (file stem, title) in page order; captions come from the data (sweep_captions)
    ("final_sharpness_vs_lr", "Final sharpness against the learning rate"),
    ("final_norms_vs_lr", "Final parameter norms against the learning rate"),
    ("test_loss_vs_lr", "Test loss against the learning rate"),
    ("sharpness_trajectories", "Sharpness trajectories"),
    ("steps_to_threshold_vs_lr", "Steps until the loss is below epsilon"),
    ("diagonal_theory", "Diagonal linear network: norm versus sharpness of interpolators"),
]
SHADING = ("Shading: each rate's regime as measured from its own trajectory: flow-aligned (blue), edge of "
           "stability (orange), diverged (grey), unresolved (white); eta_c = 2/s_GF dotted.")


def sweep_captions(result: SweepReport) -> dict[str, str]:
    """Each figure's caption: what is drawn, then what the sweep's numbers show."""
    table = result.table
    done = table[table.status == "reached_threshold"]
    counts = table.regime.value_counts()
    regimes = ", ".join(f"{counts.get(name, 0)} {name.replace('_', ' ')}"
                        for name in REGIMES if counts.get(name, 0) or name != "unresolved")
    by_rate = done.groupby("lr")[["sharpness", "two_over_eta", "l1", "test_loss", "steps"]].mean()
    eos = done[done.regime == "edge_of_stability"]
    eos_ratio = (eos.sharpness / eos.two_over_eta) if len(eos) else pd.Series(dtype=float)
    ratio = (f" At the edge of stability the final sharpness is {eos_ratio.min():.3g} to {eos_ratio.max():.3g} x 2/eta."
             if len(eos_ratio) else "")
    captions = {
        "final_sharpness_vs_lr": (f"Sharpness where GD stopped (loss below epsilon), beside 2/eta and gradient flow's "
                                  f"s_GF. {SHADING} Rates: {regimes}.{ratio}"),
        "final_norms_vs_lr": (f"l1 and l2 norms of all parameters where GD stopped, beside gradient flow's. {SHADING}"
                              + (f" l1 goes from {by_rate.l1.iloc[0]:.4g} at the smallest rate that reached epsilon "
                                 f"to {by_rate.l1.iloc[-1]:.4g} at the largest." if len(by_rate) else "")),
        "test_loss_vs_lr": "The star marks the rate with the lowest test loss. " + _test_loss_shape(by_rate),
        "sharpness_trajectories": ("Sharpness along training for a few rates (a log step axis past the first "
                                   "sample); dashed: each rate's 2/eta."),
        "steps_to_threshold_vs_lr": f"{SHADING}" + (f" From {by_rate.steps.iloc[0]:.0f} steps at eta = "
                                                    f"{by_rate.index[0]:.3g} to {by_rate.steps.iloc[-1]:.0f} at eta = "
                                                    f"{by_rate.index[-1]:.3g}." if len(by_rate) else ""),
    }
    if result.theory is not None:
        captions["diagonal_theory"] = ("(a) l1 norm and sharpness of GD's solution at every rate that reached "
                                       "epsilon, the min-l1 and the min-sharpness interpolators; (b) "
                                       + result.theory.caption())
    return captions


def _test_loss_shape(by_rate: pd.DataFrame) -> str:
    """Where the lowest test loss sits among the rates that reached epsilon: an end, or inside."""
    if len(by_rate) < 3:
        return ""
    losses = by_rate.test_loss
    best = losses.idxmin()
    where = ("the smallest rate" if best == losses.index[0] else "the largest rate" if best == losses.index[-1]
             else "neither end of the grid")
    return (f"Among the {len(losses)} rates that reached epsilon the lowest test loss, {losses.min():.4g} at eta = "
            f"{best:.3g}, is at {where}; {losses.iloc[0]:.4g} at the smallest, {losses.iloc[-1]:.4g} at the largest.")


def sweep_section(run: RunDir, result: SweepReport | None = None, title: str | None = None):
    """The study-A part of the HTML report for one sweep: findings, the figures (PNG files written by
    :func:`sweep_report`, embedded) and the table of final states with regimes.

    Returns:
        (the :class:`~phasescope.report.html.Section`, the :class:`SweepReport`).
    """
    from phasescope.report.html import FigureBlock, Section

    result = result or sweep_report(run)
    section = Section(title or f"Study A: learning-rate sweep {run.name}",
                      intro=("Full-batch gradient descent from one initialization at every learning rate of the "
                             "grid, until the training loss is below epsilon, and gradient flow from the same "
                             "initialization (s_GF, eta_c = 2/s_GF)."))
    section.findings = sweep_findings(result)
    by_stem = {path.stem: path for path in result.paths if path.suffix == ".png"}
    captions = sweep_captions(result)
    for stem, figure_title in SWEEP_FIGURES:
        if stem in by_stem:
            section.blocks.append(FigureBlock(figure_title, by_stem[stem].read_bytes(), captions[stem]))
    columns = {"lr": "eta", "seed": "seed", "regime": "regime (measured)", "predicted_regime": "eta >= eta_c predicts",
               "steps": "steps", "sharpness": "sharpness", "two_over_eta": "2/eta", "flow_gap": "gap to flow",
               "band_high": "max sharpness x eta/2 (last steps)", "l1": "l1", "l2": "l2", "test_loss": "test loss"}
    section.table("Final state of every rate", result.table[list(columns)].rename(columns=columns))
    if result.theory is not None and result.theory.table is not None:
        section.table("Interpolators and GD's solutions: l1 norm, sharpness and generalization error "
                      "(population loss of the data model, ||beta - beta*||^2 + sigma^2)",
                      result.theory.table.rename(columns={"lr": "eta", "l1_norm": "l1 norm",
                                                          "generalization_error": "generalization error"}))
    return section, result


def _refinement(change: float) -> str:
    """What refining the flow's tolerances tenfold did to s_GF, flagged beyond 1e-3 relative."""
    if change != change:
        return ""
    if change > 1e-3:
        return f" (NOT converged: a tenth of the integrator's tolerances raises s_GF by {100 * change:.2g}%)"
    return f" (a tenth of the integrator's tolerances changes it by {change:+.1e}, relative)"


def sweep_findings(result: SweepReport) -> list[str]:
    """eta_c per seed, the regimes' ranges and the best rate, one line each."""
    lines = [f"seed {int(flow.seed)}: gradient flow s_GF = {flow.s_gf:.4g}, eta_c = 2/s_GF = {flow.eta_c:.4g}"
             + _refinement(getattr(flow, "s_gf_refinement_change", float("nan")))
             for flow in result.flow.itertuples(index=False)]
    for regime, rows in result.table.groupby("regime", sort=False):
        lines.append(f"measured {regime.replace('_', ' ')}: {len(rows)} rate(s), eta {rows.lr.min():.4g} to "
                     f"{rows.lr.max():.4g}")
    disagree = disagreements(result.table)
    lines.append(f"the measured regime agrees with eta >= eta_c at {len(result.table) - len(disagree)} of "
                 f"{len(result.table)} members" + (": disagreements follow" if disagree else ""))
    lines += disagree
    lines.append(f"best eta for test loss: {result.best['lr']:.4g} (test loss {result.best['test_loss']:.4g})")
    if result.theory is not None:
        lines.append("diagonal-network theory: " + result.theory.caption())
    return lines
