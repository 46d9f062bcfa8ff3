"""Running a grid of learning-rate sweeps (:mod:`phasescope.train.grid`): every combination in this
process one after the other, or as Ray tasks; a combination whose sweep finished is kept on a rerun,
one that was interrupted is trained again (a sweep does not resume within itself)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from phasescope.errors import PhasescopeError
from phasescope.execute.ray_executor import import_ray, init_ray
from phasescope.progress import LOG_SECONDS
from phasescope.run import RunDir, dump_config
from phasescope.train.grid import GridConfig, combination_name, combinations
from phasescope.train.sweep import SweepConfig, run_sweep, sweep_finished


def run_grid(base: SweepConfig, axes: dict[str, list[Any]], out: Path | str, executor: str = "local",
             address: str | None = None, on_done: Callable[[str, str], None] | None = None,
             on_progress: Callable[[str], None] | None = None) -> list[Path]:
    """Run the sweep of every combination into ``out``; finished combinations are kept.

    Args:
        executor: "local" (one after the other, in this process) or "ray" (one Ray task each, on a
            local instance or the cluster at ``address``).
        on_done: called as ``on_done(combination name, "kept" | "trained")`` (progress).
        on_progress: called with a line of what runs now, while a combination trains (the sweep's own
            progress in this process; with Ray, at least every ``LOG_SECONDS`` while tasks run).

    Returns:
        The run directory of every combination, in grid order.

    Raises:
        PhasescopeError: a bad axis or value (before anything is written), an ``out`` that holds a
            different grid, or an unknown executor.
    """
    if executor not in ("local", "ray"):
        raise PhasescopeError(f"--executor must be local or ray, got {executor!r}")
    if executor == "ray":
        import_ray()  # a missing extra is said before the grid's folder is written
    grid = combinations(base, axes)
    grid_config = GridConfig(axes=axes, sweep=base.model_dump(mode="json"))
    run = RunDir.create(out, dump_config(grid_config), exist_ok=True)
    todo = []
    for values, config in grid:
        path = run.path / combination_name(values)
        members = len(config.lrs.resolve()) * len(config.seeds)
        if sweep_finished(path, members):
            if on_done is not None:
                on_done(path.name, "kept")
            continue
        if path.exists():
            shutil.rmtree(path)  # an interrupted sweep of this grid: trained again
        todo.append((config, path))
    if executor == "local":
        for config, path in todo:
            report = None if on_progress is None else (
                lambda phase, count, info, name=path.name: on_progress(f"{name}: {info}" if info else name))
            run_sweep(config, path, on_progress=report)
            if on_done is not None:
                on_done(path.name, "trained")
    else:
        _run_on_ray(todo, address, on_done, on_progress)
    return [run.path / combination_name(values) for values, _ in grid]


def _sweep_task(config: SweepConfig, path: str) -> str:
    """Body of one Ray task: one combination's sweep, one torch thread per CPU the task holds."""
    import torch

    torch.set_num_threads(1)
    run_sweep(config, path)
    return Path(path).name


def _run_on_ray(todo: list[tuple[SweepConfig, Path]], address: str | None,
                on_done: Callable[[str, str], None] | None, on_progress: Callable[[str], None] | None) -> None:
    ray = import_ray()
    if not todo:
        return
    started_here = not ray.is_initialized()
    if started_here:
        init_ray(ray, address)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_sweep_task)
        pending = [task.remote(config, str(path)) for config, path in todo]
        while pending:
            finished, pending = ray.wait(pending, num_returns=1, timeout=LOG_SECONDS)
            if not finished and on_progress is not None:
                on_progress(f"{len(pending)} combinations running as Ray tasks")
            for reference in finished:
                name = ray.get(reference)  # re-raises a task's error
                if on_done is not None:
                    on_done(name, "trained")
    finally:
        if started_here:
            ray.shutdown()
