"""One optimizer step of language-model training, the part that training and its replay share.

Training (:func:`phasescope.train.lm.run_training`) and its replay (:mod:`phasescope.train.replay`) both
step through :func:`optimizer_step`, which is what makes a replay bitwise equal to training on the CPU;
the replay's split of an update by data watches it through a :class:`StepObserver`, and its
counterfactual removal weights tokens in its loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn

from phasescope.models.losses import next_token_losses
from phasescope.train.distributed import gradient_sync

if TYPE_CHECKING:
    from phasescope.train.lm import LMTrainConfig


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked (``auto``: on CUDA), else nothing (float32)."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_optimizer(model: nn.Module, config: LMTrainConfig) -> torch.optim.AdamW:
    """AdamW with two groups: weight decay on matrices and embeddings, none on norm gains and biases."""
    decay, no_decay = [], []
    for parameter in model.parameters():  # a tied matrix is listed once
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    implementation = {"fused": True} if config.optimizer_impl == "fused" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, **implementation)


class StepObserver(Protocol):
    """Sees a training step from inside (the replay's split of the update by data)."""

    def token_losses(self, micro_batch: int, losses: Tensor) -> None:
        """A micro-batch's (rows * (seq_len - 1),) token losses, before its backward pass (graph retained)."""

    def gradients(self, parameters: list[Tensor]) -> None:
        """The accumulated gradients (``.grad``), before clipping and the update."""


def causal_lm_loss(model: nn.Module, input_ids: Tensor, token_weights: Tensor | None = None,
                   observe: Callable[[Tensor], None] | None = None) -> Tensor:
    """Mean next-token cross-entropy of a batch of packed sequences ``(rows, seq_len)``.

    Every position but the last predicts the next token (logits in at least float32). With
    ``token_weights`` (rows, seq_len), each predicted token's loss is weighted by the weight at its
    position, still over the count of all predicted tokens: weight 0 leaves a token out of the loss
    and its gradient, all else as in training (the counterfactual replay's removal). ``observe`` is
    handed the token losses before they are averaged.
    """
    losses = next_token_losses(model(input_ids=input_ids).logits, input_ids)
    if observe is not None:
        observe(losses)
    if token_weights is None:
        return losses.mean()
    return (losses * token_weights[:, 1:].flatten().to(losses)).sum() / losses.numel()


def optimizer_step(trained: nn.Module, optimizer: torch.optim.Optimizer, parameters: list[Tensor], batch: Tensor,
                   lr: float, micro_batches: int, train: LMTrainConfig,
                   token_weights: Tensor | None = None,
                   observer: StepObserver | None = None) -> tuple[Tensor, Tensor]:
    """One training step on this process's rows of the batch: gradients accumulated over ``micro_batches``
    (synced across processes on the last), clipped, then the AdamW update at learning rate ``lr``.

    Training and its replay (:mod:`phasescope.train.replay`) both step through here, which is what
    makes a replay bitwise equal to training on the CPU.

    ``token_weights`` (the batch's shape) weight each token's loss (:func:`causal_lm_loss`); an
    ``observer`` sees each micro-batch's token losses and the gradients before clipping.

    Returns:
        The mean loss over the micro-batches and the global gradient norm before clipping (tensors).
    """
    weights = [None] * micro_batches if token_weights is None else token_weights.chunk(micro_batches)
    for group in optimizer.param_groups:
        group["lr"] = lr
    device = batch.device
    loss_sum = torch.zeros((), device=device)
    for index, (micro_batch, micro_weights) in enumerate(zip(batch.chunk(micro_batches), weights)):
        with gradient_sync(trained, sync=index == micro_batches - 1):
            with autocast_context(train.precision, device):
                loss = causal_lm_loss(trained, micro_batch, micro_weights,
                                      None if observer is None else partial(observer.token_losses, index))
            (loss / micro_batches).backward()
        loss_sum += loss.detach()
    if observer is not None:
        observer.gradients(parameters)
    grad_norm = _clip_gradients(parameters, train.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum / micro_batches, grad_norm


def clip_coefficient(grad_norm: float, max_norm: float | None) -> float:
    """The factor :func:`torch.nn.utils.clip_grad_norm_` scaled the gradients by (1 without clipping)."""
    return 1.0 if max_norm is None else min(1.0, max_norm / (grad_norm + 1e-6))


def _clip_gradients(parameters: list[Tensor], max_norm: float | None) -> Tensor:
    """The global gradient l2 norm before clipping (a tensor, no host sync); clipped to ``max_norm``."""
    if max_norm is None:
        return torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None], foreach=True)
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True)
