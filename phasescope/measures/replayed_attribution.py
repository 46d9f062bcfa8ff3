"""Attribution along the training path: a change between two checkpoints split step by step.

The chord attribution (:func:`~phasescope.measures.attribution.path_attribution`) integrates the
gradient along the straight segment between two checkpoints. Training took another path: the
optimizer steps between them, which :func:`~phasescope.train.replay.replay_steps` re-runs exactly.
Along that path

    f(theta_B) - f(theta_A) = sum over steps s of  integral_0^1 grad f(theta_s + t delta_s) . delta_s dt,

and each step's integral is taken by a closed rule on the step's segment, whose end points are shared
with the neighbouring steps: Simpson's, ``(g(0) + 4 g(1/2) + g(1)) / 6 . delta_s`` with
``g(t) = grad f(theta_s + t delta_s)`` (error O(|delta_s|^5), two gradients of f per step), or the
trapezoid rule (O(|delta_s|^3), one per step), each composite over ``intervals`` sub-segments for
long steps. f is known at every step on the way, so every step's own gap ``|its parts - (f_{s+1} - f_s)|``
is reported beside the parts.

The same dot product, taken with the parts of the update instead of the whole (weight decay, the
momentum carried from before A, and each data label's momentum: see :mod:`phasescope.train.replay`),
splits the change by the training data that caused it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from phasescope.errors import PhasescopeError
from phasescope.measures.attribution import Objective, PathAttribution, objective_pieces
from phasescope.train.replay import BEFORE_PART, WEIGHT_DECAY_PART, DataDimension, replay_steps

StepRule = Literal["simpson", "trapezoid"]


def step_nodes(rule: StepRule, intervals: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in [0, 1] (from 0 to 1) and weights (summing to 1) of a composite closed rule on one step."""
    if intervals < 1:
        raise PhasescopeError(f"a step's rule needs at least one interval, got {intervals}")
    if rule == "trapezoid":
        weights = np.full(intervals + 1, 1.0)
        weights[[0, -1]] = 0.5
        return np.linspace(0, 1, intervals + 1), weights / intervals
    if rule == "simpson":
        weights = np.tile([2.0, 4.0], intervals)
        weights = np.append(weights, 1.0)
        weights[0] = 1.0
        return np.linspace(0, 1, 2 * intervals + 1), weights / (6 * intervals)
    raise PhasescopeError(f"a step's rule must be 'simpson' or 'trapezoid', got {rule!r}")


@dataclass
class ReplayAttribution(PathAttribution):
    """:class:`PathAttribution` along the replayed steps, with the split by data.

    Attributes:
        data: per part of the update (``weight_decay``, ``before``, ``language=..``, ``kind=..``), its
            share of the change; each data dimension's labels with the two others sum to ``total``.
        f_steps: f at every step from A to B (``points`` = their number).
        step_gaps: per step, ``|sum of its parts - (f_{s+1} - f_s)|``: the trapezoid rule's error.
        steps: the replayed steps, ``(from_step, to_step)``.
    """

    data: dict[str, float] = field(default_factory=dict)
    f_steps: list[float] = field(default_factory=list)
    step_gaps: list[float] = field(default_factory=list)
    steps: tuple[int, int] = (0, 0)

    def data_total(self, dimension: str) -> float:
        """One data dimension's parts with ``weight_decay`` and ``before``, summed (``total`` up to rounding)."""
        return math.fsum(value for label, value in self.data.items()
                         if label in (WEIGHT_DECAY_PART, BEFORE_PART) or label.startswith(f"{dimension}="))


class _GradientAt:
    """f and its gradient (per parameter) at given weights, on a model whose parameters it overwrites."""

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        self.model, self.objective = model, objective
        self.named = dict(model.named_parameters())

    def __call__(self, weights: dict[str, Tensor]) -> tuple[float, dict[str, Tensor]]:
        with torch.no_grad():
            for name, parameter in self.named.items():
                parameter.copy_(weights[name])
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
        return math.fsum(values), dict(zip(self.named, totals))


def replay_attribution(run_path: Path | str, objective: Objective, from_step: int, to_step: int, model: nn.Module,
                       split_by: Sequence[DataDimension] = (), rule: StepRule = "simpson", intervals: int = 1,
                       device: str = "cpu", tolerance: float = 0.0,
                       progress: Callable[[], None] | None = None) -> ReplayAttribution:
    """Attribute ``f(theta_to) - f(theta_from)`` to each parameter (and to data) along the replayed steps.

    Args:
        run_path: a ``phasescope train`` language-model run.
        objective: ``f(model)`` as for :func:`~phasescope.measures.attribution.path_attribution`.
        from_step, to_step: two checkpoints of the run.
        model: a model of the run's architecture on which f is evaluated; its dtype is the attribution's
            (float64 for sums exact to ~1e-12); its parameters hold ``theta_to`` on return.
        split_by: data dimensions to split the change by (``language``, ``kind``).
        rule, intervals: the rule on each step's segment (see the module docstring): gradients of f per
            step are ``intervals`` (trapezoid) or ``2 intervals`` (Simpson).
        device, tolerance: of the replay (:func:`~phasescope.train.replay.replay_steps`).
        progress: called after each replayed step.

    Raises:
        PhasescopeError: from the replay (no resume state, a gap, a changed config, a missed checkpoint).
    """
    nodes, weights = step_nodes(rule, intervals)
    gradient_at = _GradientAt(model, objective)
    names = list(gradient_at.named)
    dtype = next(model.parameters()).dtype
    parts = torch.zeros(len(names), dtype=torch.float64)
    data: dict[str, float] = {}
    f_steps: list[float] = []
    gaps: list[float] = []
    at_start: tuple[float, dict[str, Tensor]] | None = None  # f and its gradient at the step's start
    for replayed in replay_steps(run_path, from_step, to_step, split_by, device, tolerance):
        before = {name: replayed.before[name].to(dtype) for name in names}
        delta = {name: replayed.after[name].to(dtype) - before[name] for name in names}
        if at_start is None:
            at_start = gradient_at(before)
            f_steps.append(at_start[0])
        weighted = {name: at_start[1][name] * float(weights[0]) for name in names}  # sum_j w_j g(t_j)
        for node, weight in zip(nodes[1:-1], weights[1:-1]):
            _, gradient = gradient_at({name: before[name] + float(node) * delta[name] for name in names})
            for name in names:
                weighted[name] += gradient[name] * float(weight)
        at_end = gradient_at({name: replayed.after[name].to(dtype) for name in names})
        for name in names:
            weighted[name] += at_end[1][name] * float(weights[-1])
        step_parts = torch.stack([torch.sum(weighted[name] * delta[name], dtype=torch.float64).cpu() for name in names])
        parts += step_parts
        for label, update in replayed.update_parts.items():
            share = math.fsum(float(torch.sum(weighted[name] * update[name].to(dtype), dtype=torch.float64))
                              for name in names)
            data[label] = data.get(label, 0.0) + share
        gaps.append(abs(math.fsum(step_parts.tolist()) - (at_end[0] - at_start[0])))
        f_steps.append(at_end[0])
        at_start = at_end
        if progress is not None:
            progress()
    return ReplayAttribution(dict(zip(names, parts.tolist())), f_steps[0], f_steps[-1], len(f_steps),
                             f"replay_{rule}", data=data, f_steps=f_steps, step_gaps=gaps, steps=(from_step, to_step))
