"""The study-B part of the report ("Copy First, Translate Later", arXiv 2604.17633), from the metric store.

Figures: translation with and without shared first tokens, copying and linguistic ability against
tokens (log and linear axes); translation per direction; logit-lens layer-by-checkpoint maps;
layer-swap and path-attribution maps; mechanism against behaviour with their lead and lag; other
trajectories (held-out loss, sharpness, surface similarity). Onsets (with bootstrap intervals over
directions or languages) and change points are marked on every trajectory. A measure that was not
run gives a note instead of its figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from phasescope.analysis.phases import (  # noqa: E402
    LeadLag,
    Onset,
    detect_change_points,
    detect_onset,
    item_matrix,
    lead_lag,
    trajectory,
)
from phasescope.errors import PhasescopeError  # noqa: E402
from phasescope.report.html import Section  # noqa: E402
from phasescope.report.trajectory_plots import (  # noqa: E402
    STYLE,
    Trajectory,
    format_tokens,
    has_tokens,
    heat_map,
    legend_with_markers,
    plot_trajectories,
)
from phasescope.run import MetricStore, RunDir  # noqa: E402

MIN_CHECKPOINTS = 5  # fewer checkpoints than this: trajectories are drawn without onsets or change points


@dataclass(frozen=True)
class BehaviourSpec:
    """A behaviour trajectory: which rows, which columns name its items, how it is labelled."""

    key: str
    label: str
    measure: str
    metric: str
    subset: str | None
    items: tuple[str, ...]
    color: str
    style: str = "-"


BEHAVIOURS = [
    BehaviourSpec("wlt_no_overlap", "translation, no shared first token (WLT top-1)", "wlt", "top1_accuracy",
                  "no_overlap", ("src", "tgt"), "C3"),
    BehaviourSpec("wlt_overlap", "translation, shared first token (WLT top-1)", "wlt", "top1_accuracy", "overlap",
                  ("src", "tgt"), "C1"),
    BehaviourSpec("wlt_heldout", "translation of held-out concepts, no shared token", "wlt", "top1_accuracy",
                  "heldout_no_overlap", ("src", "tgt"), "C3", "--"),
    BehaviourSpec("copying", "copying: source first token top-1 (no shared token)", "wlt", "copy_top1",
                  "no_overlap", ("src", "tgt"), "C0"),
    BehaviourSpec("minimal_pairs", "linguistic ability: minimal-pair accuracy", "minimal_pairs", "accuracy", None,
                  ("src",), "C2"),
]
# An accuracy or a probability has left its start only after a move of at least 5 points (not a
# drift from 0.000 to 0.004 of a behaviour that never appears)
ACCURACY_ONSET = 0.05


@dataclass
class StudyBResult:
    """The study-B section and the numbers behind its findings."""

    section: Section
    trajectories: dict[str, Trajectory] = field(default_factory=dict)
    lead_lags: dict[str, LeadLag] = field(default_factory=dict)

    def onset(self, key: str) -> Onset | None:
        found = self.trajectories.get(key)
        return found.onset if found is not None else None


def study_b_section(run: RunDir, title: str = "Study B: copy first, translate later") -> StudyBResult:
    """Every study-B figure of a run's metrics (``phasescope measure`` shards), as one page section."""
    frame = MetricStore(run).read()
    section = Section(title, intro=("Translation, copying and linguistic ability across the checkpoints of "
                                    f"{run.name}. Onsets: first checkpoint leaving the initial band (circles; "
                                    "bars: 90% bootstrap interval over translation directions or languages). "
                                    "Change points: ruptures PELT on each trajectory (triangles)."))
    result = StudyBResult(section)
    if frame.empty:
        section.note(f"run {run.name} has no metrics yet: run `phasescope measure {run.path} --measures all`")
        return result
    frame = _one_config_per_measure(frame, section)
    use_tokens = has_tokens(frame[["tokens"]])
    with plt.rc_context(STYLE):
        _behaviour_figure(frame, result, use_tokens)
        _direction_figure(frame, section, use_tokens)
        _logit_lens_figure(frame, section, use_tokens)
        _mechanism_maps(frame, section, use_tokens)
        _lead_lag_figure(frame, result, use_tokens)
        _other_trajectories(frame, result, use_tokens)
    section.findings = findings(result, use_tokens)
    return result


