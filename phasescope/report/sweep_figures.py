"""Figures of a learning-rate sweep (study A), each saved as PNG and PDF at paper size."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

REGIME_COLORS = {"flow_aligned": "#d8e8f5", "edge_of_stability": "#fde3c8", "diverged": "#e6e6e6",
                 "unresolved": "#ffffff"}
STYLE = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 7.5,
         "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.dpi": 150, "axes.grid": True, "grid.alpha": 0.3}


def _save(figure, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    if figure.get_layout_engine() is None:
        figure.tight_layout()
    for path in paths:
        figure.savefig(path, dpi=150)
    plt.close(figure)
    return paths


def _shade_regimes(axis, table: pd.DataFrame) -> None:
    """Shade each learning rate's regime (taking the first seed's) behind the data."""
    by_lr = table.sort_values("lr").drop_duplicates("lr")
    lrs = by_lr["lr"].to_numpy()
    if len(lrs) < 2:
        return
    edges = np.sqrt(lrs[1:] * lrs[:-1])
    edges = np.concatenate([[lrs[0] ** 2 / edges[0]], edges, [lrs[-1] ** 2 / edges[-1]]])
    for (lo, hi), regime in zip(zip(edges[:-1], edges[1:]), by_lr["regime"]):
        axis.axvspan(lo, hi, color=REGIME_COLORS[regime], zorder=0, lw=0)


def _per_lr(table: pd.DataFrame, metric: str, status: str = "reached_threshold") -> pd.DataFrame:
    """Mean, min and max over seeds of ``metric`` for the members with ``status``."""
    return table[table.status == status].groupby("lr")[metric].agg(["mean", "min", "max"]).reset_index()


def _plot_final(axis, table: pd.DataFrame, metric: str, color: str, label: str) -> None:
    """Members that reached epsilon as filled markers; those whose step budget ended first, hollow."""
    data = _per_lr(table, metric)
    axis.errorbar(data["lr"], data["mean"], yerr=[data["mean"] - data["min"], data["max"] - data["mean"]],
                  fmt="o-", ms=3.5, color=color, label=label)
    unfinished = _per_lr(table, metric, "max_steps")
    if not unfinished.empty:
        axis.plot(unfinished["lr"], unfinished["mean"], "o", ms=4, mfc="none", color=color,
                  label=r"step budget ended before $\epsilon$")


def _eta_axis(axis, table: pd.DataFrame, flow: pd.DataFrame) -> None:
    axis.set_xscale("log")
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide on short ranges
    axis.set_xlabel(r"learning rate $\eta$")
    for eta_c in flow["eta_c"]:
        axis.axvline(eta_c, color="k", ls=":", lw=1)
    _shade_regimes(axis, table)


def draw_sweep_figures(table: pd.DataFrame, flow: pd.DataFrame, trajectories: pd.DataFrame,
                       out_dir: Path | str) -> list[Path]:
    """All study-A figures of one sweep.

    Args:
        table: final state per member with regimes (``classify_regimes``).
        flow: gradient flow's summary per seed (``flow_summary``).
        trajectories: the sweep's sharpness rows (step, lr, seed, value).
        out_dir: where to write ``<name>.png`` and ``<name>.pdf``.

    Returns:
        The paths written.
    """
    out_dir = Path(out_dir)
    paths: list[Path] = []
    with plt.rc_context(STYLE):
        # 1. final sharpness vs eta, with 2/eta and eta_c
        figure, axis = plt.subplots(figsize=(3.5, 2.8))
        _plot_final(axis, table, "sharpness", "C0", "final sharpness (GD)")
        grid = np.geomspace(table["lr"].min(), table["lr"].max(), 200)
        axis.plot(grid, 2 / grid, "--", color="C3", lw=1.2, label=r"$2/\eta$")
        for s_gf in flow["s_gf"]:
            axis.axhline(s_gf, color="C2", ls="-.", lw=1, label=r"$s_{GF}$ (gradient flow)")
        _eta_axis(axis, table, flow)
        axis.set_yscale("log")
        axis.set_ylabel(r"sharpness $\lambda_{\max}$")
        axis.set_title(r"Final sharpness ($\eta_c$ dotted)")
        handles, labels = axis.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        axis.legend(unique.values(), unique.keys(), loc="best")
        paths += _save(figure, out_dir, "final_sharpness_vs_lr")

        # 2. final norms vs eta
        figure, axes = plt.subplots(1, 2, figsize=(7.0, 2.8))
        for axis, metric, label in [(axes[0], "l1", r"$\ell_1$"), (axes[1], "l2", r"$\ell_2$")]:
            _plot_final(axis, table, metric, "C1", f"final {label} norm (GD)")
            for value in flow[f"final_{metric}"]:
                axis.axhline(value, color="C2", ls="-.", lw=1, label="gradient flow")
            _eta_axis(axis, table, flow)
            axis.set_ylabel(f"{label} norm of all parameters")
            handles, labels = axis.get_legend_handles_labels()
            unique = dict(zip(labels, handles))
            axis.legend(unique.values(), unique.keys(), loc="best")
        paths += _save(figure, out_dir, "final_norms_vs_lr")

        # 3. test loss (and accuracy) vs eta
        figure, axis = plt.subplots(figsize=(3.5, 2.8))
        _plot_final(axis, table, "test_loss", "C4", "test loss (GD)")
        data = _per_lr(table, "test_loss")
        if len(data):  # no member may have reached epsilon within its budget
            best = data.loc[data["mean"].idxmin()]
            axis.plot([best["lr"]], [best["mean"]], "*", ms=10, color="k", label=rf"best $\eta$ = {best['lr']:.3g}")
        _eta_axis(axis, table, flow)
        axis.set_ylabel("test loss at the stopping step")
        axis.legend(loc="best")
        paths += _save(figure, out_dir, "test_loss_vs_lr")

        # 4. sharpness trajectories of a few etas against their 2/eta
        figure, axis = plt.subplots(figsize=(3.5, 3.3), layout="constrained")
        seed = table["seed"].min()
        lrs = sorted(table[(table.seed == seed) & (table.status != "diverged")]["lr"].unique())
        chosen = [lrs[i] for i in np.unique(np.linspace(0, len(lrs) - 1, min(4, len(lrs))).round().astype(int))]
        top, first_step = 0.0, None
        for color, lr in zip(["C0", "C1", "C2", "C3"], chosen):
            series = trajectories[(trajectories.lr == lr) & (trajectories.seed == seed)].sort_values("step")
            axis.plot(series["step"], series["value"], ".-", ms=4, color=color, lw=1.2, label=rf"$\eta$={lr:.3g}")
            axis.axhline(2 / lr, color=color, ls="--", lw=0.8)
            top = max(top, float(series["value"].max()))
            positive = series["step"][series["step"] > 0]
            if len(positive):
                first_step = min(first_step or positive.min(), positive.min())
        axis.set_ylim(0, 1.4 * top)  # the 2/eta of small rates would squash the trajectories
        if first_step is not None:  # fast rates stop early: a log axis past the first sample keeps them apart
            axis.set_xscale("symlog", linthresh=first_step)
            axis.set_xlim(left=0)
        axis.set_xlabel("step (linear up to the first sample, then log)")
        axis.set_ylabel(r"sharpness (dashed: $2/\eta$)")
        figure.legend(loc="outside lower center", ncol=min(len(chosen), 4), frameon=False, fontsize=7)
        paths += _save(figure, out_dir, "sharpness_trajectories")

        # 5. steps to epsilon vs eta
        figure, axis = plt.subplots(figsize=(3.5, 2.8))
        reached = table[table.status == "reached_threshold"].groupby("lr")["steps"].mean()
        axis.plot(reached.index, reached.values, "o-", ms=3.5, color="C5")
        _eta_axis(axis, table, flow)
        if len(reached):  # a log axis needs one member that reached epsilon
            axis.set_yscale("log")
            # a range within a decade or two has few major ticks: the minor ones are labelled too
            axis.yaxis.set_minor_formatter(matplotlib.ticker.LogFormatterSciNotation(minor_thresholds=(2, 1)))
        axis.set_ylabel(r"steps until loss $<\epsilon$")
        paths += _save(figure, out_dir, "steps_to_threshold_vs_lr")
    return paths


def draw_grid_figure(members: pd.DataFrame, flows: pd.DataFrame, out_dir: Path | str) -> list[Path]:
    """A grid over the paper's axes (``phasescope.train.grid.grid_table``): final sharpness and l1 norm
    against eta, one line per combination (mean over seeds, members that reached epsilon), and eta_c of
    each combination. Written as ``grid.png`` and ``grid.pdf``, 7.5 x 3 inches."""
    names = list(dict.fromkeys(members["combination"]))
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(names)))
    with plt.rc_context(STYLE):
        figure, (sharp, norm, critical) = plt.subplots(1, 3, figsize=(7.5, 3.0), layout="constrained",
                                                       gridspec_kw={"width_ratios": [1, 1, 0.6]})
        for number, (name, colour) in enumerate(zip(names, colours), start=1):
            rows = members[(members.combination == name) & (members.status == "reached_threshold")]
            means = rows.groupby("lr")[["sharpness", "l1"]].mean()
            sharp.plot(means.index, means.sharpness, "o-", ms=3, lw=1, color=colour, label=f"{number}: {name}")
            norm.plot(means.index, means.l1, "o-", ms=3, lw=1, color=colour)
            for eta_c in flows[flows.combination == name].eta_c:
                critical.plot([eta_c], [number], "o", color=colour)
        critical.set_yticks(range(1, len(names) + 1))
        critical.set_ylim(len(names) + 0.5, 0.5)
        critical.set_ylabel("combination")
        rates = np.geomspace(members.lr.min(), members.lr.max(), 100)
        sharp.plot(rates, 2 / rates, "--", color="C3", lw=1, label=r"$2/\eta$")
        for axis, title in ((sharp, "(a) final sharpness"), (norm, r"(b) final $\ell_1$ norm")):
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            axis.set_xlabel(r"learning rate $\eta$")
            axis.set_title(title, loc="left")
        critical.set_xscale("log")
        critical.set_xlabel(r"$\eta_c = 2/s_{GF}$")
        critical.set_title(r"(c) $\eta_c$ per combination", loc="left")
        figure.legend(*sharp.get_legend_handles_labels(), loc="outside lower center",
                      ncol=min(len(names) + 1, 3), frameon=False, fontsize=7)
        return _save(figure, Path(out_dir), "grid")
