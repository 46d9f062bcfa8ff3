"""A checkpoint's weights read one tensor at a time, by a model's parameter names (the run store's reader
for measures that take weights from another checkpoint: layer swaps, the chord, the replay's end points)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from phasescope.errors import PhasescopeError


class CheckpointWeights(Mapping[str, Tensor]):
    """A checkpoint's weights by the model's parameter names, read one tensor at a time.

    Backed by the checkpoint's safetensors files (``series.weight_files(cp)``) opened with
    ``safetensors.safe_open``: only the tensors asked for are read, so a donor checkpoint costs the
    memory of the layers taken from it. Names are the model's ``named_parameters()`` names; a file
    key saved under another name (transformers' checkpoint renamings, e.g. GPT-NeoX's
    ``embed_out`` for ``lm_head``) is found through the model's conversion mapping.

    Args:
        files: the checkpoint's ``*.safetensors`` weight files.
        model: a model of the same architecture (for the parameter names and dtypes).
        device: where tensors are returned (default: the CPU).
    """

    def __init__(self, files: Iterable[Path | str], model: nn.Module | None = None,
                 device: torch.device | str = "cpu") -> None:
        from safetensors import safe_open

        self.files = [Path(f) for f in files]
        if not self.files:
            raise PhasescopeError("no safetensors weight files given")
        self.device = torch.device(device)
        self._handles = {}
        self._key_file: dict[str, Path] = {}
        for file in self.files:
            try:
                handle = safe_open(str(file), framework="pt", device="cpu")
            except Exception as error:  # safetensors raises its own error types for corrupt headers
                raise PhasescopeError(f"{file}: cannot read safetensors weights ({error})") from None
            self._handles[file] = handle
            self._key_file.update({key: file for key in handle.keys()})
        self._names = _file_key_by_parameter_name(list(self._key_file), model)

    def __getitem__(self, name: str) -> Tensor:
        key = self._names.get(name)
        if key is None:
            raise KeyError(name)
        return self._handles[self._key_file[key]].get_tensor(key).to(self.device)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def read(self, name: str, like: Tensor) -> Tensor:
        """The tensor ``name`` with the dtype and device of ``like``; a one-line error if absent or misshapen."""
        if name not in self._names:
            raise PhasescopeError(f"the checkpoint {self.files[0].parent} has no weight for parameter {name!r}")
        tensor = self[name]
        if tensor.shape != like.shape:
            raise PhasescopeError(f"weight {name!r} of {self.files[0].parent} has shape {tuple(tensor.shape)}, "
                                  f"the model expects {tuple(like.shape)} (a different architecture?)")
        return tensor.to(device=like.device, dtype=like.dtype)


def _file_key_by_parameter_name(keys: list[str], model: nn.Module | None) -> dict[str, str]:
    """Parameter name -> file key: identity, then transformers' renamings, then the base-model prefix."""
    mapping = {key: key for key in keys}
    if model is None:
        return mapping
    renamings = _weight_renamings(model)
    prefix = getattr(model, "base_model_prefix", "") or ""
    for key in keys:
        renamed = key
        for pattern, replacement in renamings:
            renamed = pattern.sub(replacement, renamed)
        mapping.setdefault(renamed, key)
        if prefix:  # a base-model checkpoint read into a ...ForCausalLM, or the opposite
            mapping.setdefault(f"{prefix}.{renamed}", key)
            mapping.setdefault(renamed.removeprefix(prefix + "."), key)
    return mapping


def _weight_renamings(model: nn.Module) -> list[tuple[re.Pattern, str]]:
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming
    except ImportError:  # another transformers version: identity names only
        return []
    try:
        transforms = get_model_conversion_mapping(model)
    except Exception:  # not a PreTrainedModel
        return []
    return [(re.compile(t.source_patterns[0]), t.target_patterns[0]) for t in transforms
            if type(t) is WeightRenaming and len(t.source_patterns) == 1]