# --- data --------------------------------------------------------------------------------------
def _one_config_per_measure(frame: pd.DataFrame, section: Section) -> pd.DataFrame:
    """Keep, per measure, the config hash that covers the most checkpoints (a rerun with another
    config writes shards beside the first ones; mixing them would average two definitions)."""
    kept = []
    for measure, rows in frame.groupby("measure", sort=True):
        coverage = rows.groupby("config_hash")["step"].nunique().sort_values(ascending=False)
        kept.append(rows[rows.config_hash == coverage.index[0]])
        if len(coverage) > 1:
            section.note(f"{measure}: shards of {len(coverage)} configs; the report uses {coverage.index[0]} "
                         f"({coverage.iloc[0]} checkpoints)")
    return pd.concat(kept, ignore_index=True)


def _rows(frame: pd.DataFrame, measure: str, metric: str, **where) -> pd.DataFrame:
    rows = frame[(frame.measure == measure) & (frame.metric == metric)]
    for column, value in where.items():
        rows = rows[rows[column].isna()] if value is None else rows[rows[column] == value]
    return rows


def behaviour_trajectory(frame: pd.DataFrame, spec: BehaviourSpec, direction: str = "up") -> Trajectory | None:
    """A behaviour's trajectory (the pooled row where the measure writes one, else the item mean),
    with its onset (interval over items) and change points; None if its rows are absent."""
    where = {"component": None} if spec.measure == "minimal_pairs" else {}
    if spec.subset is not None:
        where["subset"] = spec.subset
    rows = _rows(frame, spec.measure, spec.metric, **where)
    if spec.measure == "minimal_pairs" and not rows.empty:
        rows = rows[rows.subset == sorted(rows.subset.dropna().unique(), key=lambda s: s != "multiblimp")[0]] \
            if rows.subset.notna().any() else rows  # MultiBLiMP where it was run, else the built-in pairs
    if rows.empty:
        return None
    pooled = rows[list(spec.items)].isna().all(axis=1)
    matrix = None
    if (~pooled).any():
        matrix, points, _ = item_matrix(rows[~pooled], spec.items)
        values = (trajectory(rows[pooled]).set_index("step")["value"].reindex(points.step).to_numpy()
                  if pooled.any() else np.nanmean(matrix, axis=0))
        points = points.assign(value=values)
    else:
        points = trajectory(rows)
    return analysed(Trajectory(spec.label, points, color=spec.color, style=spec.style), direction, matrix,
                    min_change=ACCURACY_ONSET)


def analysed(line: Trajectory, direction: str = "up", items: np.ndarray | None = None,
             min_change: float = 0.0) -> Trajectory:
    """The trajectory with its onset (a move of at least ``min_change`` out of the initial band) and
    change points filled in (when it has enough checkpoints)."""
    points = line.points
    if len(points) < MIN_CHECKPOINTS or not np.isfinite(points.value).any():
        return line
    tokens = points.tokens.to_numpy() if points.tokens.notna().all() else None
    line.onset = detect_onset(points.value.to_numpy(dtype=float), points.step.to_numpy(), tokens, items=items,
                              direction=direction, min_change=min_change)
    line.change_points = detect_change_points(points.value.to_numpy(dtype=float), points.step.to_numpy(), tokens)
    return line


# --- figures -----------------------------------------------------------------------------------
def _behaviour_figure(frame: pd.DataFrame, result: StudyBResult, use_tokens: bool) -> None:
    section = result.section
    lines = []
    for spec in BEHAVIOURS:
        line = behaviour_trajectory(frame, spec)
        if line is None:
            if spec.key in ("wlt_no_overlap", "minimal_pairs"):
                section.note(f"no {spec.measure} metrics: the figure lacks “{spec.label}” "
                             f"(run `phasescope measure RUN --measures {spec.measure}`)")
            continue
        result.trajectories[spec.key] = line
        lines.append(line)
    if not lines:
        return
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharey=True, layout="constrained")
    for axis, log in zip(axes, (True, False)):
        plot_trajectories(axis, lines, use_tokens, log)
        axis.set_ylim(-0.03, 1.03)
    axes[0].set_ylabel("accuracy (share of items)")
    axes[0].set_title("log token axis")
    axes[1].set_title("linear token axis")
    legend_with_markers(axes[0], figure=figure)
    section.figure("Translation, copying and linguistic ability against training tokens", figure,
                   "Top-1 accuracy of word-level translation (WLT) on pairs whose source and target words share "
                   "their first token (copying and translating coincide) and on pairs that do not; copying = the "
                   "source word's first token ranked first on pairs without shared tokens.")


