"""The study-B part of the report ("Copy First, Translate Later", arXiv 2604.17633), from the metric store.

Figures: translation with and without shared first tokens, copying and linguistic ability against
tokens (log and linear axes); translation per direction; logit-lens layer-by-checkpoint maps;
layer-swap and path-attribution maps; attribution along the replayed training path beside integrated
gradients on the chord, per parameter group and per kind of training data; mechanism against behaviour
with their lead and lag; other trajectories (held-out loss, sharpness, surface similarity). Onsets (with
bootstrap intervals over directions or languages) and change points are marked on every trajectory. A
measure that was not run gives a note instead of its figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from phasescope.analysis.behaviours import (
    BEHAVIOURS,
    MIN_CHECKPOINTS,
    BehaviourSpec,
    analyse,
    analyse_behaviour,
    item_onsets,
)
from phasescope.analysis.mechanisms import middle_attribution_share, middle_swap_benefit
from phasescope.analysis.phases import (
    LeadLag,
    Onset,
    item_matrix,
    lead_lag,
    select_rows,
    trajectory,
)
from phasescope.errors import PhasescopeError
from phasescope.report.html import Section
from phasescope.report.replay_figure import checkpoint_label, component_order, replay_figure
from phasescope.report.trajectory_plots import (
    STYLE,
    Trajectory,
    format_tokens,
    has_tokens,
    heat_map,
    legend_with_markers,
    plot_trajectories,
    token_axis,
    x_values,
)
from phasescope.run import MetricStore, RunDir

# Colour and line style of each behaviour (analysis.behaviours.BEHAVIOURS) in every figure
BEHAVIOUR_STYLES = {"wlt_no_overlap": ("C3", "-"), "wlt_overlap": ("C1", "-"), "wlt_heldout": ("C3", "--"),
                    "copying": ("C0", "-"), "minimal_pairs": ("C2", "-")}


@dataclass
class StudyBResult:
    """The study-B section and the numbers behind its findings."""

    section: Section
    trajectories: dict[str, Trajectory] = field(default_factory=dict)
    lead_lags: dict[str, LeadLag] = field(default_factory=dict)

    def onset(self, key: str) -> Onset | None:
        found = self.trajectories.get(key)
        return found.onset if found is not None else None


def study_b_section(run: RunDir, title: str = "Study B: translation and copying across checkpoints") -> StudyBResult:
    """Every study-B figure of a run's metrics (``phasescope measure`` shards), as one page section."""
    frame = MetricStore(run).read()
    intro = (f"Translation, copying and linguistic ability across the checkpoints of {run.name}. Onsets: first "
             "checkpoint leaving the initial band (circles; bars: 90% bootstrap interval over translation directions "
             "or languages). Change points: ruptures PELT on each trajectory (triangles).")
    section = Section(title, intro=intro + _control_note(run))
    result = StudyBResult(section)
    if frame.empty:
        section.note(f"run {run.name} has no metrics yet: run `phasescope measure {run.path} --measures all`")
        return result
    frame = one_config_per_measure(frame, section)
    use_tokens = has_tokens(frame[["tokens"]])
    with plt.rc_context(STYLE):
        _behaviour_figure(frame, result, use_tokens)
        _direction_figure(frame, section, use_tokens)
        _logit_lens_figure(frame, section, use_tokens)
        _mechanism_maps(frame[frame.path.fillna("chord") == "chord"], section, use_tokens)
        replay_figure(frame, section, use_tokens)
        _lead_lag_figure(frame, result, use_tokens)
        _other_trajectories(frame, result, use_tokens)
    section.findings = findings(result, use_tokens)
    return result


def _control_note(run: RunDir) -> str:
    """For a run of the controlled corpus: that it is a positive control, not a finding."""
    data = run.read_config_dict().get("data") if run.config_path.is_file() else None
    if not isinstance(data, dict) or data.get("source") != "controlled":
        return ""
    return (" This run trained on the built-in controlled corpus, a positive control: its knobs put bilingual "
            "signals (glossaries in the prompt's format, untranslated lines, code-switching) into the data, so "
            "what these figures show is the pipeline seeing them, not a finding about natural text.")


