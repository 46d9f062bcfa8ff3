"""Data-parallel training across processes: DDP or FSDP2, one code path for one process and many.

Launched with ``torchrun --nproc_per_node=N``, every process reads ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` from the environment and joins a process group (gloo on CPU, nccl on CUDA); run as a
plain process, the same code trains alone. Every process draws the same global batch and keeps its
own slice of rows; gradients are averaged across processes by DDP (replicated weights) or by FSDP2
(``torch.distributed.fsdp.fully_shard``: weights, gradients and optimizer state sharded per
decoder layer, for models that do not fit one device). Only rank 0 writes files.

Full (unsharded) model and optimizer states for checkpoints come from
``torch.distributed.checkpoint.state_dict``, which handles plain, DDP and FSDP2 modules alike and
names every tensor by its module path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import torch
import torch.distributed as dist
from pydantic import Field
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from phasescope.device import resolve_device
from phasescope.errors import PhasescopeError
from phasescope.models.llama import tied_parameter_names
from phasescope.run import StrictModel


class DistributedConfig(StrictModel):
    """How to split training over the processes of a ``torchrun`` launch (ignored in one process)."""

    strategy: Literal["ddp", "fsdp"] = "ddp"  # fsdp: shard weights/grads/optimizer state (large models)
    timeout_minutes: float = Field(30.0, gt=0)  # a collective waiting this long fails (a dead peer)


@dataclass
class DistributedContext:
    """This process's place in the launch: rank, world size and device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every process (no-op in one process)."""
        if self.is_distributed:
            dist.barrier()

    def mean(self, tensor: Tensor) -> Tensor:
        """The mean of ``tensor`` over processes (itself in one process)."""
        if not self.is_distributed:
            return tensor
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor / self.world_size

    def close(self) -> None:
        if self.is_distributed and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device_name: str, config: DistributedConfig) -> DistributedContext:
    """Join the ``torchrun`` process group if there is one (``WORLD_SIZE`` > 1), else train alone.

    On CUDA each process takes the GPU of its ``LOCAL_RANK`` and the backend is nccl; on CPU gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world_size == 1:
        return DistributedContext(rank=0, world_size=1, local_rank=0, device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(minutes=config.timeout_minutes))
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def wrap_model(model: nn.Module, context: DistributedContext, strategy: str) -> nn.Module:
    """The model as trained: itself in one process, else DDP-wrapped or FSDP2-sharded (in place).

    FSDP2 shards each decoder layer as one unit (one all-gather per layer in forward and backward),
    then the root (embeddings, final norm, unembedding), as torchtitan does.
    """
    if not context.is_distributed:
        return model
    if strategy == "ddp":
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    from torch.distributed.fsdp import fully_shard

    layers = _decoder_layers(model)
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def _decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks of a Hugging Face causal LM (``model.layers`` for Llama)."""
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise PhasescopeError(f"FSDP needs the decoder layers of the model; {type(model).__name__} has no "
                              f"'{model.base_model_prefix}.layers'")
    return list(layers)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, sync: bool) -> Iterator[None]:
    """Let the backward pass inside reduce gradients across processes only when ``sync`` is True.

    Gradient accumulation reduces once, after its last micro-batch (DDP ``no_sync``; FSDP2
    ``set_requires_gradient_sync``); in one process this does nothing.
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        with contextlib.nullcontext() if sync else model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(sync)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def unwrapped(model: nn.Module) -> nn.Module:
    """The model inside DDP and ``torch.compile`` wrappers (FSDP2 shards in place: the model itself)."""
    while isinstance(model, nn.parallel.DistributedDataParallel) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model._orig_mod
    return model


def _options(context: DistributedContext) -> StateDictOptions:
    # Full tensors gathered to rank 0 on the CPU when distributed (the others get empty dicts).
    return StateDictOptions(full_state_dict=context.is_distributed, cpu_offload=context.is_distributed)


def full_model_state(model: nn.Module, context: DistributedContext) -> dict[str, Tensor]:
    """Every weight by module path, unsharded; on rank 0 only when distributed."""
    return get_model_state_dict(model, options=_options(context))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, context: DistributedContext) -> dict:
    """``{"state": {path: {"step", "exp_avg", "exp_avg_sq"}}, "param_groups": [...]}`` keyed by module
    path, unsharded; on rank 0 only when distributed. Empty before the first step."""
    if not optimizer.state:  # torch.distributed.checkpoint would run a zero-lr step to create the state,
        return {"state": {}, "param_groups": []}  # which counts as an AdamW step (bias correction)
    return get_optimizer_state_dict(model, optimizer, options=_options(context))


def load_full_states(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict[str, Tensor],
                     optimizer_state: dict, context: DistributedContext) -> None:
    """Load full (unsharded) states, read by every process, into the possibly sharded model and optimizer."""
    options = StateDictOptions(full_state_dict=context.is_distributed, strict=False)
    incompatible = set_model_state_dict(model, model_state, options=options)
    tied = tied_parameter_names(unwrapped(model))
    missing = [name for name in incompatible.missing_keys if name not in tied]
    if missing or incompatible.unexpected_keys:
        raise PhasescopeError(f"checkpoint weights do not match the model: missing {missing[:3]}, "
                              f"unexpected {list(incompatible.unexpected_keys)[:3]}")
    if optimizer_state["state"]:  # a checkpoint before the first step has none: the fresh optimizer is exact
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=StateDictOptions(
            full_state_dict=context.is_distributed))
