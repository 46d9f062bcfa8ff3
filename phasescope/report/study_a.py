"""The report of a learning-rate sweep run: its final-state table, eta_c, and figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from phasescope.analysis.edge_of_stability import best_learning_rate, classify_regimes, final_state, flow_summary
from phasescope.errors import PhasescopeError
from phasescope.report.sweep_figures import draw_sweep_figures
from phasescope.run import MetricStore, RunDir, validate_config


@dataclass
class SweepReport:
    """What a sweep report found: the per-member table (with regimes), flow summary, best rate, files."""

    table: pd.DataFrame
    flow: pd.DataFrame
    best: pd.Series
    paths: list[Path]


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
    table = classify_regimes(final_state(sweep_rows), flow)
    trajectories = sweep_rows[sweep_rows.metric == "sharpness"]
    paths = draw_sweep_figures(table, flow, trajectories, run.report_dir)
    if config.model.arch == "diagonal":
        paths += _theory_figure(run, config, table)
    return SweepReport(table, flow, best_learning_rate(table), paths)


def _theory_figure(run: RunDir, config, table: pd.DataFrame) -> list[Path]:
    """The diagonal-network theory figure, with the GD solution of every rate from the last checkpoint."""
    import torch

    from phasescope.data import load_supervised_data
    from phasescope.report.theory_figure import draw_theory_figure
    from phasescope.run import load_checkpoint

    data = load_supervised_data(config.data, config.loss)
    if data.beta_star is None:
        return []
    saved = load_checkpoint(run.latest_checkpoint().path)
    members = saved.train_meta["members"]
    u = saved.model_state["u"].double()
    v = saved.model_state.get("v")
    parameterization = config.model.parameterization
    beta = {"ww": lambda: u * u, "uu-vv": lambda: u * u - v.double() ** 2, "uv": lambda: u * v.double()}[
        parameterization]()
    # only members that reached epsilon are (near) interpolators, where the theory applies
    solutions = {m["lr"]: beta[i].numpy() for i, m in enumerate(members)
                 if m["status"] == "reached_threshold" and m["seed"] == config.seeds[0]
                 and torch.isfinite(beta[i]).all()}
    return draw_theory_figure(data.train_inputs.double().numpy(), data.train_targets.double().numpy().ravel(),
                              data.beta_star.double().numpy(), data.noise_std, solutions,
                              run.report_dir / "diagonal_theory", parameterization=parameterization)


SWEEP_FIGURES = [  # (file stem, title, caption) in page order
    ("final_sharpness_vs_lr", "Final sharpness against the learning rate",
     "Sharpness where GD stopped (loss below epsilon), beside 2/eta and gradient flow's s_GF; eta_c = 2/s_GF "
     "dotted. Shading: flow-aligned (blue), edge of stability (orange), diverged (grey)."),
    ("final_norms_vs_lr", "Final parameter norms against the learning rate",
     "l1 and l2 norms of all parameters where GD stopped, beside gradient flow's; regimes shaded as above."),
    ("test_loss_vs_lr", "Test loss against the learning rate", "The star marks the best rate; regimes shaded."),
    ("sharpness_trajectories", "Sharpness trajectories", "Sharpness along training for a few rates; dashed: 2/eta."),
    ("steps_to_threshold_vs_lr", "Steps until the loss is below epsilon", "Regimes shaded as above."),
    ("diagonal_theory", "Diagonal linear network: norm versus sharpness of interpolators",
     "(a) l1 norm and sharpness of the GD solution at every rate, the min-l1 interpolator and the min-sharpness "
     "interpolator; (b) their generalization error: neither end is best."),
]


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
    for stem, figure_title, caption in SWEEP_FIGURES:
        if stem in by_stem:
            section.blocks.append(FigureBlock(figure_title, by_stem[stem].read_bytes(), caption))
    columns = {"lr": "eta", "seed": "seed", "regime": "regime", "steps": "steps", "sharpness": "sharpness",
               "two_over_eta": "2/eta", "l1": "l1", "l2": "l2", "test_loss": "test loss"}
    section.table("Final state of every rate", result.table[list(columns)].rename(columns=columns))
    return section, result


def sweep_findings(result: SweepReport) -> list[str]:
    """eta_c per seed, the regimes' ranges and the best rate, one line each."""
    lines = [f"seed {int(flow.seed)}: gradient flow s_GF = {flow.s_gf:.4g}, eta_c = 2/s_GF = {flow.eta_c:.4g}"
             for flow in result.flow.itertuples(index=False)]
    for regime, rows in result.table.groupby("regime", sort=False):
        lines.append(f"{regime.replace('_', ' ')}: {len(rows)} rate(s), eta {rows.lr.min():.4g} to {rows.lr.max():.4g}")
    lines.append(f"best eta for test loss: {result.best['lr']:.4g} (test loss {result.best['test_loss']:.4g})")
    return lines