def _direction_figure(frame: pd.DataFrame, section: Section, use_tokens: bool) -> None:
    rows = _rows(frame, "wlt", "top1_accuracy", subset="no_overlap").dropna(subset=["src", "tgt"])
    if rows.empty:
        return
    last = rows[rows.step == rows.step.max()]
    languages = list(dict.fromkeys([*last.src, *last.tgt]))
    square = last.pivot_table(index="src", columns="tgt", values="value").reindex(index=languages, columns=languages)
    matrix, checkpoints, labels = item_matrix(rows, ("src", "tgt"))
    onsets = [detect_onset(row, checkpoints.step.to_numpy(), direction="up", min_change=ACCURACY_ONSET).index
              if len(checkpoints) >= MIN_CHECKPOINTS and np.isfinite(row).sum() >= MIN_CHECKPOINTS else None
              for row in matrix]
    order = sorted(range(len(labels)), key=lambda i: (onsets[i] is None, onsets[i] or 0, labels[i]))
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, max(4.0, 0.11 * len(labels) + 1.5)),
                                         gridspec_kw={"width_ratios": [1, 1.6]}, layout="constrained")
    image = left.imshow(square.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1)
    left.set_xticks(range(len(languages)), languages)
    left.set_yticks(range(len(languages)), languages)
    left.set_xlabel("target language")
    left.set_ylabel("source language")
    left.set_title(f"at the last checkpoint ({_where(last, use_tokens)})")
    left.grid(False)
    figure.colorbar(image, ax=left, label="WLT top-1 accuracy", fraction=0.046, pad=0.03)
    heat_map(right, matrix[order], checkpoints, [f"{labels[i][0]}→{labels[i][1]}" for i in order], use_tokens,
             "WLT top-1 accuracy", vmin=0, vmax=1)
    marked = [(onsets[i], position) for position, i in enumerate(order) if onsets[i] is not None]
    if marked:
        right.plot([m[0] for m in marked], [m[1] for m in marked], "o", ms=3, mfc="none", mec="white",
                   label="onset of the direction")
        right.legend(loc="lower right")
    right.set_title("per direction over checkpoints (sorted by onset)")
    right.set_ylabel("direction (source→target)")
    section.figure("Translation per direction (pairs without shared first tokens)", figure,
                   "Left: source x target accuracy at the last checkpoint. Right: every direction across "
                   "checkpoints; white circles mark each direction's onset.")


def _where(rows: pd.DataFrame, use_tokens: bool) -> str:
    tokens = rows.tokens.iloc[0] if use_tokens else None
    return f"{format_tokens(tokens)} tokens" if tokens is not None else f"step {rows.step.iloc[0]}"


def _layer_map(rows: pd.DataFrame, row_column: str, aggfunc: str = "mean") -> tuple[np.ndarray, pd.DataFrame, list]:
    checkpoints = rows.groupby("step", sort=True)["tokens"].first().reset_index()
    table = rows.pivot_table(index=row_column, columns="step", values="value", aggfunc=aggfunc)
    return table.reindex(columns=checkpoints.step).to_numpy(dtype=float), checkpoints, list(table.index)