# --- data --------------------------------------------------------------------------------------
def one_config_per_measure(frame: pd.DataFrame, section: Section) -> pd.DataFrame:
    """Keep, per measure (and attribution path), the config hash that covers the most checkpoints (a
    rerun with another config writes shards beside the first ones; mixing them would average two
    definitions)."""
    kept = []
    key = frame.measure.where(frame.path.isna(), frame.measure + " (" + frame.path + " path)")
    for measure, rows in frame.groupby(key, sort=True):
        coverage = rows.groupby("config_hash")["step"].nunique().sort_values(ascending=False)
        kept.append(rows[rows.config_hash == coverage.index[0]])
        if len(coverage) > 1:
            section.note(f"{measure}: shards of {len(coverage)} configs; the report uses {coverage.index[0]} "
                         f"({coverage.iloc[0]} checkpoints)")
    return pd.concat(kept, ignore_index=True)


def behaviour_trajectory(frame: pd.DataFrame, spec: BehaviourSpec) -> Trajectory | None:
    """A behaviour's line: its trajectory, onset and change points (:func:`analyse_behaviour`) and style."""
    found = analyse_behaviour(frame, spec)
    if found is None:
        return None
    color, style = BEHAVIOUR_STYLES[spec.key]
    return Trajectory(spec.label, found.points, found.onset, found.change_points, color, style)


def analysed(line: Trajectory, direction: str = "up") -> Trajectory:
    """The line with its onset and change points filled in (:func:`analyse`)."""
    found = analyse(line.points, direction)
    line.onset, line.change_points = found.onset, found.change_points
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
    """Translation per direction: the source x target matrix at the last checkpoint, and over training the
    mean over targets of each source language and over sources of each target language (72 directions
    are too many rows to read; their values are in the metric store)."""
    rows = select_rows(frame, measure="wlt", metric="top1_accuracy", subset="no_overlap").dropna(subset=["src", "tgt"])
    if rows.empty:
        return
    last = rows[rows.step == rows.step.max()]
    languages = list(dict.fromkeys([*last.src, *last.tgt]))
    square = last.pivot_table(index="src", columns="tgt", values="value").reindex(index=languages, columns=languages)
    figure, (left, *over_time) = plt.subplots(1, 3, figsize=(13, 3.9), layout="constrained",
                                              gridspec_kw={"width_ratios": [1, 1.25, 1.25]})
    image = left.imshow(square.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1)
    for index in range(len(languages)):  # same language: not a translation direction
        left.add_patch(plt.Rectangle((index - 0.5, index - 0.5), 1, 1, facecolor="0.85", edgecolor="none"))
        left.text(index, index, "–", ha="center", va="center", color="0.4")
    left.set_xticks(range(len(languages)), languages)
    left.set_yticks(range(len(languages)), languages)
    left.set_xlabel("target language")
    left.set_ylabel("source language")
    left.set_title(f"at the last checkpoint ({checkpoint_label(last, use_tokens)})")
    left.grid(False)
    figure.colorbar(image, ax=left, label="WLT top-1 accuracy", fraction=0.046, pad=0.03)
    for axis, side, other in zip(over_time, ("src", "tgt"), ("targets", "sources")):
        mean = rows.groupby(["step", side], as_index=False).agg(value=("value", "mean"), tokens=("tokens", "first"))
        matrix, checkpoints, labels = item_matrix(mean, (side,))
        order = sorted(range(len(labels)), key=lambda i: languages.index(labels[i][0]))  # the matrix's order
        matrix = matrix[order]
        heat_map(axis, matrix, checkpoints, [labels[i][0] for i in order], use_tokens, "WLT top-1 accuracy",
                 vmin=0, vmax=1)
        x, onsets = x_values(checkpoints, use_tokens), item_onsets(matrix, checkpoints.step.to_numpy())
        marked = [(x[onset], position) for position, onset in enumerate(onsets) if onset is not None]
        if marked:
            axis.plot(*zip(*marked), "o", ms=5, mfc="none", mec="white", mew=1.5, label="onset")
            axis.legend(loc="lower right", fontsize=7)
        axis.set_ylabel("source language" if side == "src" else "target language")
        axis.set_title(f"each {'source' if side == 'src' else 'target'} language, mean over its {other}")
    section.figure("Translation per direction (pairs without shared first tokens)", figure,
                   "Left: top-1 accuracy of every source x target direction at the last checkpoint (grey diagonal: "
                   "source and target are the same language, no translation). Middle and right: over training "
                   "(linear token axis, each column at its checkpoint), the mean over target languages of each "
                   "source language and over source languages of each target; white circles mark each row's onset "
                   "(a rise of at least 5 points out of its initial band).")


def _layer_map(rows: pd.DataFrame, row_column: str, aggfunc: str = "mean") -> tuple[np.ndarray, pd.DataFrame, list]:
    checkpoints = rows.groupby("step", sort=True)["tokens"].first().reset_index()
    table = rows.pivot_table(index=row_column, columns="step", values="value", aggfunc=aggfunc)
    return table.reindex(columns=checkpoints.step).to_numpy(dtype=float), checkpoints, list(table.index)


