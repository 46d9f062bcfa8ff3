"""Run planned measures over the checkpoints of a series, in this process or on Ray.

Both executors write the same shards (one per checkpoint, measure and config hash, published
atomically), skip checkpoints whose shards all exist without loading them, and keep going past a
failed measure. Killed and run again, they compute only the missing shards.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import torch

from phasescope.device import resolve_device
from phasescope.errors import PhasescopeError
from phasescope.execute.plan import PlannedMeasure
from phasescope.execute.worker import UnitOutcome, done_status, measure_checkpoint, pending_measures
from phasescope.progress import progress_bar
from phasescope.run.metrics import MetricStore
from phasescope.run.series import CheckpointSeries, SeriesCheckpoint

ExecutorName = Literal["local", "ray"]
EXECUTORS = ("local", "ray")


@dataclass
class ExecutionReport:
    """The outcome of every (checkpoint, measure) of one executor run, and its wall time."""

    outcomes: list[UnitOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str, measure: str | None = None) -> int:
        return sum(1 for o in self.outcomes if o.status == status and (measure is None or o.measure == measure))

    @property
    def failures(self) -> list[UnitOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def by_measure(self) -> dict[str, Counter]:
        """Per measure: how many units were computed, skipped, failed or not applicable."""
        counts: dict[str, Counter] = {}
        for outcome in self.outcomes:
            counts.setdefault(outcome.measure, Counter())[outcome.status] += 1
        return counts


@dataclass(frozen=True)
class WorkItem:
    """One checkpoint to measure, with the series' checkpoint before it (for pairwise measures)."""

    checkpoint: SeriesCheckpoint
    previous: SeriesCheckpoint | None
    pending: int  # measures whose shard is missing


def plan_work(series: CheckpointSeries, plan: list[PlannedMeasure],
              checkpoints: list[SeriesCheckpoint] | None = None) -> list[WorkItem]:
    """The chosen checkpoints (default: all) in step order, each with its number of missing shards."""
    store = MetricStore(series.run)
    position = {c.name: index for index, c in enumerate(series.checkpoints)}
    items = []
    for checkpoint in checkpoints if checkpoints is not None else series.checkpoints:
        index = position[checkpoint.name]
        previous = series.checkpoints[index - 1] if index > 0 else None
        pending = pending_measures(store, checkpoint, previous, plan, series.kind)
        items.append(WorkItem(checkpoint, previous, len(pending)))
    return items


def run_measures(series: CheckpointSeries, plan: list[PlannedMeasure],
                 checkpoints: list[SeriesCheckpoint] | None = None, *, device: str | torch.device = "auto",
                 executor: ExecutorName = "local", address: str | None = None, num_cpus: int | None = None,
                 show_progress: bool = True,
                 on_outcome: Callable[[UnitOutcome], None] | None = None) -> ExecutionReport:
    """Measure the chosen checkpoints of a series and write their metric shards.

    Args:
        series: from ``open_series``; shards go to ``series.run``.
        plan: from ``plan_measures``.
        checkpoints: a subset of ``series.checkpoints`` (``series.select(...)``); default all.
        device: ``auto`` (a GPU when there is one), ``cpu`` or ``cuda``.
        executor: ``local`` (this process, one checkpoint in memory at a time) or ``ray`` (one Ray
            task per checkpoint; needs ``pip install phasescope[ray]``).
        address: the Ray cluster to join (default: start a local instance).
        num_cpus: CPUs of the local Ray instance (default: all).
        show_progress: draw a progress bar (checkpoint, measure, time left) on stderr.
        on_outcome: called with every outcome as it arrives.

    Returns:
        One outcome per chosen checkpoint and measure; failed ones carry a one-line message.
        Checkpoints whose shards all exist are reported as skipped without being loaded.
    """
    if executor not in EXECUTORS:
        raise PhasescopeError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if not plan:
        raise PhasescopeError("no measures to run: expected at least one measure")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    started = time.perf_counter()
    for planned in plan:  # checks that need the series, before any checkpoint is measured
        if planned.measure.prepare is not None and series.kind in planned.measure.run_kinds:
            planned.measure.prepare(series, planned.config)
    items = plan_work(series, plan, checkpoints)
    work = [item for item in items if item.pending]
    report = ExecutionReport()
    total = sum(item.pending for item in work)
    bar = progress_bar("measures", total) if show_progress and total else nullcontext(None)
    with bar as advance:
        def done(outcome: UnitOutcome) -> None:
            report.outcomes.append(outcome)
            if advance is not None and outcome.status in ("computed", "failed"):
                advance(info=f"{outcome.checkpoint} {outcome.measure} {outcome.status}")
            if on_outcome is not None:
                on_outcome(outcome)

        for item in items:
            if not item.pending:  # every shard exists: reported without loading the checkpoint
                for planned in plan:
                    done(UnitOutcome(item.checkpoint.step, item.checkpoint.tokens, item.checkpoint.name,
                                     planned.name, done_status(planned, series.kind, item.previous)))
        if executor == "local":
            _run_local(series, plan, work, device, done, advance)
        else:
            from phasescope.execute.ray_executor import run_on_ray

            run_on_ray(series, plan, work, device, done, address=address, num_cpus=num_cpus)
    report.seconds = time.perf_counter() - started
    return report


def _run_local(series: CheckpointSeries, plan: list[PlannedMeasure], work: list[WorkItem], device: torch.device,
               done: Callable[[UnitOutcome], None], advance) -> None:
    cache: dict = {}  # shared across checkpoints: tokenized prompts, held-out batches

    def starting(checkpoint: SeriesCheckpoint, measure: str) -> None:
        if advance is not None:
            tokens = f" ({checkpoint.tokens:,} tokens)" if checkpoint.tokens is not None else ""
            advance(0, info=f"{checkpoint.name}{tokens}: {measure}")

    for item in work:
        measure_checkpoint(series, item.checkpoint, item.previous, plan, device, cache, on_start=starting,
                           on_done=done)
