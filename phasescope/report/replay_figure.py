"""The report's figure of attribution along the replayed training path, with the helpers the study-B
maps share (where a checkpoint lies, the order of parameter groups)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from phasescope.progress import format_tokens
from phasescope.report.html import Section


def checkpoint_label(rows: pd.DataFrame, use_tokens: bool) -> str:
    """Where the rows' checkpoint lies: its tokens, or its step."""
    tokens = rows.tokens.iloc[0] if use_tokens else None
    return f"{format_tokens(tokens)} tokens" if tokens is not None else f"step {rows.step.iloc[0]}"


def component_order(name: str) -> tuple:
    """Embeddings first, then blocks (and block ranges) in layer order, then the rest."""
    text = str(name)
    digits = "".join(c if c.isdigit() else " " for c in text).split()
    if text.startswith(("embed", "wte", "tok")):
        return (0, 0, text)
    if digits and ("layers" in text or text.startswith("block")):
        return (1, int(digits[0]), text)
    return (2, 0, text)


def replay_figure(frame: pd.DataFrame, section: Section, use_tokens: bool) -> None:
    """Per replayed interval: the parts of each parameter group along the replay and along the chord,
    and the parts of each kind of training data."""
    rows = frame[(frame.measure == "path_attribution") & (frame.subset == "no_overlap")]
    replay, chord = rows[rows.path == "replay"], rows[rows.path.fillna("chord") == "chord"]
    steps = sorted(set(replay.step))
    if not steps:
        return
    figure, axes = plt.subplots(len(steps), 2, figsize=(11, 0.4 + 2.9 * len(steps)), squeeze=False,
                                layout="constrained")
    notes = []
    for (group_axis, data_axis), step in zip(axes, steps):
        ours = replay[replay.step == step]
        value = lambda frame, metric: float(frame[frame.metric == metric].value.iloc[0])  # noqa: E731
        parts = ours[ours.metric == "attribution"].set_index("component").value
        names = sorted(parts.index, key=component_order)
        straight = chord[(chord.step == step) & (chord.metric == "attribution")].set_index("component").value
        position = np.arange(len(names))
        height = 0.4 if not straight.empty else 0.8
        group_axis.barh(position - (height / 2 if not straight.empty else 0), parts[names], height, color="C3",
                        label="replayed path")
        if not straight.empty:
            group_axis.barh(position + height / 2, straight.reindex(names), height, color="0.6",
                            label="chord (integrated gradients)")
        group_axis.set_yticks(position, names)
        group_axis.invert_yaxis()
        group_axis.axvline(0, color="0.3", lw=0.6)
        interval = f"{checkpoint_label(ours.head(1), use_tokens)}, {int(value(ours, 'replayed_steps'))} steps"
        group_axis.set_title(f"parameter groups, interval ending at {interval}")
        group_axis.set_xlabel("part of the change in f (nats)")
        group_axis.legend(loc="lower right")
        data = ours[ours.metric == "data_attribution"].set_index("data").value
        kinds = [label for label in data.index if not label.startswith("language=")]
        kinds = sorted(kinds, key=lambda label: -abs(data[label]))
        data_axis.barh(np.arange(len(kinds)), data[kinds], color="C0")
        data_axis.set_yticks(np.arange(len(kinds)), [_data_label(label) for label in kinds])
        data_axis.invert_yaxis()
        data_axis.axvline(0, color="0.3", lw=0.6)
        data_axis.set_title("training data that moved f (replayed path)")
        data_axis.set_xlabel("part of the change in f (nats)")
        delta = value(ours, "delta_f")
        text = (f"interval ending at {interval}: f changed by {delta:+.2f} nats; the replay's parts sum to it up to "
                f"{value(ours, 'completeness_gap_relative'):.1e} (relative; largest one-step rule error "
                f"{value(ours, 'max_step_gap'):.2g} nats{_cost_text(ours)})")
        if not straight.empty:
            moved = float(np.abs(parts[names] - straight.reindex(names).fillna(0)).sum() / np.abs(parts).sum())
            text += (f"; the chord's parts (gap {value(chord[chord.step == step], 'completeness_gap_relative'):.1e}) "
                     f"differ from the replay's by {moved:.0%} of the total absolute attribution")
        if kinds:
            text += f"; the largest part: {_data_label(kinds[0])} ({data[kinds[0]]:+.2f} nats)"
        notes.append(text)
    section.figure("Attribution along the replayed training path", figure,
                   "f: the WLT target mass on pairs without shared first tokens. Left: its change over a checkpoint "
                   "interval split over parameter groups along the optimizer steps training took (replayed from the "
                   "checkpoint's resume state; ExPLAIND's decomposition) and by integrated gradients along the "
                   "straight chord between the two checkpoints (another path). Right: the "
                   "same change split by the kind of document each step's batch tokens came from, plus the AdamW "
                   "momentum carried in from the steps before the interval and weight decay. " + ". ".join(notes) + ".")


def _cost_text(rows: pd.DataFrame) -> str:
    """``; tolerance T met|missed, G objective gradients per step`` where the rows carry them (older rows do not)."""
    values = rows.set_index("metric").value
    if "completeness_tolerance" not in values or "gradients_per_step" not in values:
        return ""
    met = "met" if values["tolerance_met"] == 1 else "MISSED"
    relative = values["completeness_tolerance"] / max(abs(values["delta_f"]), 1e-300)
    return f"; tolerance {relative:.0e} {met}, {values['gradients_per_step']:.2f} objective gradients per step"


def _data_label(label: str) -> str:
    return {"before": "momentum from before", "weight_decay": "weight decay"}.get(label, label.removeprefix("kind="))
