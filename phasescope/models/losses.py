"""Losses by name. Written with plain tensor ops so that forward-mode AD (``torch.func.jvp``) works."""

from __future__ import annotations

from collections.abc import Callable

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


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": mean_squared_error, "cross_entropy": cross_entropy}


def get_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss function called ``name`` (``"mse"`` or ``"cross_entropy"``)."""
    if name not in LOSSES:
        raise PhasescopeError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
