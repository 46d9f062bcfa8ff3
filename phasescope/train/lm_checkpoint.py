"""Language-model checkpoints: Hugging Face directories that also carry the exact resume state.

::

    <run>/checkpoints/step_00000128/
      config.json               LlamaConfig (save_pretrained)
      generation_config.json    (save_pretrained)
      model.safetensors         the weights (save_pretrained; a tied unembedding is stored once)
      tokenizer.json            the run's tokenizer files (tokenizer.save_pretrained)
      tokenizer_config.json
      state.safetensors         optimizer.<param path>.{step,exp_avg,exp_avg_sq}, rng.torch_cpu,
                                rng.cuda.<i> (RNG states as uint8 tensors)
      state.json                step, tokens, loss, lr, scheduler, data (the batch stream's position),
                                optimizer_param_groups, config_hash, complete

so ``AutoModelForCausalLM.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)`` load
each checkpoint, and :func:`read_lm_checkpoint` gives back everything a resumed run needs. The
directory is filled under a temporary name and renamed into place (``atomic_directory``), so a
directory named ``step_*`` is always complete. Only safetensors and JSON: nothing is pickled.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from phasescope.errors import PhasescopeError
from phasescope.models.llama import tied_parameter_names
from phasescope.run import CheckpointInfo, RunDir, atomic_directory
from phasescope.run.checkpoint import (
    MODEL_FILE,
    OPTIMIZER_PREFIX,
    STATE_META_FILE,
    STATE_TENSORS_FILE,
    flatten_optimizer_state,
    read_json_object,
    read_safetensors,
    unflatten_optimizer_state,
)
from phasescope.run.series import quiet_transformers

if TYPE_CHECKING:
    from transformers import PreTrainedModel

RNG_PREFIX = "rng."


@dataclass
class LMCheckpoint:
    """What :func:`read_lm_checkpoint` returns: weights, optimizer state, RNG states and metadata."""

    step: int
    tokens: int
    model_state: dict[str, Tensor]  # by parameter path; a tied unembedding is absent
    optimizer_state: dict[str, Any]  # {"state": {path: {name: tensor}}, "param_groups": [...]}
    rng_states: dict[str, Tensor]  # "torch_cpu", "cuda.<i>": uint8 tensors
    meta: dict[str, Any]  # state.json


def has_resume_state(path: Path | str) -> bool:
    """Whether a checkpoint directory holds the resume state :func:`save_lm_checkpoint` writes: the
    optimizer's and generators' tensors, and the batch stream's position in ``state.json`` (a recorded
    run's checkpoint has the optimizer's state in the same format but no data position)."""
    path = Path(path)
    if not (path / STATE_TENSORS_FILE).is_file() or not (path / STATE_META_FILE).is_file():
        return False
    try:
        return "data" in read_json_object(path / STATE_META_FILE)
    except PhasescopeError:
        return False


def save_lm_checkpoint(run: RunDir, model: PreTrainedModel, model_state: dict[str, Tensor],
                       optimizer_state: dict[str, Any], tokenizer_dir: Path, meta: dict[str, Any]) -> CheckpointInfo:
    """Write ``<run>/checkpoints/step_<meta["step"]>/`` atomically (see the module docstring).

    Args:
        run: the run directory.
        model: the (unwrapped) Hugging Face model; its ``save_pretrained`` writes config and weights.
        model_state: full weights by parameter path, on the CPU (``full_model_state``).
        optimizer_state: full optimizer state keyed by parameter path (``full_optimizer_state``).
        tokenizer_dir: the run's saved tokenizer, copied in whole.
        meta: JSON-serializable resume metadata with at least ``step`` and ``tokens``.
    """
    step = int(meta["step"])
    tied = tied_parameter_names(model)
    weights = {name: tensor for name, tensor in model_state.items() if name not in tied}
    tensors, param_groups = flatten_optimizer_state(optimizer_state)
    tensors.update({RNG_PREFIX + name: state for name, state in rng_states().items()})
    meta = {**meta, "optimizer_param_groups": param_groups}
    meta_text = json.dumps(meta, indent=2, ensure_ascii=False)
    with atomic_directory(run.checkpoint_dir(step)) as directory, quiet_transformers():
        model.save_pretrained(directory, state_dict=weights)
        for file in sorted(Path(tokenizer_dir).iterdir()):
            if file.is_file():
                shutil.copyfile(file, directory / file.name)
        save_file({name: t.detach().to("cpu").contiguous() for name, t in tensors.items()},
                  str(directory / STATE_TENSORS_FILE), metadata={"format": "pt"})
        (directory / STATE_META_FILE).write_text(meta_text, encoding="utf-8")
    return CheckpointInfo(step=step, tokens=int(meta["tokens"]), path=run.checkpoint_dir(step))


def read_lm_checkpoint(path: Path | str) -> LMCheckpoint:
    """Everything :func:`save_lm_checkpoint` wrote, on the CPU.

    Raises:
        PhasescopeError: a file is missing or unreadable (naming it).
    """
    path = Path(path)
    meta_path = path / STATE_META_FILE
    if not meta_path.is_file():
        raise PhasescopeError(f"{path}: not a resumable language-model checkpoint (no {STATE_META_FILE})")
    meta = read_json_object(meta_path)
    model_state = read_safetensors(path / MODEL_FILE)
    tensors = read_safetensors(path / STATE_TENSORS_FILE)
    optimizer_tensors = {name: t for name, t in tensors.items() if name.startswith(OPTIMIZER_PREFIX)}
    rng = {name[len(RNG_PREFIX):]: t for name, t in tensors.items() if name.startswith(RNG_PREFIX)}
    return LMCheckpoint(step=int(meta["step"]), tokens=int(meta["tokens"]), model_state=model_state,
                        optimizer_state=unflatten_optimizer_state(optimizer_tensors, meta["optimizer_param_groups"]),
                        rng_states=rng, meta=meta)


def rng_states() -> dict[str, Tensor]:
    """torch's CPU generator state and each CUDA device's, as uint8 tensors."""
    states = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states.update({f"cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    return states


def restore_rng_states(states: dict[str, Tensor]) -> None:
    """Put back the generator states saved by :func:`rng_states`."""
    if "torch_cpu" in states:
        torch.set_rng_state(states["torch_cpu"])
    cuda = [states[f"cuda.{i}"] for i in range(len(states)) if f"cuda.{i}" in states]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
