"""Which measures to run, with which configs: resolved and validated before any work starts.

A plan is a list of :class:`PlannedMeasure` (a registered measure and its validated config). Configs
come from the measure's defaults, then a YAML file mapping measure names to fields::

    wlt:
      shots: 3
    logit_lens:
      subsets: [no_overlap]

then ``--set measure.field=value`` overrides (values read as YAML scalars: ``3``, ``true``,
``[a, b]``; ``wlt.prompt.shots=3`` reaches nested fields). Unknown measures or fields and bad
values are one-line errors naming the allowed values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from phasescope.errors import PhasescopeError
from phasescope.files import read_text_file
from phasescope.measures.registry import Measure, available_measures, get_measure
from phasescope.run.config import StrictModel, config_hash, merge_config, validate_config


@dataclass(frozen=True)
class PlannedMeasure:
    """A measure with its validated config; its shards are named by ``config_hash``."""

    measure: Measure
    config: StrictModel

    @property
    def name(self) -> str:
        return self.measure.name

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)


def plan_measures(names: str | Iterable[str], config_file: Path | str | None = None,
                  settings: Iterable[str] = ()) -> list[PlannedMeasure]:
    """Resolve measure names and their configs.

    Args:
        names: ``"all"``, a comma-separated list (``"wlt,logit_lens"``) or a list of names.
        config_file: a YAML file mapping measure names to config fields (may name measures that are
            not selected, so one file serves every run).
        settings: ``measure.field=value`` overrides, applied after the file.

    Returns:
        The selected measures in the order given (``all``: by name), each with its config.
    """
    selected = _selected_names(names)
    overrides: dict[str, dict[str, Any]] = {name: {} for name in selected}
    if config_file is not None:
        for name, fields in _read_config_file(Path(config_file)).items():
            if name in overrides:
                overrides[name] = merge_config(overrides[name], fields)
    for setting in settings:
        name, path, value = _parse_setting(setting)
        if name not in overrides:
            get_measure(name)  # an unknown name lists the available measures
            raise PhasescopeError(f"--set {setting!r} names measure {name!r}, which is not among the selected "
                                  f"measures ({', '.join(selected)})")
        overrides[name] = merge_config(overrides[name], _nested(path, value))
    plan = []
    for name in selected:
        measure = get_measure(name)
        config = validate_config(overrides[name], measure.config_cls, source=f"measure {name}")
        plan.append(PlannedMeasure(measure, config))
    return plan


def _selected_names(names: str | Iterable[str]) -> list[str]:
    if isinstance(names, str):
        names = [part.strip() for part in names.split(",") if part.strip()]
    names = list(dict.fromkeys(names))  # keep the first of repeated names
    if not names:
        raise PhasescopeError("--measures: expected 'all' or a comma-separated list of measure names, got nothing")
    if "all" in names:
        if len(names) > 1:
            raise PhasescopeError(f"--measures: 'all' cannot be combined with names, got {','.join(names)}")
        measures = available_measures()
        if not measures:
            raise PhasescopeError("--measures all: no measures are registered")
        return list(measures)
    for name in names:
        get_measure(name)  # an unknown name lists the available measures
    return names


def _read_config_file(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        raise PhasescopeError(f"{path}: measure config file not found (expected YAML: measure name -> fields)")
    try:
        data = yaml.safe_load(read_text_file(path)) or {}
    except yaml.YAMLError as error:
        raise PhasescopeError(f"{path}: invalid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(data, dict):
        raise PhasescopeError(f"{path}: expected a mapping of measure names to config fields, "
                              f"got {type(data).__name__}")
    known = available_measures()
    for name, fields in data.items():
        if name not in known:
            raise PhasescopeError(f"{path}: unknown measure {name!r}; available: {', '.join(known) or 'none'}")
        if not isinstance(fields, dict):
            raise PhasescopeError(f"{path}: {name}: expected a mapping of config fields, got {type(fields).__name__}")
    return data


def _parse_setting(setting: str) -> tuple[str, list[str], Any]:
    key, equals, text = setting.partition("=")
    parts = key.strip().split(".")
    if not equals or len(parts) < 2 or not all(parts):
        raise PhasescopeError(f"--set {setting!r}: expected measure.field=value (e.g. wlt.shots=3)")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text  # not YAML: the field's own validation decides whether a string is acceptable
    return parts[0], parts[1:], value


def _nested(path: list[str], value: Any) -> dict[str, Any]:
    for part in reversed(path):
        value = {part: value}
    return value