def _logit_lens_figure(frame: pd.DataFrame, section: Section, use_tokens: bool) -> None:
    panels = [("p_target", "no_overlap", "target mass, no shared first token"),
              ("p_target", "overlap", "target mass, shared first token"),
              ("p_source", "no_overlap", "source (copy) mass, no shared first token")]
    chosen = [(title, select_rows(frame, measure="logit_lens", metric=metric, subset=subset))
              for metric, subset, title in panels]
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
    swap = select_rows(frame, measure="layer_swap", metric="benefit", subset="no_overlap")
    attribution = select_rows(frame, measure="path_attribution", metric="attribution", subset="no_overlap")
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
        order = sorted(range(len(names)), key=lambda i: component_order(names[i]))
        matrix, names = matrix[order], [names[i] for i in order]
        heat_map(axis, matrix, checkpoints, [str(n) for n in names], use_tokens, label, diverging=True)
        axis.set_title(title)
        axis.set_ylabel("swapped blocks" if rows is swap else "parameter group")
    section.figure("Layer swap and path attribution", figure,
                   "Left: WLT target mass gained by placing the reference checkpoint's blocks into each checkpoint "
                   "(positive: the checkpoint lacks what those blocks do). Right: the change in translation between "
                   "consecutive checkpoints attributed to parameter groups (integrated gradients along the straight "
                   "chord where the map is drawn from chord rows).")


# --- mechanism versus behaviour ----------------------------------------------------------------
def _lead_lag_figure(frame: pd.DataFrame, result: StudyBResult, use_tokens: bool) -> None:
    """Translation against the middle-layer swap benefit (one figure, one lead/lag table), and the middle
    blocks' share of path attribution drawn as the separate points it is measured at."""
    section = result.section
    behaviour = result.trajectories.get("wlt_no_overlap")
    swap = middle_swap_benefit(frame)
    share = middle_attribution_share(frame)
    if behaviour is None or (swap is None and share is None):
        section.note("mechanism against behaviour needs wlt and layer_swap or path_attribution metrics")
        return
    panels = 1 + (share is not None and len(share) > 0)
    figure, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.0), squeeze=False, layout="constrained")
    axis = axes[0][0]
    plot_trajectories(axis, [behaviour], use_tokens, log=True)
    axis.set_ylim(-0.03, 1.03)
    axis.set_ylabel("translation top-1 accuracy (no shared first token)")
    table = []
    if swap is not None and len(swap):
        label = f"middle-layer swap benefit ({swap.component.iloc[0]})"
        line = analysed(Trajectory(label, swap, color="C4", style="o-"), "either")
        result.trajectories["layer_swap_middle"] = line
        benefit_axis = axis.twinx()  # its own units: target mass gained by the swap, 0 = no effect
        benefit_axis.axhline(0, color="C4", lw=0.8, ls=":")
        plot_trajectories(benefit_axis, [Trajectory("", swap, line.onset, line.change_points, "C4", "o-")],
                          use_tokens, log=True)
        benefit_axis.set_ylabel("p_target(swapped) - p_target", color="C4")
        benefit_axis.grid(False)
        axis.plot([], [], "o-", color="C4", label=f"{label}, right axis")  # one legend for both axes
        found = _swap_lead_lag(swap, behaviour, use_tokens)
        if found is not None:
            result.lead_lags["layer_swap_middle"] = found
            table.append(_lead_lag_row(label, found, use_tokens))
    axis.set_title("translation and the middle-layer swap benefit")
    legend_with_markers(axis, figure=figure)
    caption = ("Left: translation accuracy (left axis) and the benefit of swapping the final checkpoint's middle "
               "block into each checkpoint (right axis, as measured; it is 0 at the final checkpoint by "
               "construction), on a log token axis.")
    if panels == 2:
        axis = axes[0][1]
        x = share.tokens.to_numpy(dtype=float) if use_tokens else share.step.to_numpy(dtype=float)
        keep = x > 0
        axis.plot(x[keep], share.value.to_numpy()[keep], "o", color="C5", ms=5)
        token_axis(axis, use_tokens, log=True)
        axis.set_ylim(0, 1)
        axis.set_ylabel("middle third of the blocks: share of |attribution|")
        axis.set_title(f"path attribution, {len(share)} checkpoint intervals")
        jump = float(np.nanmedian(np.abs(np.diff(share.value.to_numpy(dtype=float))))) if len(share) > 1 else 0.0
        caption += (f" Right: the middle blocks' share of the absolute path attribution of each interval, one point "
                    f"per interval; between neighbouring intervals it moves by {jump:.2f} (median), so no onset "
                    "or lead/lag is read from it.")
    section.figure("Mechanism against behaviour", figure, caption)
    if table:
        section.table("Lead and lag of the middle-layer swap benefit over translation without shared tokens",
                      pd.DataFrame(table),
                      "Behaviour onset: translation's onset on all its checkpoints, the one in the findings. Onset "
                      "lag: behaviour onset minus mechanism onset (positive: the mechanism leads); its interval is "
                      "the behaviour onset's 90% bootstrap interval over directions minus the mechanism's onset. "
                      "Shift: the token factor that best aligns the two curves.")


