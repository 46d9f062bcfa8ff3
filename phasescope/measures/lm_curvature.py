"""Curvature of a causal LM's loss at a checkpoint: sharpness and Adam-preconditioned sharpness.

The top Hessian eigenvalue of the next-token loss on a fixed held-out batch (Lanczos on exact
Hessian-vector products, :mod:`phasescope.curvature`), and the top eigenvalue of
``P^{-1/2} H P^{-1/2}`` with AdamW's preconditioner ``P = sqrt(v_hat) + eps`` read from the
optimizer state saved with the checkpoint (Cohen et al., "Adaptive Gradient Methods at the Edge of
Stability", 2022), compared with Adam's threshold ``(2 + 2 beta1) / ((1 - beta1) lr)``. Each
checkpoint's solve is warm-started from the previous checkpoint's top eigenvector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import Field
from torch import Tensor, nn

from phasescope.curvature import (
    PreconditionedSharpness,
    SharpnessResult,
    adam_preconditioner_from_state,
    preconditioned_sharpness,
    select_parameters,
    sharpness,
)
from phasescope.errors import PhasescopeError
from phasescope.measures.lm_quality import HeldoutDataConfig, shared_heldout_data
from phasescope.measures.registry import Measure, MeasureContext, register_measure
from phasescope.models.losses import mean_next_token_loss
from phasescope.run.config import config_hash


class LogitsModule(nn.Module):
    """A Hugging Face causal LM as a module ``input_ids -> logits`` (batch, seq, vocab), the form the
    curvature engine calls (``model(inputs)``). Its parameter names are the LM's with ``lm.`` in front."""

    prefix = "lm."

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.lm(input_ids=input_ids).logits


def wrapped_parameter_names(names: Sequence[str] | None) -> list[str] | None:
    """The LM's parameter names (or module prefixes) as :class:`LogitsModule` names them."""
    return None if names is None else [LogitsModule.prefix + name for name in names]


@dataclass
class SavedAdamState:
    """AdamW's second moments and hyper-parameters as saved with a checkpoint."""

    exp_avg_sq: dict[str, Tensor]  # per parameter name
    steps: dict[str, int]  # optimizer steps taken per parameter
    beta1: float
    beta2: float
    eps: float
    lr: float  # the learning rate of the next step (scheduler.next_lr), else of the last one

    def preconditioner(self) -> dict[str, Tensor]:
        """``P = sqrt(v / (1 - beta2^t)) + eps`` per parameter name."""
        return adam_preconditioner_from_state(self.exp_avg_sq, self.steps, self.beta2, self.eps)


def read_adam_state(state_file: Path, meta: dict, names: Sequence[str]) -> SavedAdamState:
    """AdamW's ``exp_avg_sq`` and ``step`` of the parameters ``names`` from a checkpoint's
    ``state.safetensors``, with betas, eps and lr from its ``state.json``.

    The LM trainer stores ``optimizer.<parameter name>.{step,exp_avg,exp_avg_sq}`` tensors, the
    param groups (betas, eps, the last step's lr) in ``optimizer_param_groups`` and the next step's
    rate in ``scheduler.next_lr``.
    """
    from safetensors import safe_open

    groups = meta.get("optimizer_param_groups") or []
    if not groups or "betas" not in groups[0] or "eps" not in groups[0]:
        raise PhasescopeError(f"{state_file.parent}/state.json: no AdamW param groups (betas, eps) recorded")
    hyper = {(tuple(g["betas"]), g["eps"]) for g in groups}
    if len(hyper) > 1:
        raise PhasescopeError(f"{state_file.parent}: param groups with different betas or eps are not supported")
    (beta1, beta2), eps = next(iter(hyper))
    # the rate of the next step (the dynamics from here on), else the last step's (the run's end)
    lr = (meta.get("scheduler") or {}).get("next_lr")
    lr = groups[0].get("lr") if lr is None else lr
    if lr is None:
        raise PhasescopeError(f"{state_file.parent}/state.json: no learning rate recorded")
    exp_avg_sq, steps = {}, {}
    with safe_open(str(state_file), framework="pt", device="cpu") as handle:
        keys = set(handle.keys())
        for name in names:
            key = f"optimizer.{name}.exp_avg_sq"
            if key not in keys:
                raise PhasescopeError(f"{state_file}: no AdamW state {key!r} (expected exp_avg_sq for every "
                                      "parameter measured)")
            exp_avg_sq[name] = handle.get_tensor(key)
            step_key = f"optimizer.{name}.step"
            steps[name] = int(handle.get_tensor(step_key).item()) if step_key in keys else int(meta.get("step", 0))
    return SavedAdamState(exp_avg_sq, steps, float(beta1), float(beta2), float(eps), float(lr))