def _logit_lens_figure(frame: pd.DataFrame, section: Section, use_tokens: bool) -> None:
    panels = [("p_target", "no_overlap", "target mass, no shared first token"),
              ("p_target", "overlap", "target mass, shared first token"),
              ("p_source", "no_overlap", "source (copy) mass, no shared first token")]
    chosen = [(title, _rows(frame, "logit_lens", metric, subset=subset)) for metric, subset, title in panels]
    chosen = [panel for panel in chosen if not panel[1].empty]
    if not chosen:
        section.note("no logit_lens metrics: the layer-by-checkpoint maps are missing "
                     "(run `phasescope measure RUN --measures logit_lens`)")
        return
    figure, axes = plt.subplots(1, len(chosen), figsize=(4.4 * len(chosen), 3.6), squeeze=False, layout="constrained")
    for axis, (title, rows) in zip(axes[0], chosen):
        matrix, checkpoints, layers = _layer_map(rows, "layer")
        heat_map(axis, matrix, checkpoints, [str(int(layer)) for layer in layers], use_tokens,
                 "probability mass", vmin=0)
        axis.invert_yaxis()  # the embeddings at the bottom, the output at the top
        axis.set_ylabel("layer (residual stream after N blocks)")
        axis.set_title(title)
    section.figure("Logit lens: layer by checkpoint", figure,
                   "Probability mass on the valid targets' (or the source word's) first tokens when each layer's "
                   "residual stream is decoded with the final norm and unembedding.")


def _mechanism_maps(frame: pd.DataFrame, section: Section, use_tokens: bool) -> None:
    swap = _rows(frame, "layer_swap", "benefit", subset="no_overlap")
    attribution = _rows(frame, "path_attribution", "attribution", subset="no_overlap")
    panels = []
    if not swap.empty:
        swap = swap[swap.component != "base"].sort_values("layer")
        panels.append(("layer swap: benefit on translation (no shared token)", swap, "component",
                       "p_target(swapped) - p_target"))
    if not attribution.empty:
        named = attribution.assign(component=[f"block {int(layer)}" if pd.notna(layer) else component
                                              for layer, component in zip(attribution.layer, attribution.component)])
        panels.append(("path attribution of the change since the previous checkpoint", named, "component",
                       "attribution (share of |total|)"))
    if not panels:
        section.note("no layer_swap or path_attribution metrics: the mechanism maps are missing "
                     "(run `phasescope measure RUN --measures layer_swap,path_attribution`)")
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 3.9), squeeze=False, layout="constrained")
    for axis, (title, rows, column, label) in zip(axes[0], panels):
        # a block's attribution is the sum over its parameter groups
        matrix, checkpoints, names = _layer_map(rows, column, "mean" if rows is swap else "sum")
        if rows is not swap:  # attributions: each checkpoint's share of its total absolute attribution
            matrix = matrix / np.nansum(np.abs(matrix), axis=0, keepdims=True)
        order = sorted(range(len(names)), key=lambda i: _component_order(names[i]))
        matrix, names = matrix[order], [names[i] for i in order]
        heat_map(axis, matrix, checkpoints, [str(n) for n in names], use_tokens, label, diverging=True)
        axis.set_title(title)
        axis.set_ylabel("swapped blocks" if rows is swap else "parameter group")
    section.figure("Layer swap and path attribution", figure,
                   "Left: WLT target mass gained by placing the reference checkpoint's blocks into each checkpoint "
                   "(positive: the checkpoint lacks what those blocks do). Right: ExPLAIND attribution of the "
                   "change in translation between consecutive checkpoints to parameter groups.")


def _component_order(name: str) -> tuple:
    """Embeddings first, then blocks (and block ranges) in layer order, then the rest."""
    text = str(name)
    digits = "".join(c if c.isdigit() else " " for c in text).split()
    if text.startswith(("embed", "wte", "tok")):
        return (0, 0, text)
    if digits and ("layers" in text or text.startswith("block")):
        return (1, int(digits[0]), text)
    return (2, 0, text)


# --- mechanism versus behaviour ----------------------------------------------------------------
def middle_swap_benefit(frame: pd.DataFrame) -> pd.DataFrame | None:
    """The layer-swap benefit (no shared token) of the window nearest the middle of the model."""
    rows = _rows(frame, "layer_swap", "benefit", subset="no_overlap")
    rows = rows[rows.component.str.match(r"^layers\.\d+-\d+$", na=False)]
    if rows.empty:
        return None
    bounds = rows.component.str.extract(r"^layers\.(\d+)-(\d+)$").astype(int)
    depth = bounds[1].max() + 1
    distance = ((bounds[0] + bounds[1]) / 2 - (depth - 1) / 2).abs()
    middle = rows.component[distance == distance.min()].iloc[0]
    return trajectory(rows[rows.component == middle]).assign(component=middle)


