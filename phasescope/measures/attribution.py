"""Attribution of a change of f between two checkpoints to parameters: what both paths share, and the chord.

By the fundamental theorem of calculus, along any path theta(t) from checkpoint A to checkpoint B

    f(theta_B) - f(theta_A) = integral grad f(theta(t)) . theta'(t) dt
                            = sum over parameters p of integral d_p f(theta(t)) theta'_p(t) dt,

so each parameter (and each group of parameters) gets the part of the change it carries along that
path. Two paths are offered. The one training took, the optimizer steps replayed from A's resume
state, is ExPLAIND's decomposition (arXiv 2505.20076; :mod:`phasescope.measures.replayed_attribution`).
The straight chord ``theta(t) = theta_A + t (theta_B - theta_A)`` is *integrated gradients in weight
space* (Sundararajan et al. 2017, with A as the baseline): the only path a series without resume
state (Hub revisions) has, and not the path training took (:func:`chord_integrated_gradients`, here).

The parts' sum misses the change by the quadrature's error, the completeness gap ``|sum of parts -
(f(B) - f(A))|``, reported beside the parts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from phasescope.errors import PhasescopeError
from phasescope.measures.quadrature import Point, QuadratureRule, quadrature_nodes
from phasescope.run.weights import CheckpointWeights

# f(model): a scalar tensor differentiable in the parameters, or scalar pieces that sum to f (one per
# batch of prompts: each piece is differentiated and freed in turn, so memory holds one batch's graph)
Objective = Callable[[nn.Module], Tensor | Iterable[Tensor]]


@dataclass
class PathAttribution:
    """The parts of ``f(end) - f(start)`` carried by each parameter.

    Attributes:
        parameters: per parameter name, its part of the change along the path (float64 sums).
        f_start, f_end: the objective at the two end points.
        points: gradients of f taken (the attribution's cost, in objective gradients).
        rule: the quadrature used.
        tolerance: the completeness the rule was asked for (an absolute |gap|; None for a fixed rule).
    """

    parameters: dict[str, float]
    f_start: float
    f_end: float
    points: int
    rule: str
    tolerance: float | None = None

    @property
    def tolerance_met(self) -> bool:
        return self.tolerance is None or self.completeness_gap <= self.tolerance

    @property
    def delta_f(self) -> float:
        return self.f_end - self.f_start

    @property
    def total(self) -> float:
        """The sum of the parts (equals ``delta_f`` up to the quadrature error)."""
        return math.fsum(self.parameters.values())

    @property
    def completeness_gap(self) -> float:
        """``|sum of parts - (f(end) - f(start))|``."""
        return abs(self.total - self.delta_f)

    @property
    def relative_gap(self) -> float:
        """The completeness gap over ``|f(end) - f(start)|`` (inf when f did not change and the gap is not 0)."""
        if self.delta_f == 0:
            return 0.0 if self.completeness_gap == 0 else math.inf
        return self.completeness_gap / abs(self.delta_f)

    def grouped(self, groups: Mapping[str, list[str]], rest: str | None = "other") -> dict[str, float]:
        """Sum the parts over named groups of parameter names; parameters in no group go to ``rest``.

        A parameter in several groups counts in each (groups should partition the parameters for
        the parts to add up to ``delta_f``).
        """
        totals = {name: math.fsum(self.parameters.get(p, 0.0) for p in members) for name, members in groups.items()}
        unknown = sorted({p for members in groups.values() for p in members} - set(self.parameters))
        if unknown:
            raise PhasescopeError(f"parameter group member {unknown[0]!r} is not a parameter of the model")
        covered = {p for members in groups.values() for p in members}
        leftover = [p for p in self.parameters if p not in covered]
        if leftover and rest is not None:
            totals[rest] = math.fsum(self.parameters[p] for p in leftover)
        return totals


def objective_pieces(objective: Objective, model: nn.Module) -> Iterator[Tensor]:
    """The scalar pieces of ``objective(model)`` (a lone tensor is one piece)."""
    value = objective(model)
    if isinstance(value, Tensor):
        value = (value,)
    for piece in value:
        if not isinstance(piece, Tensor) or piece.numel() != 1:
            shape = tuple(piece.shape) if isinstance(piece, Tensor) else type(piece).__name__
            raise PhasescopeError(f"the objective must give scalar tensors, got {shape}")
        yield piece.reshape(())


def objective_value(objective: Objective, model: nn.Module) -> float:
    """``f(model)`` as a float (the pieces summed in float64), without autograd."""
    with torch.no_grad():
        return math.fsum(float(piece) for piece in objective_pieces(objective, model))


class GradientAt:
    """f and its gradient (per parameter name) at given weights, on a model whose parameters it overwrites."""

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        self.model, self.objective = model, objective
        self.named = dict(model.named_parameters())  # tied parameters once

    def load(self, weights: Mapping[str, Tensor]) -> None:
        with torch.no_grad():
            for name, parameter in self.named.items():
                parameter.copy_(weights[name])

    def value(self, weights: Mapping[str, Tensor]) -> float:
        """f at ``weights``, without a gradient (one forward pass)."""
        self.load(weights)
        return objective_value(self.objective, self.model)

    def value_at_checkpoint(self, files: Iterable[Path | str]) -> float:
        """f at a checkpoint's saved weights (its safetensors ``files``), without a gradient."""
        saved = CheckpointWeights(files, self.model)
        return self.value({name: saved.read(name, parameter) for name, parameter in self.named.items()})

    def __call__(self, weights: Mapping[str, Tensor], t: float = 0.0) -> Point:
        """f and its gradient at ``weights`` (one forward and one backward pass), as the point ``t``."""
        self.load(weights)
        parameters = list(self.named.values())
        totals = [torch.zeros_like(p) for p in parameters]
        values = []
        for piece in objective_pieces(self.objective, self.model):
            values.append(float(piece.detach()))
            if not piece.requires_grad:
                continue
            for total, grad in zip(totals, torch.autograd.grad(piece, parameters, allow_unused=True)):
                if grad is not None:
                    total += grad
        return Point(t, math.fsum(values), dict(zip(self.named, totals)))


def _read(source: Mapping[str, Tensor], name: str, like: Tensor) -> Tensor:
    if isinstance(source, CheckpointWeights):
        return source.read(name, like)
    if name not in source:
        raise PhasescopeError(f"the end-point weights have no parameter {name!r}")
    tensor = source[name]
    if tensor.shape != like.shape:
        raise PhasescopeError(f"weight {name!r} has shape {tuple(tensor.shape)}, the model {tuple(like.shape)}")
    return tensor.to(device=like.device, dtype=like.dtype)


def chord_integrated_gradients(model: nn.Module, objective: Objective, start: Mapping[str, Tensor],
                               end: Mapping[str, Tensor], points: int = 32, rule: QuadratureRule = "midpoint",
                               progress: Callable[[], None] | None = None) -> PathAttribution:
    """Attribute ``f(end) - f(start)`` to each parameter along the straight chord between them.

    Integrated gradients in weight space with ``start`` as the baseline: the integral of
    ``grad f(theta(t)) . (theta_end - theta_start)`` over ``t`` in [0, 1] by a ``points``-point rule.
    Not the path training took (that is :func:`~phasescope.measures.replayed_attribution.replay_attribution`).

    Args:
        model: a model of the checkpoints' architecture; its parameters are overwritten along the
            path and hold ``end`` (exactly, re-read) on return, also after an error.
        objective: ``f(model)``, a scalar tensor differentiable in the parameters, or an iterable of
            scalar pieces summing to f (differentiated one at a time: memory for one piece's graph).
        start, end: weights by parameter name (a state dict, or lazily read
            :class:`~phasescope.measures.ablations.CheckpointWeights`); each is read at most twice.
        points: quadrature points (forward and backward passes).
        rule: ``"midpoint"`` (composite midpoint, error O(1/points^2)) or ``"gauss_legendre"``.
        progress: called after each quadrature point.

    Returns:
        The parts per parameter name (tied parameters under their first name), f at both ends.
    """
    nodes, weights = quadrature_nodes(points, rule)
    parameters = dict(model.named_parameters())  # tied parameters once
    requires_grad = {name: p.requires_grad for name, p in parameters.items()}
    delta: dict[str, Tensor] = {}
    sums_device = next(iter(parameters.values())).device
    totals: Tensor | None = None  # (parameters,) float64 on the device: no host sync per batch
    try:
        with torch.no_grad():
            for name, parameter in parameters.items():
                start_value = _read(start, name, parameter)
                delta[name] = _read(end, name, parameter) - start_value
                parameter.copy_(start_value)
                del start_value
            f_start = objective_value(objective, model)
        for parameter in parameters.values():
            parameter.requires_grad_(True)
        position = 0.0
        for node, weight in zip(nodes, weights):
            with torch.no_grad():
                for name, parameter in parameters.items():  # theta(t) reached by steps along delta
                    parameter.add_(delta[name], alpha=float(node - position))
            position = float(node)
            for piece in objective_pieces(objective, model):  # the dot product is linear: piece by piece
                if not piece.requires_grad:  # a piece that does not depend on the parameters
                    continue
                gradients = torch.autograd.grad(piece, list(parameters.values()), allow_unused=True)
                dots = [torch.zeros((), dtype=torch.float64, device=parameter.device) if gradient is None
                        else torch.sum(gradient * delta[name], dtype=torch.float64)
                        for (name, parameter), gradient in zip(parameters.items(), gradients)]
                sums = torch.stack([dot.to(sums_device) for dot in dots])
                totals = sums * float(weight) if totals is None else totals + sums * float(weight)
                del gradients, piece, dots
            if progress is not None:
                progress()
    finally:
        delta.clear()
        with torch.no_grad():
            for name, parameter in parameters.items():
                parameter.copy_(_read(end, name, parameter))
                parameter.requires_grad_(requires_grad[name])
    f_end = objective_value(objective, model)
    values = totals.tolist() if totals is not None else [0.0] * len(parameters)
    parts = dict(zip(parameters, values))
    return PathAttribution(parts, f_start, f_end, points, rule)