@contextmanager
def _differentiable_twice():
    """Attention through the math kernel: torch's fused SDPA kernels have no double backward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def _labels(input_ids: Tensor, labels: Tensor | None) -> Tensor:
    if input_ids.ndim != 2 or input_ids.shape[1] < 2:
        raise PhasescopeError(f"expected token ids (rows, seq_len >= 2), got shape {tuple(input_ids.shape)}")
    if labels is not None and labels.shape != input_ids.shape:
        raise PhasescopeError(f"labels have shape {tuple(labels.shape)}, the token ids {tuple(input_ids.shape)}")
    return input_ids if labels is None else labels


def lm_sharpness(model: nn.Module, input_ids: Tensor, labels: Tensor | None = None, *,
                 params: Sequence[str] | None = None, k: int = 1, tol: float = 1e-4,
                 v0: Tensor | SharpnessResult | None = None, chunk_size: int | None = None,
                 max_iter: int | None = None) -> SharpnessResult:
    """The top-k Hessian eigenvalues of a causal LM's mean next-token loss on a fixed batch.

    Args:
        model: a Hugging Face causal LM.
        input_ids: (rows, seq_len) token ids.
        labels: (rows, seq_len) ids to predict, ``-100`` where nothing is (default: ``input_ids``).
        params: the LM's parameter names or module prefixes to restrict to (default: all).
        v0: warm start (the previous checkpoint's result or its top eigenvector).
        chunk_size: rows per Hessian-vector product chunk (memory only).
    """
    data = (input_ids, _labels(input_ids, labels))
    with _differentiable_twice():
        return sharpness(LogitsModule(model), mean_next_token_loss, data, k=k, tol=tol, v0=v0,
                         params=wrapped_parameter_names(params), chunk_size=chunk_size, max_iter=max_iter)


def lm_preconditioned_sharpness(model: nn.Module, input_ids: Tensor, labels: Tensor | None = None, *,
                                preconditioner: Mapping[str, Tensor], lr: float, beta1: float = 0.9,
                                params: Sequence[str] | None = None, tol: float = 1e-4,
                                v0: Tensor | SharpnessResult | None = None, chunk_size: int | None = None,
                                max_iter: int | None = None) -> PreconditionedSharpness:
    """The largest eigenvalue of ``P^{-1/2} H P^{-1/2}`` (Cohen et al. 2022) of the same loss, with Adam's
    diagonal ``P`` per LM parameter name (:meth:`SavedAdamState.preconditioner`), beside the
    thresholds ``38 / lr`` (for beta1 = 0.9) and ``2 / lr``."""
    data = (input_ids, _labels(input_ids, labels))
    wrapped = {LogitsModule.prefix + name: value.to(next(model.parameters()).device)
               for name, value in preconditioner.items()}
    with _differentiable_twice():
        return preconditioned_sharpness(LogitsModule(model), mean_next_token_loss, data, wrapped, lr=lr,
                                        beta1=beta1, tol=tol, v0=v0, params=wrapped_parameter_names(params),
                                        chunk_size=chunk_size, max_iter=max_iter)


# --- the measure -----------------------------------------------------------------------------------
class LMSharpnessConfig(HeldoutDataConfig):
    """Config of ``lm_sharpness`` (float32 throughout: bf16 products are too coarse for Lanczos' residuals)."""

    sequences: int = Field(2, ge=1)  # held-out rows per language: each Hessian-vector product is ~2 backward passes
    k: int = Field(1, ge=1)  # top eigenvalues
    tol: float = Field(1e-3, gt=0)  # relative residual of each Ritz pair
    max_iter: int | None = Field(None, ge=1)  # Krylov dimension cap (default min(n, 200))
    params: list[str] | None = None  # the LM's parameter names or module prefixes (default: all)
    chunk_size: int | None = Field(None, ge=1)  # rows per HVP chunk: memory only, not the result
    preconditioned: bool = True  # also Adam's preconditioned sharpness where the checkpoint has AdamW state


def _warm_start(context: MeasureContext, key: str, size: int) -> Tensor | None:
    vector = context.cache.get(key)
    return vector if vector is not None and vector.shape == (size,) else None


def compute_lm_sharpness(context: MeasureContext, config: LMSharpnessConfig) -> list[dict]:
    """``sharpness`` (+ ``eigenvalue_2..k``), ``hvps``, ``converged``; with AdamW state,
    ``preconditioned_sharpness``, ``adam_threshold`` and ``gd_threshold``."""
    model = context.model
    selected = select_parameters(model, config.params)
    names, size = list(selected), sum(p.numel() for p in selected.values())
    rows_by_language = shared_heldout_data(context, config)
    input_ids = torch.cat(list(rows_by_language.values())).to(next(model.parameters()).device)
    key = f"lm_sharpness:{config_hash(config)}"
    result = lm_sharpness(model, input_ids, params=config.params, k=config.k, tol=config.tol,
                          v0=_warm_start(context, f"{key}:v0", size), chunk_size=config.chunk_size,
                          max_iter=config.max_iter)
    context.cache[f"{key}:v0"] = result.eigenvectors[:, 0].cpu()
    component = None if config.params is None else ",".join(config.params)
    metrics = [("sharpness", result.top), *((f"eigenvalue_{i + 1}", float(value))
                                            for i, value in enumerate(result.eigenvalues.tolist()[1:], 1)),
               ("hvps", result.num_hvps), ("converged", float(result.converged))]
    state_file, meta = context.series.optimizer_state(context.checkpoint)
    if config.preconditioned and state_file is not None and meta.get("step", 0) >= 1:
        state = read_adam_state(state_file, meta, names)
        if state.lr > 0:
            pre = lm_preconditioned_sharpness(model, input_ids, preconditioner=state.preconditioner(), lr=state.lr,
                                              beta1=state.beta1, params=config.params, tol=config.tol,
                                              v0=_warm_start(context, f"{key}:v0_preconditioned", size),
                                              chunk_size=config.chunk_size, max_iter=config.max_iter)
            context.cache[f"{key}:v0_preconditioned"] = pre.result.eigenvectors[:, 0].cpu()
            metrics += [("preconditioned_sharpness", pre.eigenvalue), ("adam_threshold", pre.adam_threshold),
                        ("gd_threshold", pre.gd_threshold), ("preconditioned_hvps", pre.result.num_hvps)]
    return [{"metric": metric, "value": float(value), "component": component} for metric, value in metrics]


LM_SHARPNESS_MEASURE = register_measure(Measure(
    name="lm_sharpness", config_cls=LMSharpnessConfig, compute=compute_lm_sharpness,
    description="top Hessian eigenvalue of the held-out LM loss, and Adam's preconditioned one vs 38/lr",
))
