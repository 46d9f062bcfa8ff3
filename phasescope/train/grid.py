"""Grids over the paper's axes: one learning-rate sweep per combination of width, depth, epsilon,
initialization scale and parameterization, all in one grid directory.

"Conflicting Biases at the Edge of Stability" (arXiv 2505.21423) varies these axes around each
learning-rate sweep. ``phasescope sweep CONFIG --grid width=100,200 --grid init_scale=0.5,1`` runs
the sweep of ``CONFIG`` at every combination:

    OUT/config.yaml                         kind: sweep_grid, the base sweep config and the axes
    OUT/width=100,init_scale=0.5/           a complete sweep run (config, checkpoints, metrics)
    ...

Each combination is an ordinary sweep run, so ``phasescope report`` and every analysis read it as
is; ``grid_table`` stacks their final states with the axis values as columns. A combination whose
sweep finished is kept on a rerun; one that was interrupted is trained again (a sweep does not
resume within itself). ``executor="ray"`` runs the combinations as Ray tasks, same run directories.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from itertools import product
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from phasescope.errors import PhasescopeError
from phasescope.run import MetricStore, RunDir, StrictModel, dump_config, validate_config
from phasescope.train.sweep import SweepConfig, run_sweep, sweep_finished

# axis name -> (section, field) of the sweep config; per-architecture fields are checked when applied
AXES: dict[str, tuple[str, str]] = {
    "width": ("model", "width"),
    "depth": ("model", "depth"),
    "epsilon": ("train", "loss_threshold"),
    "init_scale": ("model", "init_scale"),  # diagonal networks: their initialization scale alpha
    "parameterization": ("model", "parameterization"),
}
# the paper's names for the parameterizations, accepted beside phasescope's
PARAMETERIZATION_NAMES = {"sp": "standard", "standard": "standard", "mup": "mup"}


class GridConfig(StrictModel):
    """What ``OUT/config.yaml`` of a grid holds: the base sweep and the axes, in the order given."""

    kind: Literal["sweep_grid"] = "sweep_grid"
    axes: dict[str, list[Any]] = Field(min_length=1)
    sweep: dict[str, Any]


def parse_axis(text: str) -> tuple[str, list[Any]]:
    """``"width=100,200"`` -> ``("width", [100, 200])``; numbers parsed, strings kept.

    Raises:
        PhasescopeError: no ``=``, an unknown axis, or an empty list of values.
    """
    name, equals, values = text.partition("=")
    name = name.strip()
    if not equals or not values.strip():
        raise PhasescopeError(f"--grid {text!r}: expected AXIS=V1,V2,... (axes: {', '.join(AXES)})")
    if name not in AXES:
        raise PhasescopeError(f"--grid {text!r}: unknown axis {name!r}; axes: {', '.join(AXES)}")
    return name, [_parse_value(value.strip()) for value in values.split(",") if value.strip()]


def _parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def combination_name(values: dict[str, Any]) -> str:
    """The directory name of one combination, e.g. ``width=100,init_scale=0.5``."""
    return ",".join(f"{name}={value}" for name, value in values.items())


def apply_axes(base: dict, values: dict[str, Any]) -> SweepConfig:
    """The sweep config of one combination: ``base`` with each axis value written into its field.

    Raises:
        PhasescopeError: an axis that the model has no field for (e.g. width of a CNN, whose widths
            are its channels), or a value the field rejects.
    """
    config = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for name, value in values.items():
        section, key = AXES[name]
        arch = config.get("model", {}).get("arch", "mlp")
        if name == "init_scale" and arch == "diagonal":
            key = "alpha"
        if name == "parameterization" and arch != "diagonal":
            if str(value) not in PARAMETERIZATION_NAMES:
                raise PhasescopeError(f"--grid parameterization: {value!r} is not one of sp, standard, mup")
            value = PARAMETERIZATION_NAMES[str(value)]
        if name in ("width", "depth") and arch not in ("mlp", "vit"):
            raise PhasescopeError(f"--grid {name}: the {arch} model has no {name} field (an MLP or a ViT has)")
        config.setdefault(section, {})[key] = value
    return validate_config(config, SweepConfig, source=f"grid combination {combination_name(values)}")


def combinations(base: SweepConfig, axes: dict[str, list[Any]]) -> list[tuple[dict[str, Any], SweepConfig]]:
    """Every combination of the axes (the first axis varies slowest), each with its validated config.

    All are validated before anything runs, so a bad value stops the grid before it writes a file.
    """
    if not axes:
        raise PhasescopeError("a grid needs at least one axis (--grid AXIS=V1,V2,...)")
    for name, values in axes.items():
        if not values:
            raise PhasescopeError(f"--grid {name}: no values")
        if len(set(map(str, values))) != len(values):
            raise PhasescopeError(f"--grid {name}: repeated values {values}")
    raw = base.model_dump(mode="json")
    grid = []
    for chosen in product(*axes.values()):
        values = dict(zip(axes, chosen))
        grid.append((values, apply_axes(raw, values)))
    return grid


def run_grid(base: SweepConfig, axes: dict[str, list[Any]], out: Path | str, executor: str = "local",
             address: str | None = None, on_done: Callable[[str, str], None] | None = None) -> list[Path]:
    """Run the sweep of every combination into ``out``; finished combinations are kept.

    Args:
        executor: "local" (one after the other, in this process) or "ray" (one Ray task each, on a
            local instance or the cluster at ``address``).
        on_done: called as ``on_done(combination name, "kept" | "trained")`` (progress).

    Returns:
        The run directory of every combination, in grid order.

    Raises:
        PhasescopeError: a bad axis or value (before anything is written), an ``out`` that holds a
            different grid, or an unknown executor.
    """
    if executor not in ("local", "ray"):
        raise PhasescopeError(f"--executor must be local or ray, got {executor!r}")
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
            run_sweep(config, path)
            if on_done is not None:
                on_done(path.name, "trained")
    else:
        _run_on_ray(todo, address, on_done)
    return [run.path / combination_name(values) for values, _ in grid]


def _sweep_task(config: SweepConfig, path: str) -> str:
    """Body of one Ray task: one combination's sweep, one torch thread per CPU the task holds."""
    import torch

    torch.set_num_threads(1)
    run_sweep(config, path)
    return Path(path).name


