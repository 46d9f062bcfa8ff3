"""Study-B runs side by side: the same behaviours (translation with and without shared first tokens,
copying, linguistic ability) drawn for each run in its own panel on one token axis, with each run's
onsets in a table. A run of the controlled corpus is titled as the positive control it is. A line
that never leaves its initial band is drawn without change points: whatever PELT finds in it is a
fluctuation inside that band, noise.

``phasescope compare RUN RUN ... -o FILE.png`` (the README's controlled corpus beside real text, and
the real-text settings of the parallel documents beside each other).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib.pyplot as plt

from phasescope.analysis.behaviours import BEHAVIOURS
from phasescope.errors import PhasescopeError
from phasescope.report.html import NoteBlock, Section, figure_png
from phasescope.report.study_b import behaviour_trajectory, describe_onset, one_config_per_measure
from phasescope.report.trajectory_plots import STYLE, Trajectory, has_tokens, legend_with_markers, plot_trajectories
from phasescope.run import MetricStore, RunDir
from phasescope.run.atomic import atomic_write_bytes


@dataclass
class ComparedRun:
    """One run's behaviours: its label, whether it is a positive control, its lines and the report's notes."""

    label: str
    control: bool
    lines: dict[str, Trajectory]
    use_tokens: bool
    notes: list[str]

    def onset_text(self, key: str) -> str:
        line = self.lines.get(key)
        if line is None:
            return "not measured"
        final = line.points.value.iloc[-1]
        return f"{describe_onset(line.onset, self.use_tokens)}; {final:.2f} at the end"


def compared_run(path: Path | str, label: str | None = None) -> ComparedRun:
    """The behaviours of the run at ``path`` (one measure config each, as its report draws them)."""
    run = RunDir.open(path)
    frame = MetricStore(run).read()
    if frame.empty or not frame.measure.isin({spec.measure for spec in BEHAVIOURS}).any():
        raise PhasescopeError(f"{run.path} has no WLT or minimal-pair metrics to compare: run `phasescope measure "
                              f"{run.path} --measures wlt,minimal_pairs` first")
    section = Section("compare")
    frame = one_config_per_measure(frame, section)
    lines = {spec.key: line for spec in BEHAVIOURS if (line := behaviour_trajectory(frame, spec)) is not None}
    data = run.read_config_dict().get("data") if run.config_path.is_file() else None
    control = isinstance(data, dict) and data.get("source", "controlled") == "controlled"
    notes = [block.text for block in section.blocks if isinstance(block, NoteBlock)]
    return ComparedRun(label or run.name, control, lines, has_tokens(frame[["tokens"]]), notes)


def comparison_figure(runs: Sequence[ComparedRun]):
    """One panel per run (log token axis, shared axes), the study-B behaviours with onsets and change points."""
    if not runs:
        raise PhasescopeError("nothing to compare: give at least one run")
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs) + 0.6, 4.4), sharey=True,
                                    sharex=all(run.use_tokens for run in runs), layout="constrained", squeeze=False)
        for axis, run in zip(axes[0], runs):
            lines = [line if line.onset is not None and line.onset.index is not None else
                     replace(line, change_points=None) for line in run.lines.values()]
            plot_trajectories(axis, lines, run.use_tokens, True)
            axis.set_ylim(-0.03, 1.03)
            kind = "positive control" if run.control else "natural text"
            axis.set_title(f"{run.label}\n({kind})", fontsize=10)
        axes[0][0].set_ylabel("accuracy (share of items)")
        widest = max(runs, key=lambda run: len(run.lines))
        handles_axis = axes[0][runs.index(widest)]
        legend_with_markers(handles_axis, figure=figure)
    return figure


def write_comparison(paths: Sequence[Path | str], out: Path | str, labels: Sequence[str] | None = None
                     ) -> list[ComparedRun]:
    """Draw :func:`comparison_figure` of the runs at ``paths`` into the PNG ``out`` (written whole or not at all)."""
    if labels is not None and len(labels) != len(paths):
        raise PhasescopeError(f"{len(labels)} labels for {len(paths)} runs; give one --label per run or none")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise PhasescopeError(f"{out}: the comparison is a PNG figure; name the file *.png")
    runs = [compared_run(path, labels[index] if labels else None) for index, path in enumerate(paths)]
    png = figure_png(comparison_figure(runs))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, png)
    return runs


def onset_rows(runs: Sequence[ComparedRun]) -> list[tuple[str, list[str]]]:
    """(behaviour label, the onset text of each run), for the behaviours any run has."""
    keys = [spec for spec in BEHAVIOURS if any(spec.key in run.lines for run in runs)]
    return [(spec.label, [run.onset_text(spec.key) for run in runs]) for spec in keys]
