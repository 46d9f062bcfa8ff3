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
