"""Grids over the paper's axes: one learning-rate sweep per combination of width, depth, epsilon,
initialization scale and parameterization, all in one grid directory.

"Conflicting Biases at the Edge of Stability" (arXiv 2505.21423) varies these axes around each
learning-rate sweep. ``phasescope sweep CONFIG --grid width=100,200 --grid init_scale=0.5,1`` runs
the sweep of ``CONFIG`` at every combination:

    OUT/config.yaml                         kind: sweep_grid, the base sweep config and the axes
    OUT/width=100,init_scale=0.5/           a complete sweep run (config, checkpoints, metrics)
    ...

Each combination is an ordinary sweep run, so ``phasescope report`` and every analysis read it as
is; :func:`phasescope.analysis.grid.grid_table` stacks their final states with the axis values as
columns. :func:`phasescope.execute.grid.run_grid` runs the combinations (in this process, or as Ray
tasks); a combination whose sweep finished is kept on a rerun.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from phasescope.errors import PhasescopeError
from phasescope.run import RunDir, StrictModel, validate_config
from phasescope.train.sweep import SweepConfig

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
