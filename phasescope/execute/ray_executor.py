"""The Ray executor: one Ray task per checkpoint, each loading its checkpoint and writing its shards.

Ray is an optional extra (``pip install phasescope[ray]``), imported only here. Tasks write into
the series' run directory, so on a multi-machine cluster that directory must be on storage every
node sees; a local instance (the default) needs nothing. Shards are the same as the local
executor's: same rows, same names, published with the same atomic no-overwrite rename.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from phasescope.errors import PhasescopeError
from phasescope.execute.plan import PlannedMeasure
from phasescope.execute.worker import UnitOutcome, measure_checkpoint
from phasescope.run.series import CheckpointSeries, SeriesCheckpoint

# Resources shared by the checkpoints a Ray worker process measures in turn (tokenized prompts,
# held-out batches), keyed by series: workers are reused across tasks, so these are built once per
# worker instead of once per checkpoint.
_WORKER_CACHES: dict[str, dict[str, Any]] = {}


def import_ray():
    """The ``ray`` module, or a one-line error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise PhasescopeError("the Ray executor needs Ray: pip install 'phasescope[ray]' "
                              "(or use --executor local)") from None
    return ray


def _measure_task(series: CheckpointSeries, checkpoint: SeriesCheckpoint, previous: SeriesCheckpoint | None,
                  plan: list[PlannedMeasure], device: str, threads: int) -> list[UnitOutcome]:
    """Body of one Ray task (runs in a worker process)."""
    torch.set_num_threads(threads)  # as many threads as CPUs the task holds, not the node's
    cache = _WORKER_CACHES.setdefault(str(series.run.path.resolve()), {})
    return measure_checkpoint(series, checkpoint, previous, plan, torch.device(device), cache)


def run_on_ray(series: CheckpointSeries, plan: list[PlannedMeasure], work: list, device: torch.device,
               done: Callable[[UnitOutcome], None], address: str | None = None, num_cpus: int | None = None,
               cpus_per_task: int = 1) -> None:
    """Measure each work item (see ``runner.plan_work``) in its own Ray task; report outcomes as tasks end.

    Args:
        address: a Ray cluster address (``ray://host:10001`` or ``auto``); None starts a local
            instance with ``num_cpus`` CPUs (default: all), shut down at the end. If Ray is
            already initialized in this process, that instance is used as is.
        cpus_per_task: CPUs (and torch threads) each task holds.
    """
    ray = import_ray()
    if not work:
        return
    started_here = not ray.is_initialized()
    if started_here:
        init_ray(ray, address, num_cpus)
    try:
        gpus = 1 if device.type == "cuda" else 0
        task = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus, max_retries=0)(_measure_task)
        series_ref, plan_ref = ray.put(series), ray.put(plan)
        pending = {task.remote(series_ref, item.checkpoint, item.previous, plan_ref, device.type, cpus_per_task): item
                   for item in work}
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            item = pending.pop(finished[0])
            try:
                outcomes = ray.get(finished[0])
            except Exception as error:  # the worker died (out of memory, killed): every measure of it failed
                message = f"Ray task failed: {' '.join(str(error).split())[:300]}"
                outcomes = [UnitOutcome(item.checkpoint.step, item.checkpoint.tokens, item.checkpoint.name,
                                        planned.name, "failed", message) for planned in plan]
            for outcome in outcomes:
                done(outcome)
    finally:
        if started_here:
            ray.shutdown()


def init_ray(ray, address: str | None, num_cpus: int | None = None) -> None:
    """Start a local Ray instance (``address`` None) or connect to a cluster; a one-line error if neither works."""
    # Workers import the measures' modules by name; a local instance's workers start in this
    # process's working directory and have it on their import path, as this process does.
    try:
        if address is None:
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        else:
            ray.init(address=address, logging_level="ERROR")
    except (ConnectionError, ValueError, RuntimeError) as error:
        where = address or "a local instance"
        raise PhasescopeError(f"cannot start Ray on {where}: {' '.join(str(error).split())[:300]}") from None
