"""Drawing trajectories against training tokens, with their onsets and change points marked.

Shared by the study-B figures: a token axis (log or linear; steps when tokens are unknown), a
line per metric, its onset (a large marker, with a horizontal bar for the bootstrap interval) and
its change points (small triangles), and heat maps over checkpoints with token tick labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from phasescope.analysis.phases import ChangePoint, Onset  # noqa: E402

STYLE = {"font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 7.5,
         "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.grid": True, "grid.alpha": 0.3}


@dataclass
class Trajectory:
    """One line of a figure: checkpoints (step, tokens), values, and what the analysis found."""

    label: str
    points: pd.DataFrame  # columns step, tokens, value; step order
    onset: Onset | None = None
    change_points: list[ChangePoint] | None = None
    color: str | None = None
    style: str = "-"


def format_tokens(tokens: float | None) -> str:
    """1234567 -> '1.23M'; None -> '?'."""
    if tokens is None or not np.isfinite(tokens):
        return "?"
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(tokens) >= scale:
            return f"{tokens / scale:.3g}{unit}"
    return f"{tokens:.0f}"


def has_tokens(points: pd.DataFrame) -> bool:
    return "tokens" in points and points["tokens"].notna().all()


def x_values(points: pd.DataFrame, use_tokens: bool) -> np.ndarray:
    return points["tokens" if use_tokens else "step"].to_numpy(dtype=np.float64)


def token_axis(axis, use_tokens: bool, log: bool) -> None:
    """Label and scale the x axis: training tokens (or steps), log or linear."""
    name = "training tokens" if use_tokens else "optimizer step"
    axis.set_xlabel(f"{name} ({'log' if log else 'linear'} scale)")
    if log:
        axis.set_xscale("log")
    if use_tokens:
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: format_tokens(v)))


def plot_trajectories(axis, trajectories: list[Trajectory], use_tokens: bool, log: bool) -> None:
    """Lines with onsets (circle + interval bar) and change points (triangles), on one axis."""
    for number, trajectory in enumerate(trajectories):
        color = trajectory.color or f"C{number}"
        points = trajectory.points
        x = x_values(points, use_tokens)
        keep = x > 0 if log else np.ones(len(x), dtype=bool)  # the log axis leaves out the initialization
        y = points["value"].to_numpy(dtype=np.float64)
        axis.plot(x[keep], y[keep], trajectory.style, color=color, lw=1.4, label=trajectory.label)
        onset = trajectory.onset
        if onset is not None and onset.index is not None and keep[onset.index]:
            axis.plot([x[onset.index]], [y[onset.index]], "o", ms=7, mfc="white", mec=color, mew=1.8, zorder=5)
            interval = onset.interval_tokens if use_tokens else onset.interval_steps
            if interval is not None and (not log or interval[0] > 0):
                axis.plot(interval, [y[onset.index]] * 2, "-", color=color, lw=3, alpha=0.35, zorder=4,
                          solid_capstyle="butt")
        for point in trajectory.change_points or []:
            if keep[point.index]:
                axis.plot([x[point.index]], [y[point.index]], "v", ms=6, color=color, mec="k", mew=0.5, zorder=5)
    token_axis(axis, use_tokens, log)


def legend_with_markers(axis, loc: str = "best", figure=None, lines: bool = True) -> None:
    """The lines' legend plus the meaning of the onset and change-point markers.

    With ``figure`` (a constrained-layout figure), the legend goes below the axes, off the data.
    """
    handles, labels = axis.get_legend_handles_labels() if lines else ([], [])
    handles += [plt.Line2D([], [], marker="o", ls="", mfc="white", mec="0.3", mew=1.5, ms=6),
                plt.Line2D([], [], color="0.3", lw=3, alpha=0.35),
                plt.Line2D([], [], marker="v", ls="", color="0.5", mec="k", mew=0.5, ms=6)]
    labels += ["onset", "onset 90% interval", "change point"]
    if figure is not None:
        figure.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), frameon=False)
    else:
        axis.legend(handles, labels, loc=loc)


def checkpoint_ticks(axis, checkpoints: pd.DataFrame, use_tokens: bool, count: int = 7) -> None:
    """Tick labels of a heat map whose columns are checkpoints (index order): their tokens or steps."""
    positions = np.unique(np.linspace(0, len(checkpoints) - 1, min(count, len(checkpoints))).round().astype(int))
    values = checkpoints["tokens" if use_tokens else "step"].to_numpy()
    axis.set_xticks(positions)
    axis.set_xticklabels([format_tokens(values[p]) if use_tokens else str(values[p]) for p in positions],
                         rotation=0)
    axis.set_xlabel("checkpoint (training tokens)" if use_tokens else "checkpoint (optimizer step)")
    axis.grid(False)


def heat_map(axis, matrix: np.ndarray, checkpoints: pd.DataFrame, row_labels: list[str], use_tokens: bool,
             colorbar_label: str, diverging: bool = False, vmin: float | None = None, vmax: float | None = None):
    """rows x checkpoints matrix as an image with labelled axes and a colour bar; returns the image."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if diverging:
        finite = matrix[np.isfinite(matrix)]
        bound = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
        image = axis.imshow(matrix, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
    else:
        image = axis.imshow(matrix, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
    axis.set_yticks(range(len(row_labels)))
    axis.set_yticklabels(row_labels, fontsize=7 if len(row_labels) <= 30 else 5)
    checkpoint_ticks(axis, checkpoints, use_tokens)
    axis.figure.colorbar(image, ax=axis, label=colorbar_label, fraction=0.046, pad=0.02)
    return image
