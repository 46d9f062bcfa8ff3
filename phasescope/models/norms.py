"""Parameter norms: l1 and l2 of all parameters, per layer, of a diagonal network's predictor, and of
stacked learning-rate-sweep members. Training and measures both use them, so they live below both."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from phasescope.errors import PhasescopeError


def _named_tensors(params: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(params, nn.Module):
        return {name: p.detach() for name, p in params.named_parameters()}
    return {name: t.detach() for name, t in params.items()}


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: its module path (``layers.0.weight`` -> ``layers.0``)."""
    return name.rsplit(".", 1)[0] if "." in name else name


def parameter_norms(params: nn.Module | Mapping[str, Tensor]) -> dict[str, float]:
    """l1 and l2 norms of all parameters taken together, as one flat vector."""
    tensors = _named_tensors(params)
    if not tensors:
        raise PhasescopeError("no parameters to take the norm of")
    l1 = sum(float(t.double().abs().sum()) for t in tensors.values())
    l2 = sum(float(t.double().pow(2).sum()) for t in tensors.values()) ** 0.5
    return {"l1": l1, "l2": l2}


def layer_norms(params: nn.Module | Mapping[str, Tensor]) -> dict[str, dict[str, float]]:
    """l1 and l2 norms of each layer's parameters (weights and biases of one module together)."""
    layers: dict[str, dict[str, Tensor]] = {}
    for name, tensor in _named_tensors(params).items():
        layers.setdefault(layer_of(name), {})[name] = tensor
    return {layer: parameter_norms(group) for layer, group in layers.items()}


def diagonal_predictor_norms(model: nn.Module) -> dict[str, float]:
    """l1 and l2 norms of a diagonal linear network's effective predictor beta."""
    if not hasattr(model, "effective_predictor"):
        raise PhasescopeError(f"{type(model).__name__} is not a diagonal linear network (no effective_predictor)")
    with torch.no_grad():
        beta = model.effective_predictor().double()
    return {"l1": float(beta.abs().sum()), "l2": float(beta.norm())}


def norm_rows(model: nn.Module) -> list[dict]:
    """Tidy metric rows: total l1/l2, per-layer l1/l2 (``component`` = layer), and for diagonal
    networks the predictor's l1/l2 (``component`` = "predictor")."""
    rows = [{"metric": metric, "value": value} for metric, value in parameter_norms(model).items()]
    for layer, norms in layer_norms(model).items():
        rows += [{"metric": metric, "value": value, "component": layer} for metric, value in norms.items()]
    if hasattr(model, "effective_predictor"):
        rows += [{"metric": metric, "value": value, "component": "predictor"}
                 for metric, value in diagonal_predictor_norms(model).items()]
    return rows


def stacked_norms(params: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """l1 and l2 norms (M,) of each member's parameters taken together (tensors stacked on dim 0)."""
    l1 = sum(p.detach().double().abs().flatten(1).sum(1) for p in params.values())
    l2 = sum(p.detach().double().pow(2).flatten(1).sum(1) for p in params.values()).sqrt()
    return l1, l2
