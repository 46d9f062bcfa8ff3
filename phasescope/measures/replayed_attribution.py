"""Attribution along the training path: a change between two checkpoints split step by step.

The chord attribution (:func:`~phasescope.measures.attribution.path_attribution`) integrates the
gradient along the straight segment between two checkpoints. Training took another path: the
optimizer steps between them, which :func:`~phasescope.train.replay.replay_steps` re-runs exactly.
Along that path

    f(theta_B) - f(theta_A) = sum over steps s of  integral_0^1 grad f(theta_s + t delta_s) . delta_s dt,

and each step's integral is taken by the trapezoid rule, ``(grad f(theta_s) + grad f(theta_{s+1})) / 2 . delta_s``,
whose error is O(|delta_s|^3): one gradient of f per step (each shared by two steps), and f at every
step on the way, so every step's own gap ``|trapezoid - (f_{s+1} - f_s)|`` is known and reported.

The same dot product, taken with the parts of the update instead of the whole (weight decay, the
momentum carried from before A, and each data label's momentum: see :mod:`phasescope.train.replay`),
splits the change by the training data that caused it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from phasescope.measures.attribution import Objective, PathAttribution, objective_pieces
from phasescope.train.replay import BEFORE_PART, WEIGHT_DECAY_PART, DataDimension, replay_steps

REPLAY_RULE = "replay_trapezoid"


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
                       split_by: Sequence[DataDimension] = (), device: str = "cpu", tolerance: float = 0.0,
                       progress: Callable[[], None] | None = None) -> ReplayAttribution:
    """Attribute ``f(theta_to) - f(theta_from)`` to each parameter (and to data) along the replayed steps.

    Args:
        run_path: a ``phasescope train`` language-model run.
        objective: ``f(model)`` as for :func:`~phasescope.measures.attribution.path_attribution`.
        from_step, to_step: two checkpoints of the run.
        model: a model of the run's architecture on which f is evaluated; its dtype is the attribution's
            (float64 for sums exact to ~1e-12); its parameters hold ``theta_to`` on return.
        split_by: data dimensions to split the change by (``language``, ``kind``).
        device, tolerance: of the replay (:func:`~phasescope.train.replay.replay_steps`).
        progress: called after each replayed step.

    Raises:
        PhasescopeError: from the replay (no resume state, a gap, a changed config, a missed checkpoint).
    """
    gradient_at = _GradientAt(model, objective)
    names = list(gradient_at.named)
    parts = torch.zeros(len(names), dtype=torch.float64)
    data: dict[str, float] = {}
    f_steps: list[float] = []
    gaps: list[float] = []
    previous: tuple[float, dict[str, Tensor]] | None = None
    dtype = next(model.parameters()).dtype
    for replayed in replay_steps(run_path, from_step, to_step, split_by, device, tolerance):
        if previous is None:
            previous = gradient_at(replayed.before)
            f_steps.append(previous[0])
        current = gradient_at(replayed.after)
        mean_gradient = {name: (previous[1][name] + current[1][name]) / 2 for name in names}
        step_parts = torch.stack([
            torch.sum(mean_gradient[name] * (replayed.after[name].to(dtype) - replayed.before[name].to(dtype)),
                      dtype=torch.float64).cpu() for name in names])
        parts += step_parts
        for label, update in replayed.update_parts.items():
            share = math.fsum(float(torch.sum(mean_gradient[name] * update[name].to(dtype), dtype=torch.float64))
                              for name in names)
            data[label] = data.get(label, 0.0) + share
        gaps.append(abs(math.fsum(step_parts.tolist()) - (current[0] - previous[0])))
        f_steps.append(current[0])
        previous = current
        if progress is not None:
            progress()
    return ReplayAttribution(dict(zip(names, parts.tolist())), f_steps[0], f_steps[-1], len(f_steps), REPLAY_RULE,
                             data=data, f_steps=f_steps, step_gaps=gaps, steps=(from_step, to_step))
