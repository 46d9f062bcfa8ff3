"""Typed configs: pydantic models loaded from YAML, with every bad field reported on one line."""

from __future__ import annotations

import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticSerializationError, to_jsonable_python

from phasescope.errors import PhasescopeError
from phasescope.files import check_config_file, read_text_file

T = TypeVar("T", bound=BaseModel)

_MAX_INPUT_CHARS = 60  # a bad value is echoed back, shortened so the message stays one readable line


class StrictModel(BaseModel):
    """Base class of every phasescope config: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=False)


def load_config(path: Path | str, model_cls: type[T]) -> T:
    """Read a YAML file and validate it as ``model_cls``.

    Raises:
        PhasescopeError: one line naming the file and, for invalid content, every bad field by
            dotted path, e.g. ``x.yaml: model.activation: Input should be 'relu' or 'tanh' (got
            'gelu'); train.lr: Field required``.
    """
    path = check_config_file(path)
    try:
        data = yaml.safe_load(read_text_file(path))
    except yaml.YAMLError as error:
        raise PhasescopeError(f"{path}: invalid YAML: {_describe_yaml_error(error)}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PhasescopeError(f"{path}: cannot read config file ({error})") from None
    if data is None:  # an empty file: report the missing fields rather than "got None"
        data = {}
    return validate_config(data, model_cls, source=str(path))


def validate_config(data: Any, model_cls: type[T], source: str = "config") -> T:
    """Validate an already parsed mapping as ``model_cls``, with :func:`load_config`'s errors.

    Args:
        data: the parsed config (a dict).
        model_cls: the pydantic model to build.
        source: what to name in error messages (a file path, or ``"config"``).
    """
    if not isinstance(data, dict):
        raise PhasescopeError(
            f"{source}: expected a mapping of config fields at the top level, got {type(data).__name__}"
        )
    try:
        return model_cls.model_validate(data)
    except pydantic.ValidationError as error:
        problems = [_describe_validation_problem(problem, model_cls) for problem in error.errors()]
        raise PhasescopeError(f"{source}: " + "; ".join(problems)) from None


def merge_config(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged into it section by section (nested mappings merged, other values
    replaced); neither argument is modified."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def dump_config(config: BaseModel) -> str:
    """The config as YAML text, fields in declaration order, values as JSON types."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def config_hash(obj: BaseModel | dict) -> str:
    """12 hex characters of the SHA-256 of the config's canonical JSON; equal configs, equal hash.

    Canonical means sorted keys and compact separators, so the hash is stable across processes and
    machines and independent of field order in a dict.
    """
    if isinstance(obj, BaseModel):
        data = obj.model_dump(mode="json")
    elif isinstance(obj, dict):
        try:
            data = to_jsonable_python(obj)
        except PydanticSerializationError as error:
            raise PhasescopeError(f"config_hash: expected a JSON-serializable dict ({error})") from None
    else:
        raise PhasescopeError(f"config_hash: expected a pydantic model or a dict, got {type(obj).__name__}")
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def _describe_yaml_error(error: yaml.YAMLError) -> str:
    """PyYAML's multi-line message squeezed to one line with the position of the problem."""
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if problem is None:
        return " ".join(str(error).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def _describe_validation_problem(problem: dict[str, Any], model_cls: type[BaseModel]) -> str:
    """One pydantic error as ``dotted.path: message`` (with the bad value or a suggestion)."""
    location, model_at = _without_union_tags(model_cls, tuple(problem["loc"]))
    dotted = ".".join(str(part) for part in location) or "(top level)"
    kind = problem["type"]
    if kind == "extra_forbidden":
        known = list(model_at.model_fields) if model_at is not None else []
        close = difflib.get_close_matches(str(location[-1]), known, n=1) if known else []
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{dotted}: unknown field{hint}"
    message = " ".join(str(problem["msg"]).split())
    if kind == "missing":
        return f"{dotted}: {message}"
    value = problem.get("input")
    if isinstance(value, (dict, list, tuple)):
        return f"{dotted}: {message}"
    shown = repr(value)
    if len(shown) > _MAX_INPUT_CHARS:
        shown = shown[: _MAX_INPUT_CHARS - 3] + "..."
    return f"{dotted}: {message} (got {shown})"


def _without_union_tags(model_cls: type[BaseModel], location: tuple) -> tuple[tuple, type[BaseModel] | None]:
    """Drop the tags pydantic puts in locations inside discriminated unions (``model.mlp.width`` is
    reported as ``model.width``), and find the model that holds the last field (None if unknown)."""
    kept: list = []
    current: Any = model_cls
    for index, part in enumerate(location):
        model = _model_in(current)
        if model is None:
            tagged = _union_member(current, part)
            if tagged is not None:  # a tag, not a field
                current = tagged
                continue
            return tuple(kept) + tuple(location[index:]), None
        kept.append(part)
        if index == len(location) - 1:
            return tuple(kept), model
        if not isinstance(part, str) or part not in model.model_fields:
            return tuple(kept) + tuple(location[index + 1:]), None
        current = model.model_fields[part].annotation
    return tuple(kept), _model_in(current)


def _union_member(annotation: Any, tag: Any) -> type[BaseModel] | None:
    """The member of a union of models whose literal discriminator value is ``tag``."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    for member in typing.get_args(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            for info in member.model_fields.values():
                if typing.get_origin(info.annotation) is typing.Literal and tag in typing.get_args(info.annotation):
                    return member
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation names, looking inside ``X | None``; None if there is none."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [arg for arg in typing.get_args(annotation) if _model_in(arg) is not None]
        if len(models) == 1:
            return _model_in(models[0])
    return None