def middle_attribution_share(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Per checkpoint: the middle third of the blocks' share of the absolute path attribution."""
    rows = _rows(frame, "path_attribution", "attribution", subset="no_overlap")
    if rows.empty or rows.layer.isna().all():
        return None
    depth = int(rows.layer.max()) + 1
    middle = rows.layer.between(depth / 3, 2 * depth / 3, inclusive="left")
    total = rows.assign(value=rows.value.abs()).groupby("step").agg(tokens=("tokens", "first"), total=("value", "sum"))
    inside = rows[middle].assign(value=rows[middle].value.abs()).groupby("step")["value"].sum()
    share = (inside.reindex(total.index).fillna(0) / total["total"]).rename("value")
    return total[["tokens"]].join(share).reset_index()


def _lead_lag_figure(frame: pd.DataFrame, result: StudyBResult, use_tokens: bool) -> None:
    section = result.section
    behaviour = result.trajectories.get("wlt_no_overlap")
    mechanisms = {"layer_swap_middle": ("middle-layer swap benefit", middle_swap_benefit(frame), "either", "C4"),
                  "attribution_middle": ("middle layers' share of path attribution",
                                         middle_attribution_share(frame), "up", "C5")}
    mechanisms = {key: spec for key, spec in mechanisms.items() if spec[1] is not None and len(spec[1])}
    if behaviour is None or not mechanisms:
        section.note("mechanism against behaviour needs wlt and layer_swap or path_attribution metrics")
        return
    figure, axis = plt.subplots(figsize=(8, 4.4), layout="constrained")
    lines = [Trajectory(behaviour.label, _normalized(behaviour.points), behaviour.onset, behaviour.change_points,
                        behaviour.color)]
    table = []
    behaviour_items = None
    wlt = _rows(frame, "wlt", "top1_accuracy", subset="no_overlap").dropna(subset=["src", "tgt"])
    for key, (label, points, direction, color) in mechanisms.items():
        line = analysed(Trajectory(label, points, color=color), direction)
        result.trajectories[key] = line
        lines.append(Trajectory(label, _normalized(points), line.onset, line.change_points, color))
        merged = points[["step", "tokens", "value"]].merge(behaviour.points[["step", "value"]], on="step",
                                                           suffixes=("_mechanism", "_behaviour"))
        if len(merged) < MIN_CHECKPOINTS:
            continue
        if not wlt.empty:
            matrix, checkpoints, _ = item_matrix(wlt, ("src", "tgt"))
            keep = checkpoints.step.isin(merged.step).to_numpy()
            behaviour_items = matrix[:, keep] if keep.sum() == len(merged) else None
        tokens = merged.tokens.to_numpy() if use_tokens else None
        try:
            found = lead_lag(merged.value_mechanism.to_numpy(), merged.value_behaviour.to_numpy(),
                             merged.step.to_numpy(), tokens, behaviour_items=behaviour_items,
                             mechanism_direction=direction)
        except PhasescopeError:
            continue
        result.lead_lags[key] = found
        table.append(_lead_lag_row(label, found, use_tokens))
    plot_trajectories(axis, lines, use_tokens, log=True)
    axis.set_ylabel("progress (0 = first level, 1 = last)")
    legend_with_markers(axis, figure=figure)
    section.figure("Mechanism against behaviour", figure,
                   "Each curve rescaled from its first to its last level (falling curves flipped), on a log token "
                   "axis; a mechanism that forms before the behaviour it serves rises to its left.")
    if table:
        section.table("Lead and lag of the mechanisms over translation without shared tokens", pd.DataFrame(table),
                      "Onset lag: behaviour onset minus mechanism onset (positive: the mechanism leads), with its "
                      "90% bootstrap interval over directions; shift: the token factor that best aligns the curves.")


def _normalized(points: pd.DataFrame) -> pd.DataFrame:
    values = points.value.to_numpy(dtype=float)
    low, high = np.nanmin(values), np.nanmax(values)
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    first, last = values[np.isfinite(values)][[0, -1]]
    return points.assign(value=scaled if last >= first else 1 - scaled)


def _lead_lag_row(label: str, found: LeadLag, use_tokens: bool) -> dict:
    unit = format_tokens if use_tokens else (lambda v: f"{v:.0f} steps")

    def when(onset: Onset) -> str:
        return "none" if onset.index is None else (format_tokens(onset.tokens) if use_tokens else str(onset.step))

    interval = found.onset_lag_interval
    shift = (f"x{10 ** found.shift:.2f} tokens" if found.axis == "log_tokens" else f"{found.shift:+.1f} checkpoints")
    return {"mechanism": label, "mechanism onset": when(found.mechanism), "behaviour onset": when(found.behaviour),
            "onset lag": unit(found.onset_lag_tokens) if found.onset_lag_tokens is not None else "–",
            "lag interval": f"{unit(interval[0])} to {unit(interval[1])}" if interval else "–",
            "alignment shift": shift}


def _other_trajectories(frame: pd.DataFrame, result: StudyBResult, use_tokens: bool) -> None:
    specs = [("heldout_loss", "held-out loss", "nats per token", "lm_quality", "heldout_loss", {"src": None},
              "down"),
             ("sharpness", "sharpness", "top Hessian eigenvalue", "lm_sharpness", "sharpness", {}, "either"),
             ("preconditioned_sharpness", "Adam-preconditioned sharpness", "top eigenvalue of P^-1 H",
              "lm_sharpness", "preconditioned_sharpness", {}, "either"),
             ("surface_r2", "surface similarity of WLT", "R^2 of translation on surface features",
              "surface_similarity", "r2_total", {}, "either")]
    panels = []
    for key, label, unit, measure, metric, where, direction in specs:
        rows = _rows(frame, measure, metric, **where)
        if rows.empty:
            continue
        line = analysed(Trajectory(label, trajectory(rows), color="C0"), direction)
        result.trajectories[key] = line
        panels.append((line, unit))
    if not panels:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False,
                                layout="constrained")
    for axis, (line, unit) in zip(axes[0], panels):
        plot_trajectories(axis, [line], use_tokens, log=True)
        axis.set_title(line.label)
        axis.set_ylabel(unit)
    legend_with_markers(axes[0][0], figure=figure, lines=False)
    section_text = "Held-out loss per token, curvature and how much of translation surface similarity explains."
    result.section.figure("Loss, curvature and surface similarity", figure, section_text)


