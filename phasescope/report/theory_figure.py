"""The diagonal-network theory figure of study A: norm versus sharpness of interpolators.

Panel (a) places interpolators by l1 norm and sharpness, GD solutions coloured by learning rate,
with the min-l1, the min-sharpness and the generalization-optimal interpolators marked; panel (b)
shows their generalization error against the learning rate (arXiv 2505.21423, section on diagonal
linear networks): the theorem that neither the min-l1 nor the min-sharpness interpolator minimizes
the generalization error, shown by the one that does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.colors
import matplotlib.legend_handler
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from phasescope.analysis.diagonal_theory import generalization_error, interpolator_sharpness, interpolators
from phasescope.errors import PhasescopeError

STYLE = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3}
MARKERS = {"min_l1": ("*", "#d62728", r"min-$\ell_1$ interpolator"),
           "min_sharpness": ("D", "#1f77b4", "min-sharpness interpolator"),
           "generalization_optimal": ("P", "#2ca02c", "generalization-optimal interpolator")}
NAMES = {"min_l1": "the min-l1 interpolator", "min_sharpness": "the min-sharpness interpolator",
         "generalization_optimal": "the generalization-optimal interpolator"}


@dataclass
class TheoryFigure:
    """The files drawn, the generalization errors shown in panel (b), and the table behind both panels."""

    paths: list[Path]
    interpolator_errors: dict[str, float]  # min_l1, min_sharpness, generalization_optimal
    gd_errors: dict[float, float] = field(default_factory=dict)  # learning rate -> error of GD's solution
    table: pd.DataFrame | None = None  # solution, lr, l1_norm, sharpness, generalization_error

    def caption(self) -> str:
        """What panel (b) shows, in numbers: which learnable solution generalizes best, and how far the
        best of them is from the generalization-optimal interpolator."""
        errors = self.interpolator_errors
        text = ("generalization error: " + ", ".join(f"{NAMES[name][4:]} {errors[name]:.3g}" for name in MARKERS
                                                      if name in errors))
        named = {NAMES[name]: errors[name] for name in ("min_l1", "min_sharpness")}
        if self.gd_errors:
            best_rate = min(self.gd_errors, key=self.gd_errors.get)
            low, high = min(self.gd_errors.values()), max(self.gd_errors.values())
            text += f", GD's solutions {low:.3g} to {high:.3g} (lowest at eta = {best_rate:.3g})"
            named[f"GD at eta = {best_rate:.3g}"] = low
        best = min(named, key=named.get)
        return f"{text}; the lowest besides the generalization-optimal one is {best}."


def _same_point_groups(points: np.ndarray, scale: np.ndarray, share: float = 0.04) -> list[list[int]]:
    """Indices of points that sit on top of each other in panel (a): within ``share`` of each axis's span
    ``scale`` (sharpness, l1) of the first point of their group, in order of appearance."""
    groups: list[list[int]] = []
    for index, point in enumerate(points[:, :2]):
        for group in groups:
            if np.all(np.abs(points[group[0], :2] - point) <= share * scale):
                group.append(index)
                break
        else:
            groups.append([index])
    return groups


def draw_theory_figure(X, y, beta_star, noise_std: float, gd_solutions: dict[float, np.ndarray] | None,
                       out_stem: Path | str, parameterization: str = "ww") -> TheoryFigure:
    """Draw the figure to ``out_stem.png`` (dpi 150) and ``out_stem.pdf``, 7 x 3 inches.

    Args:
        X, y: the training set (n, d), (n,) that every solution interpolates.
        beta_star: (d,) the teacher; noise_std: the label noise of the test distribution.
        gd_solutions: learning rate -> predictor beta (d,) where GD stopped, or None to draw the
            interpolators alone, with the segment between min-l1 and min-sharpness (its convex
            combinations, which interpolate too) in both panels.
        parameterization: "ww", "uu-vv" or "uv"; sets the sharpness of a beta, that of its flattest
            parameters (``interpolator_sharpness``): for uu-vv a lower bound on the sharpness of
            the parameters a run holds, exact as the initialization scale goes to 0.

    Returns:
        The PNG and PDF paths and the errors panel (b) shows. GD solutions drawn on top of each other in
        panel (a) (flow-aligned rates end at one interpolator) are labelled with how many rates they are.
    """
    X = np.asarray(X, dtype=np.float64)
    solutions = interpolators(X, y, beta_star, parameterization)
    rates = np.array(sorted(gd_solutions)) if gd_solutions else np.array([])
    if gd_solutions is not None and np.any(rates <= 0):
        raise PhasescopeError(f"learning rates must be positive for a log colour scale, got {rates.min()}")

    def place(beta) -> tuple[float, float, float]:
        beta = np.asarray(beta, dtype=np.float64)
        return (float(np.abs(beta).sum()), interpolator_sharpness(X, beta, parameterization),
                generalization_error(beta, beta_star, noise_std))

    with plt.rc_context(STYLE):
        figure, (norm_axis, error_axis) = plt.subplots(1, 2, figsize=(7, 3), layout="constrained")
        if len(rates):
            points = np.array([place(gd_solutions[rate]) for rate in rates])  # (rates, 3)
            colours = matplotlib.colors.LogNorm(vmin=rates.min(), vmax=max(rates.max(), rates.min() * 1.0001))
            scatter = norm_axis.scatter(points[:, 1], points[:, 0], c=rates, norm=colours, cmap="viridis", s=18,
                                        zorder=3)
            handles, labels = [scatter], ["GD solutions"]
            placed = np.vstack([points[:, :2], [place(beta)[:2] for beta in solutions.values()]])
            span = np.ptp(placed, axis=0)
            clusters = [group for group in _same_point_groups(points, np.where(span > 0, span, 1.0)) if len(group) > 1]
            for rank, group in enumerate(clusters):  # staggered so that neighbouring clusters' labels do not collide
                norm_axis.annotate(f"{len(group)} rates,\neta {rates[group].min():.2g} to {rates[group].max():.2g}",
                                   (points[group[0], 1], points[group[0], 0]), xytext=(-6, 8 + 22 * rank),
                                   textcoords="offset points", fontsize=8, color="0.25", ha="right")
            figure.colorbar(scatter, ax=error_axis, label=r"learning rate $\eta$")
            error_axis.plot(rates, points[:, 2], color="0.5", lw=1, zorder=2)
            error_axis.scatter(rates, points[:, 2], c=rates, norm=colours, cmap="viridis", s=18, zorder=3)
            error_axis.set_xscale("log")
            error_axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide
            error_axis.set_xlabel(r"learning rate $\eta$")
        else:
            # Without GD runs, both panels follow the segment between the two interpolators.
            weights = np.linspace(0.0, 1.0, 101)
            segment = np.array([place((1 - w) * solutions["min_l1"] + w * solutions["min_sharpness"])
                                for w in weights])  # (101, 3)
            norm_axis.plot(segment[:, 1], segment[:, 0], color="0.3", lw=1.2, zorder=2)
            handles = error_axis.plot(weights, segment[:, 2], color="0.3", lw=1.2)
            labels = ["min-l1 to min-sharpness"]
            error_axis.set_xlabel(r"weight on the min-sharpness interpolator")
        for name, beta in solutions.items():
            marker, colour, label = MARKERS[name]
            l1_norm, sharpness, error = place(beta)
            point = norm_axis.scatter([sharpness], [l1_norm], marker=marker, s=90, color=colour, edgecolor="k",
                                      lw=0.6, zorder=4)
            level = error_axis.axhline(error, color=colour, ls="--", lw=1.2)
            handles.append((point, level))  # one legend entry: the marker in (a), the level in (b)
            labels.append(label)
        norm_axis.set_xlabel(r"sharpness $\lambda_{\max}(\nabla^2 L)$ at the interpolator")
        norm_axis.set_ylabel(r"$\|\beta\|_1$")
        norm_axis.set_title(r"(a) norm versus sharpness", loc="left")
        error_axis.set_ylabel(r"generalization error $\|\beta-\beta^*\|^2+\sigma^2$")
        error_axis.set_title("(b) generalization", loc="left")
        figure.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False,
                      handler_map={tuple: matplotlib.legend_handler.HandlerTuple(ndivide=None)})
        out_stem = Path(out_stem)
        out_stem.parent.mkdir(parents=True, exist_ok=True)
        paths = [out_stem.with_name(out_stem.name + ".png"), out_stem.with_name(out_stem.name + ".pdf")]
        for path in paths:
            figure.savefig(path, dpi=150)
        plt.close(figure)
    errors = {name: place(beta)[2] for name, beta in solutions.items()}
    gd_errors = {float(rate): float(error) for rate, error in zip(rates, points[:, 2])} if len(rates) else {}
    rows = [{"solution": name.replace("_", "-"), "lr": float("nan"), **dict(zip(_COLUMNS, place(beta)))}
            for name, beta in solutions.items()]
    rows += [{"solution": "GD", "lr": float(rate), **dict(zip(_COLUMNS, point))}
             for rate, point in zip(rates, points if len(rates) else [])]
    return TheoryFigure(paths, errors, gd_errors, pd.DataFrame(rows))


_COLUMNS = ("l1_norm", "sharpness", "generalization_error")