def _swap_lead_lag(swap: pd.DataFrame, behaviour: Trajectory, use_tokens: bool) -> LeadLag | None:
    """Lead/lag of the swap benefit (on its checkpoints) against translation's own onset."""
    merged = swap[["step", "tokens", "value"]].merge(behaviour.points[["step", "value"]], on="step",
                                                     suffixes=("_mechanism", "_behaviour"))
    if len(merged) < MIN_CHECKPOINTS or behaviour.onset is None:
        return None
    try:
        return lead_lag(merged.value_mechanism.to_numpy(), merged.value_behaviour.to_numpy(), merged.step.to_numpy(),
                        merged.tokens.to_numpy() if use_tokens else None, mechanism_direction="either",
                        behaviour_onset=behaviour.onset)
    except PhasescopeError:
        return None


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
    """Held-out loss, sharpness (beside 2/eta), Adam-preconditioned sharpness (beside 38/eta) and surface
    similarity: each on a linear token axis with every measured checkpoint, the initialization included."""
    specs = [("heldout_loss", "held-out loss", "nats per token", "lm_quality", "heldout_loss", {"src": None},
              "down", None),
             ("sharpness", "sharpness", "top Hessian eigenvalue", "lm_sharpness", "sharpness", {}, "either",
              ("gd_threshold", r"$2/\eta$")),
             ("preconditioned_sharpness", "Adam-preconditioned sharpness", "top eigenvalue of P^-1 H",
              "lm_sharpness", "preconditioned_sharpness", {}, "either", ("adam_threshold", r"$38/\eta$")),
             ("surface_r2", "surface similarity of WLT", "R^2 of translation on surface features",
              "surface_similarity", "r2_total", {}, "either", None)]
    panels = []
    for key, label, unit, measure, metric, where, direction, threshold in specs:
        rows = select_rows(frame, measure=measure, metric=metric, **where)
        if rows.empty:
            continue
        line = analysed(Trajectory(label, trajectory(rows), color="C0", style="o-"), direction)
        result.trajectories[key] = line
        limit = None
        if threshold is not None:
            limit_rows = select_rows(frame, measure=measure, metric=threshold[0])
            limit = (trajectory(limit_rows), threshold[1]) if not limit_rows.empty else None
        panels.append((line, unit, limit))
    if not panels:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(3.7 * len(panels), 3.4), squeeze=False,
                                layout="constrained")
    for axis, (line, unit, limit) in zip(axes[0], panels):
        plot_trajectories(axis, [line], use_tokens, log=False)
        if limit is not None:
            points, name = limit
            axis.plot(x_values(points, use_tokens), points.value.to_numpy(dtype=float), "--", color="C3", lw=1.2,
                      label=name)
            values = np.concatenate([line.points.value.to_numpy(dtype=float), points.value.to_numpy(dtype=float)])
            values = values[np.isfinite(values) & (values > 0)]
            if len(values) and values.max() / values.min() > 10:
                axis.set_yscale("log")  # the stability threshold is often far above the sharpness
            axis.legend(loc="best", fontsize=7)
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        axis.set_title(f"{line.label} ({len(line.points)} checkpoints)")
        axis.set_ylabel(unit)
    legend_with_markers(axes[0][0], figure=figure, lines=False)
    result.section.figure("Loss, curvature and surface similarity", figure,
                          "Held-out loss per token; the top Hessian eigenvalue of the held-out loss beside 2/eta "
                          "(GD's stability threshold at the checkpoint's learning rate) and Adam's preconditioned "
                          "sharpness beside 38/eta (Adam's threshold at beta1 = 0.9); how much of translation surface "
                          "similarity explains. Linear token axis: every measured checkpoint is drawn, step 0 "
                          "included except in Adam's panel (before the first step Adam has no second moments).")


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
