"""The report section of a recorded run (``kind: recorded``, :mod:`phasescope.integrations`): every
inline measure's metrics against the training step, one panel each."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from phasescope.report.html import Section
from phasescope.report.trajectory_plots import STYLE
from phasescope.run import MetricStore, RunDir

STUDY_B_MEASURES = ("wlt", "logit_lens", "lm_quality", "layer_swap", "path_attribution")


def recorded_section(run: RunDir) -> Section:
    """Inline measures of the record against steps (measures run later by ``phasescope measure`` go to the
    study-B section)."""
    raw = run.read_config_dict()
    checkpoints = run.list_checkpoints()
    intro = (f"A record of the user's own training ({raw.get('source', 'plain')}), {len(checkpoints)} checkpoints"
             + (f" from step {checkpoints[0].step} to {checkpoints[-1].step}" if checkpoints else "") + ".")
    section = Section("Recorded training", intro=intro)
    frame = MetricStore(run).read()
    inline = frame[frame.measure.isin(raw.get("measures") or [])] if not frame.empty else frame
    if inline.empty:
        section.note("no inline measures were recorded; `phasescope measure` computes the others on the checkpoints")
        return section
    panels = sorted({(row.measure, row.metric) for row in inline.itertuples()})
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(rows, columns, figsize=(3.8 * columns, 3.0 * rows), squeeze=False,
                                    layout="constrained")
        for axis, (measure, metric) in zip(axes.flat, panels):
            points = inline[(inline.measure == measure) & (inline.metric == metric)].groupby("step")["value"].mean()
            steps, values = points.index.to_numpy(dtype=float), points.to_numpy(dtype=float)
            axis.plot(steps, values, "o-", ms=3, lw=1.2, color="C0")
            if len(steps) > 2 and steps.max() > 100 * max(1.0, steps[steps > 0].min(initial=1.0)):
                axis.set_xscale("symlog", linthresh=1.0)  # log-spaced schedules: the early steps stay visible
            axis.set_title(f"{measure if metric == measure else f'{measure}: {metric}'} ({len(points)} steps)")
            axis.set_xlabel("step")
        for axis in axes.flat[len(panels):]:
            axis.set_visible(False)
        first = {f"{m}: {k}": inline[(inline.measure == m) & (inline.metric == k)].sort_values("step").value
                 for m, k in panels}
        summary = "; ".join(f"{name} from {series.iloc[0]:.4g} to {series.iloc[-1]:.4g}"
                            for name, series in first.items() if len(series) and np.isfinite(series.iloc[-1]))
        section.figure("Inline measures", figure, f"Each inline measure at the steps it was scheduled. {summary}.")
    return section
