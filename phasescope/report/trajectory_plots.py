"""Drawing trajectories against training tokens, with their onsets and change points marked.

Shared by the study-B figures: a token axis (log or linear; steps when tokens are unknown), a
line per metric, its onset (a large marker, with a horizontal bar for the bootstrap interval) and
its change points (small triangles), and heat maps over checkpoints with token tick labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from phasescope.analysis.phases import ChangePoint, Onset
from phasescope.progress import format_tokens

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


def column_edges(positions: np.ndarray) -> np.ndarray:
    """(T + 1,) cell edges around (T,) increasing column positions: halfway between neighbours, the
    outer cells as wide as their inner halves (clipped at 0, where training starts)."""
    positions = np.asarray(positions, dtype=np.float64)
    if len(positions) == 1:
        return np.array([positions[0] - 0.5, positions[0] + 0.5])
    middles = (positions[1:] + positions[:-1]) / 2
    first = max(positions[0] - (middles[0] - positions[0]), 0.0 if positions[0] >= 0 else -np.inf)
    return np.concatenate([[first], middles, [positions[-1] + (positions[-1] - middles[-1])]])


def heat_map(axis, matrix: np.ndarray, checkpoints: pd.DataFrame, row_labels: list[str], use_tokens: bool,
             colorbar_label: str, diverging: bool = False, vmin: float | None = None, vmax: float | None = None):
    """rows x checkpoints matrix on a linear token (or step) axis, each column drawn at its checkpoint's
    true position and as wide as the gap to its neighbours, with a colour bar; returns the mesh."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if diverging:
        finite = matrix[np.isfinite(matrix)]
        bound = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
        options = {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound}
    else:
        options = {"cmap": "viridis", "vmin": vmin, "vmax": vmax}
    x = column_edges(x_values(checkpoints, use_tokens))
    y = np.arange(len(row_labels) + 1) - 0.5
    image = axis.pcolormesh(x, y, np.ma.masked_invalid(matrix), shading="flat", **options)
    axis.set_ylim(len(row_labels) - 0.5, -0.5)  # first row at the top, as in a table
    axis.set_yticks(range(len(row_labels)))
    axis.set_yticklabels(row_labels, fontsize=8 if len(row_labels) <= 16 else 6)
    token_axis(axis, use_tokens, log=False)
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    axis.set_xlim(x[0], x[-1])
    axis.grid(False)
    axis.figure.colorbar(image, ax=axis, label=colorbar_label, fraction=0.046, pad=0.02)
    return image
