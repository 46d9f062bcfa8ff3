"""Sharpness of adaptive optimizers: the largest eigenvalue of the preconditioned Hessian.

Cohen et al., "Adaptive Gradient Methods at the Edge of Stability", 2022: Adam with momentum
``beta1`` and learning rate ``eta`` is stable on a quadratic while the largest eigenvalue of
``P^{-1} H`` stays below ``(2 + 2 beta1) / ((1 - beta1) eta)`` (38/eta for beta1 = 0.9), where
``P = diag(sqrt(v_hat) + eps)`` is Adam's preconditioner.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from phasescope.errors import PhasescopeError


def gd_stability_threshold(lr: float) -> float:
    """The sharpness above which gradient descent at rate ``lr`` is unstable on a quadratic: 2/lr."""
    _check_lr(lr)
    return 2.0 / lr


def adam_stability_threshold(lr: float, beta1: float = 0.9) -> float:
    """Adam's threshold for the preconditioned sharpness: (2 + 2 beta1) / ((1 - beta1) lr)."""
    _check_lr(lr)
    if not 0 <= beta1 < 1:
        raise PhasescopeError(f"beta1 must be in [0, 1), got {beta1}")
    return (2 + 2 * beta1) / ((1 - beta1) * lr)


def _check_lr(lr: float) -> None:
    if not lr > 0:
        raise PhasescopeError(f"the learning rate must be positive, got {lr}")


def adam_preconditioner_from_state(exp_avg_sq: Mapping[str, Tensor], step: int | Mapping[str, int],
                                   beta2: float, eps: float) -> dict[str, Tensor]:
    """Adam's diagonal ``P = sqrt(v / (1 - beta2^t)) + eps`` per parameter name.

    Args:
        exp_avg_sq: the second-moment estimate ``v`` for each parameter.
        step: the optimizer step ``t`` (one for all, or per parameter).
        beta2, eps: the optimizer's hyper-parameters.
    """
    preconditioner = {}
    for name, second_moment in exp_avg_sq.items():
        t = int(step[name] if isinstance(step, Mapping) else step)
        if t < 1:
            raise PhasescopeError(f"Adam state for {name!r} has step {t}: no update taken yet, no preconditioner")
        preconditioner[name] = (second_moment / (1 - beta2 ** t)).sqrt() + eps
    return preconditioner


def adam_preconditioner(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, Tensor]:
    """Adam's (or AdamW's) current preconditioner for each named parameter of ``model``."""
    names = {id(p): name for name, p in model.named_parameters()}
    exp_avg_sq: dict[str, Tensor] = {}
    steps: dict[str, int] = {}
    beta2 = eps = None
    for group in optimizer.param_groups:
        if "betas" not in group or "eps" not in group:
            raise PhasescopeError(
                f"expected an Adam-type optimizer (param groups with betas and eps), got {type(optimizer).__name__}")
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if "exp_avg_sq" not in state or id(p) not in names:
                continue
            if beta2 is not None and (group["betas"][1], group["eps"]) != (beta2, eps):
                raise PhasescopeError("parameter groups with different beta2 or eps are not supported")
            beta2, eps = group["betas"][1], group["eps"]
            exp_avg_sq[names[id(p)]] = state["exp_avg_sq"]
            steps[names[id(p)]] = int(state["step"])
    if beta2 is None:
        raise PhasescopeError("the optimizer has no second-moment state yet: take at least one step first")
    return adam_preconditioner_from_state(exp_avg_sq, steps, beta2, eps)
