"""Checkpoints in Hugging Face layout, safetensors only, written atomically.

A checkpoint directory ``step_XXXXXXXX/`` holds:

- ``config.json``: the model config (enough to rebuild the model),
- ``model.safetensors``: the weights,
- ``state.safetensors`` (optional): optimizer and scheduler tensors for resume,
- ``state.json``: ``step``, ``tokens`` and any other training metadata (RNG, data position),
- any extra files a caller adds (tokenizer files for language models).

Nothing here unpickles a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from phasescope.errors import PhasescopeError
from phasescope.run.atomic import atomic_directory
from phasescope.run.layout import STEP_DIR_PATTERN, CheckpointInfo, RunDir

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
STATE_TENSORS_FILE = "state.safetensors"
STATE_META_FILE = "state.json"
OPTIMIZER_PREFIX = "optimizer."  # state.safetensors: optimizer.<parameter path>.<entry>
_RESERVED_FILES = {CONFIG_FILE, MODEL_FILE, STATE_TENSORS_FILE, STATE_META_FILE}


@dataclass
class LoadedCheckpoint:
    """Everything read back from one checkpoint directory."""

    step: int
    tokens: int | None
    model_config: dict[str, Any]
    model_state: dict[str, Tensor]
    train_state: dict[str, Tensor] | None = None
    train_meta: dict[str, Any] = field(default_factory=dict)  # state.json without step and tokens


def save_checkpoint(
    run: RunDir,
    step: int,
    model_state: dict[str, Tensor],
    model_config: dict,
    tokens: int | None = None,
    train_state: dict[str, Tensor] | None = None,
    train_meta: dict | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> CheckpointInfo:
    """Write the checkpoint of ``step`` into ``run``; it appears only once complete.

    Args:
        run: the run directory.
        step: the optimizer step (the directory is ``step_XXXXXXXX``).
        model_state: parameter and buffer tensors by name; tensors sharing storage (tied
            embeddings) or non-contiguous views are fine, each is saved as its own copy.
        model_config: JSON-serializable config to rebuild the model (``config.json``).
        tokens: training tokens seen so far, if the run counts them.
        train_state: optimizer/scheduler tensors for resume (``state.safetensors``).
        train_meta: JSON-serializable resume metadata (RNG, data position) for ``state.json``.
        extra_files: more files by plain file name, e.g. tokenizer files.

    Raises:
        PhasescopeError: the checkpoint exists already, or an argument cannot be serialized.
    """
    final = run.checkpoint_dir(step)
    meta = dict(train_meta or {})
    meta.update(step=step, tokens=tokens)
    config_text = _to_json(model_config, "model_config")
    meta_text = _to_json(meta, "train_meta")
    model_tensors = _detached_copies(model_state, "model_state")
    state_tensors = _detached_copies(train_state, "train_state") if train_state is not None else None
    for name in extra_files or {}:
        if name in _RESERVED_FILES or Path(name).name != name or name.startswith("."):
            raise PhasescopeError(
                f"extra_files: expected plain file names other than {sorted(_RESERVED_FILES)}, got {name!r}"
            )

    with atomic_directory(final) as directory:
        (directory / CONFIG_FILE).write_text(config_text, encoding="utf-8")
        save_file(model_tensors, str(directory / MODEL_FILE), metadata={"format": "pt"})
        if state_tensors is not None:
            save_file(state_tensors, str(directory / STATE_TENSORS_FILE), metadata={"format": "pt"})
        (directory / STATE_META_FILE).write_text(meta_text, encoding="utf-8")
        for name, data in (extra_files or {}).items():
            (directory / name).write_bytes(data)
    return CheckpointInfo(step=step, tokens=tokens, path=final)


def load_checkpoint(path: Path | str, device: str = "cpu") -> LoadedCheckpoint:
    """Read a checkpoint directory written by :func:`save_checkpoint` (or a Hugging Face one).

    ``state.json`` and ``state.safetensors`` are optional; without ``state.json`` the step comes
    from the directory name and tokens are unknown.

    Raises:
        PhasescopeError: naming the missing or unreadable file.
    """
    path = Path(path)
    if not path.is_dir():
        raise PhasescopeError(f"checkpoint directory {path} does not exist")
    model_config = read_json_object(path / CONFIG_FILE)
    model_state = read_safetensors(path / MODEL_FILE, device)
    state_tensors_path = path / STATE_TENSORS_FILE
    train_state = read_safetensors(state_tensors_path, device) if state_tensors_path.exists() else None
    state_meta_path = path / STATE_META_FILE
    meta = read_json_object(state_meta_path) if state_meta_path.exists() else {}
    step = meta.pop("step", None)
    tokens = meta.pop("tokens", None)
    if step is None:
        match = STEP_DIR_PATTERN.match(path.name)
        if match is None:
            raise PhasescopeError(
                f"{state_meta_path}: expected a 'step' entry (or a step_XXXXXXXX directory name)"
            )
        step = int(match.group(1))
    return LoadedCheckpoint(
        step=int(step),
        tokens=int(tokens) if tokens is not None else None,
        model_config=model_config,
        model_state=model_state,
        train_state=train_state,
        train_meta=meta,
    )


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """Split a path-keyed optimizer state into flat tensors and JSON param groups.

    ``{"state": {"model.norm.weight": {"exp_avg": t}}}`` becomes ``{"optimizer.model.norm.weight.exp_avg": t}``;
    ``param_groups`` (hyper-parameters and the parameter paths of each group) stay as JSON values.
    """
    tensors: dict[str, Tensor] = {}
    for path, entries in state.get("state", {}).items():
        for name, value in entries.items():
            if not isinstance(value, Tensor):  # AdamW keeps only tensors; a float step becomes one
                value = torch.tensor(value)
            tensors[f"{OPTIMIZER_PREFIX}{path}.{name}"] = value
    groups = [{key: list(value) if isinstance(value, tuple) else value for key, value in group.items()}
              for group in state.get("param_groups", [])]
    return tensors, groups


def unflatten_optimizer_state(tensors: dict[str, Tensor], param_groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The inverse of :func:`flatten_optimizer_state` (tuples such as ``betas`` come back as tuples)."""
    state: dict[str, dict[str, Tensor]] = {}
    for flat_name, tensor in tensors.items():
        path, name = flat_name[len(OPTIMIZER_PREFIX):].rsplit(".", 1)
        state.setdefault(path, {})[name] = tensor
    groups = [{key: tuple(value) if key == "betas" else value for key, value in group.items()}
              for group in param_groups]
    return {"state": state, "param_groups": groups}


