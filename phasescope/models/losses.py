"""Losses by name. Written with plain tensor ops so that forward-mode AD (``torch.func.jvp``) works."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from phasescope.errors import PhasescopeError


def mean_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """``0.5 * mean_i ||f(x_i) - y_i||^2``: squared error summed over outputs, averaged over examples
    (the convention of the edge-of-stability literature, Cohen et al. 2021)."""
    return 0.5 * (outputs - targets).pow(2).reshape(outputs.shape[0], -1).sum(1).mean()


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of logits (B, C) against integer labels (B,)."""
    return F.cross_entropy(outputs, targets)


IGNORE_INDEX = -100  # a label that predicts nothing (padding), Hugging Face's convention


def upcast_logits(logits: Tensor) -> Tensor:
    """Logits in at least float32: bf16/fp16 (autocast) go up to float32, float32 and float64 stay as they are."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def next_token_losses(logits: Tensor, labels: Tensor) -> Tensor:
    """Each position's next-token cross-entropy: position i predicts ``labels[:, i + 1]``.

    The one home of the language-model loss: training's mean, the replay's split of it by data,
    held-out loss, attribution objectives and LM curvature all start here.

    Args:
        logits: (batch, seq, vocab), upcast to at least float32 (float64 stays float64).
        labels: (batch, seq) token ids; ``-100`` where nothing is predicted (a loss of 0 there).

    Returns:
        (batch * (seq - 1),) losses, row-major, in the logits' precision (float32 or float64).
    """
    return F.cross_entropy(upcast_logits(logits[:, :-1]).flatten(0, 1), labels[:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX, reduction="none")


def mean_next_token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The mean of :func:`next_token_losses` over the positions that predict a label (not ``-100``)."""
    losses = next_token_losses(logits, labels)
    return losses.sum() / (labels[:, 1:] != IGNORE_INDEX).sum()


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": mean_squared_error, "cross_entropy": cross_entropy}


def get_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss function called ``name`` (``"mse"`` or ``"cross_entropy"``)."""
    if name not in LOSSES:
        raise PhasescopeError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
