"""One checkpoint, every planned measure: the unit of work of both executors.

The model is loaded at most once (lazily, by the first measure that needs it), each measure's rows
are published as one shard right after it finishes (so a kill loses at most the measure in
progress), and the model is dropped before returning, so one checkpoint at a time is in memory.
"""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from phasescope.errors import PhasescopeError
from phasescope.execute.plan import PlannedMeasure
from phasescope.measures.registry import MeasureContext
from phasescope.run.metrics import MetricStore
from phasescope.run.series import CheckpointSeries, SeriesCheckpoint

Status = Literal["computed", "skipped", "failed", "not_applicable"]


@dataclass(frozen=True)
class UnitOutcome:
    """What happened to one (checkpoint, measure).

    Attributes:
        status: ``computed`` (a shard was written), ``skipped`` (its shard existed), ``failed``
            (``message`` says why, on one line), ``not_applicable`` (a pairwise measure on the
            series' first checkpoint).
        seconds: time spent computing (0 unless computed or failed).
        detail: the traceback of an unexpected (non-Phasescope) error, for debugging.
    """

    step: int
    tokens: int | None
    checkpoint: str
    measure: str
    status: Status
    message: str = ""
    seconds: float = 0.0
    detail: str = ""


def applicable(planned: PlannedMeasure, kind: str, previous: SeriesCheckpoint | None) -> bool:
    """Whether the measure applies to a checkpoint of a series of ``kind``: it measures that kind, and a
    pairwise measure needs a previous checkpoint."""
    return kind in planned.measure.run_kinds and not (planned.measure.pairwise and previous is None)


def done_status(planned: PlannedMeasure, kind: str, previous: SeriesCheckpoint | None) -> Status:
    """The status of a measure that is not computed: not applicable, else skipped (its shard exists)."""
    return "skipped" if applicable(planned, kind, previous) else "not_applicable"


def pending_measures(store: MetricStore, checkpoint: SeriesCheckpoint, previous: SeriesCheckpoint | None,
                     plan: list[PlannedMeasure], kind: str) -> list[PlannedMeasure]:
    """The planned measures of ``checkpoint`` that still need computing (their shard is missing)."""
    return [planned for planned in plan if applicable(planned, kind, previous)
            and not store.has_shard(checkpoint.step, planned.name, planned.config_hash)]


def measure_checkpoint(series: CheckpointSeries, checkpoint: SeriesCheckpoint, previous: SeriesCheckpoint | None,
                       plan: list[PlannedMeasure], device: torch.device, cache: dict[str, Any] | None = None,
                       on_start: Callable[[SeriesCheckpoint, str], None] | None = None,
                       on_done: Callable[[UnitOutcome], None] | None = None) -> list[UnitOutcome]:
    """Run every planned measure on one checkpoint and write one shard per measure.

    Args:
        series: the series (its run directory receives the shards).
        checkpoint: the checkpoint measured.
        previous: the series' checkpoint before it (None for the first); pairwise measures need it.
        plan: the measures and their configs.
        device: where models run.
        cache: resources shared across checkpoints (see ``MeasureContext.shared``).
        on_start: called with (checkpoint, measure name) before a measure starts.
        on_done: called with each outcome as soon as it is known.

    Returns:
        One outcome per planned measure. Errors are caught and reported as ``failed`` outcomes, so
        the other measures and checkpoints still run; nothing is written for a failed measure.
    """
    store = MetricStore(series.run)
    outcomes: list[UnitOutcome] = []

    def report(outcome: UnitOutcome) -> None:
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)

    pending = pending_measures(store, checkpoint, previous, plan, series.kind)
    for planned in plan:
        if planned not in pending:
            report(UnitOutcome(checkpoint.step, checkpoint.tokens, checkpoint.name, planned.name,
                               done_status(planned, series.kind, previous)))
    if not pending:
        return outcomes  # every shard exists: the checkpoint is not even loaded
    context = MeasureContext(series, checkpoint, device=device, previous=previous,
                             cache=cache if cache is not None else {})
    try:
        for planned in pending:
            if on_start is not None:
                on_start(checkpoint, planned.name)
            report(_run_one(store, context, planned))
    finally:
        context.release()
        del context
        gc.collect()  # the model's tensors go now, before the next checkpoint loads
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return outcomes


def _run_one(store: MetricStore, context: MeasureContext, planned: PlannedMeasure) -> UnitOutcome:
    checkpoint = context.checkpoint
    started = time.perf_counter()

    def outcome(status: Status, message: str = "", detail: str = "") -> UnitOutcome:
        return UnitOutcome(checkpoint.step, checkpoint.tokens, checkpoint.name, planned.name, status, message,
                           time.perf_counter() - started, detail)

    try:
        rows = planned.measure.compute(context, planned.config)
        written = store.write_shard(checkpoint.step, planned.name, planned.config, rows, tokens=checkpoint.tokens)
    except PhasescopeError as error:
        return outcome("failed", _one_line(str(error)))
    except Exception as error:  # a bug in one measure must not stop the other checkpoints and measures
        return outcome("failed", f"{type(error).__name__}: {_one_line(str(error))}", traceback.format_exc())
    # None: another worker published the same shard in the meantime (same config, same rows)
    return outcome("computed" if written is not None else "skipped")


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"