def _to_json(data: Any, what: str) -> str:
    try:
        return json.dumps(data, indent=2, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise PhasescopeError(f"{what}: expected JSON-serializable values ({error})") from None


def _detached_copies(tensors: dict[str, Any], what: str) -> dict[str, Tensor]:
    """CPU, contiguous, storage-owning copies: safetensors refuses shared or strided storage."""
    copies = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise PhasescopeError(f"{what}[{name!r}]: expected a torch.Tensor, got {type(tensor).__name__}")
        copies[name] = tensor.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
    return copies


def read_json_object(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON file as a dict; missing, corrupt or not an object: a one-line error naming it."""
    if not path.is_file():
        raise PhasescopeError(f"{path}: missing checkpoint file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PhasescopeError(f"{path}: corrupt checkpoint file, expected JSON ({error})") from None
    if not isinstance(data, dict):
        raise PhasescopeError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_safetensors(path: Path, device: str = "cpu") -> dict[str, Tensor]:
    """Every tensor of a safetensors file; a missing, truncated or foreign file is a one-line error."""
    if not path.is_file():
        raise PhasescopeError(f"{path}: missing checkpoint file")
    try:
        return load_file(str(path), device=device)
    except Exception as error:  # safetensors raises its own SafetensorError and plain OSErrors
        raise PhasescopeError(f"{path}: corrupt checkpoint file, expected safetensors ({_one_line(error)})") from None


def check_safetensors(path: Path) -> None:
    """Raise a one-line error unless ``path`` is a complete safetensors file (reads its header only)."""
    try:
        with safe_open(str(path), "pt"):
            pass
    except Exception as error:  # SafetensorError ("incomplete metadata, file not fully covered") or OSError
        raise PhasescopeError(f"{path}: corrupt checkpoint file, expected safetensors ({_one_line(error)})") from None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