def _run_on_ray(todo: list[tuple[SweepConfig, Path]], address: str | None,
                on_done: Callable[[str, str], None] | None) -> None:
    from phasescope.execute.ray_executor import import_ray, init_ray

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
            finished, pending = ray.wait(pending, num_returns=1)
            for reference in finished:
                name = ray.get(reference)  # re-raises a task's error
                if on_done is not None:
                    on_done(name, "trained")
    finally:
        if started_here:
            ray.shutdown()


def open_grid(path: Path | str) -> tuple[RunDir, GridConfig]:
    """A grid directory and its config."""
    run = RunDir.open(path)
    return run, validate_config(run.read_config_dict(), GridConfig, source=str(run.config_path))


def grid_members(path: Path | str) -> list[tuple[dict[str, Any], RunDir]]:
    """(axis values, sweep run) of every combination of a grid, in grid order.

    Raises:
        PhasescopeError: a combination that has not run yet (rerun the grid to finish it).
    """
    run, config = open_grid(path)
    members = []
    for chosen in product(*config.axes.values()):
        values = dict(zip(config.axes, chosen))
        sub = run.path / combination_name(values)
        if not (sub / "config.yaml").is_file():
            raise PhasescopeError(f"grid {run.path}: combination {sub.name} has not run yet; rerun the grid's "
                                  "`phasescope sweep ... --grid ...` command to finish it")
        members.append((values, RunDir.open(sub)))
    return members


def grid_table(path: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every combination's final states (with measured regimes) and flow summaries, stacked.

    Returns:
        (members, flows): ``members`` has one row per (combination, lr, seed) with the columns of
        ``classify_regimes`` and one column per axis; ``flows`` one row per (combination, seed)
        with s_gf, eta_c, the flow's final sharpness and l1, and the axis columns.
    """
    from phasescope.analysis.edge_of_stability import classify_regimes, final_state, flow_summary

    tables, flows = [], []
    for values, run in grid_members(path):
        config = validate_config(run.read_config_dict(), SweepConfig, source=str(run.config_path))
        store = MetricStore(run)
        rows = store.read("sweep")
        flow = flow_summary(store.read("gradient_flow"))
        table = classify_regimes(final_state(rows), flow, rows[rows.metric == "sharpness"], config.regimes)
        tables.append(table.assign(combination=run.name, **values))
        flows.append(flow.assign(combination=run.name, **values))
    return pd.concat(tables, ignore_index=True), pd.concat(flows, ignore_index=True)