# --- findings ----------------------------------------------------------------------------------
def describe_onset(onset: Onset | None, use_tokens: bool) -> str:
    """'at 1.2M tokens (step 300; 90% interval 1.1M-1.4M)' or 'not detected'."""
    if onset is None or onset.index is None:
        return "not detected (never leaves its initial band)"
    if use_tokens and onset.tokens is not None:
        where = f"at {format_tokens(onset.tokens)} tokens (step {onset.step}"
        interval = onset.interval_tokens
        text = f"; {onset.confidence:.0%} interval {format_tokens(interval[0])}–{format_tokens(interval[1])}" \
            if interval else ""
    else:
        where = f"at step {onset.step} ("
        interval = onset.interval_steps
        text = f"{onset.confidence:.0%} interval {interval[0]}–{interval[1]}" if interval else "no interval"
    return where + text + ")"


def findings(result: StudyBResult, use_tokens: bool) -> list[str]:
    """One line per headline number of study B."""
    lines = []
    for spec in BEHAVIOURS:
        line = result.trajectories.get(spec.key)
        if line is None or line.onset is None:
            continue
        final = line.points.value.iloc[-1]
        lines.append(f"{spec.label}: onset {describe_onset(line.onset, use_tokens)}; {final:.2f} at the last "
                     "checkpoint")
    for key, found in result.lead_lags.items():
        label = result.trajectories[key].label
        if found.onset_lag_tokens is None:
            lines.append(f"{label}: no lead/lag (an onset is missing); curves aligned by a shift of "
                         f"{found.shift:+.2f} {found.axis}")
            continue
        distance = abs(found.onset_lag_tokens)  # the verb carries the sign
        lag = format_tokens(distance) if use_tokens else f"{distance:.0f} steps"
        leads = "leads" if found.onset_lag_tokens > 0 else "lags" if found.onset_lag_tokens < 0 else "starts with"
        lines.append(f"{label} {leads} translation without shared tokens by {lag} "
                     f"{'tokens' if use_tokens else ''} (onsets {describe_onset(found.mechanism, use_tokens)} vs "
                     f"{describe_onset(found.behaviour, use_tokens)})".replace("  ", " "))
    return lines
