"""Attribution along the training path: a change between two checkpoints split step by step.

Training went from checkpoint A to checkpoint B by optimizer steps, which
:func:`~phasescope.train.replay.replay_steps` re-runs exactly (bitwise on the CPU). Along that path

    f(theta_B) - f(theta_A) = sum over steps s of  G_s . delta_s,
    G_s = integral_0^1 grad f(theta_s + t delta_s) dt      (the step's mean gradient),

ExPLAIND's decomposition (arXiv 2505.20076). Each step's ``G_s`` comes from a rule in
:mod:`phasescope.measures.quadrature`. The default, ``adaptive``, makes completeness a contract: the
interval's tolerance ``max(rtol |f(B) - f(A)|, atol)`` is shared out evenly over the steps: after step
``s`` of ``n`` the running signed sum of the steps' exact gaps must lie within ``(s + 1) / n`` of the
tolerance, and a step is refined (trapezoid, Simpson, then halves) only where its own gap would take
the running sum outside that envelope, so the parts sum to the change within the tolerance unless the
budget of objective gradients runs out, which the result says. Gaps of opposite signs offset each
other, as they do in the sum of the parts; ``step_gap_sum`` (the sum of |gaps|) says how much. The
steps' end points are shared, so a step whose trapezoid meets its share costs one gradient of f.
The fixed rules (``midpoint``, ExPLAIND's, or ``gauss_legendre``, ``points`` gradients per step) are
kept for comparison.

The same mean gradient, dotted with the parts of the update instead of the whole (weight decay, the
momentum carried from before A, and each data label's momentum: see :mod:`phasescope.train.replay`),
splits the change by the training data that caused it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from torch import nn

from phasescope.errors import PhasescopeError
from phasescope.measures.attribution import GradientAt, Objective, PathAttribution
from phasescope.measures.quadrature import (
    GradientBudget,
    Point,
    adaptive_mean_gradient,
    dot,
    fixed_mean_gradient,
)
from phasescope.train.data_split import BEFORE_PART, WEIGHT_DECAY_PART, DataDimension
from phasescope.train.replay import replay_steps, saved_weight_files

StepRule = Literal["adaptive", "midpoint", "gauss_legendre"]
STEP_RULES: tuple[str, ...] = ("adaptive", "midpoint", "gauss_legendre")
GRADIENTS_PER_STEP = 8  # the default budget: 8 objective gradients per replayed step on average
STEP_SHARE_LIMIT = 2  # the most a step may take, in multiples of its even share of the budget left


@dataclass
class ReplayAttribution(PathAttribution):
    """:class:`PathAttribution` along the replayed steps, with the split by data.

    Attributes:
        data: per part of the update (``weight_decay``, ``before``, ``language=..``, ``kind=..``), its
            share of the change; each data dimension's labels with the two others sum to ``total``.
        f_steps: f at every step from A to B.
        step_gaps: per step, ``sum of its parts - (f_{s+1} - f_s)`` (signed: the rule's exact error).
        step_gradients: per step, the objective gradients it took (its end point's included).
        steps: the replayed steps, ``(from_step, to_step)``.
        split_residual: max over steps and parameters of |update - sum of a dimension's parts| (rounding).
        forwards: objective evaluations without a gradient (f at B before the replay; step ends of a fixed rule).
    """

    data: dict[str, float] = field(default_factory=dict)
    f_steps: list[float] = field(default_factory=list)
    step_gaps: list[float] = field(default_factory=list)
    step_gradients: list[int] = field(default_factory=list)
    steps: tuple[int, int] = (0, 0)
    split_residual: float = 0.0
    forwards: int = 0
    end_point: Point | None = None  # f and its gradient at B, for the next interval to start from

    def data_total(self, dimension: str) -> float:
        """One data dimension's parts with ``weight_decay`` and ``before``, summed (``total`` up to rounding)."""
        return math.fsum(value for label, value in self.data.items()
                         if label in (WEIGHT_DECAY_PART, BEFORE_PART) or label.startswith(f"{dimension}="))

    @property
    def step_gap_sum(self) -> float:
        """The sum of the steps' |gaps|: the completeness gap if no two steps' errors offset each other."""
        return math.fsum(abs(gap) for gap in self.step_gaps)

    @property
    def gradients_per_step(self) -> float:
        return self.points / max(1, self.steps[1] - self.steps[0])


def completeness_tolerance(delta_f: float, rtol: float, atol: float) -> float:
    """The accepted |sum of parts - change|: ``max(rtol |delta_f|, atol)``."""
    return max(rtol * abs(delta_f), atol)


def check_budget(steps: int, max_gradients: int | None, rule: StepRule = "adaptive", points: int = 1) -> int | None:
    """The interval's budget of objective gradients, refused with one line when it cannot pay for the rule once."""
    if rule not in STEP_RULES:
        raise PhasescopeError(f"a step's rule must be one of {', '.join(STEP_RULES)}, got {rule!r}")
    if rule != "adaptive":
        return None
    needed = steps + 1  # the trapezoid on every step: a gradient at each step's end and at the start
    if max_gradients is not None and max_gradients < needed:
        raise PhasescopeError(f"max_gradients {max_gradients} is too small for {steps} replayed steps: the adaptive "
                              f"rule needs at least steps + 1 = {needed} objective gradients")
    return max_gradients


def replay_attribution(run_path: Path | str, objective: Objective, from_step: int, to_step: int, model: nn.Module,
                       split_by: Sequence[DataDimension] = (), rule: StepRule = "adaptive", rtol: float = 1e-3,
                       atol: float = 1e-6, max_gradients: int | None = None, points: int = 10, device: str = "cpu",
                       tolerance: float = 0.0, progress: Callable[[], None] | None = None,
                       start: Point | None = None) -> ReplayAttribution:
    """Attribute ``f(theta_to) - f(theta_from)`` to each parameter (and to data) along the replayed steps.

    Args:
        run_path: a ``phasescope train`` language-model run.
        objective: ``f(model)``, a scalar tensor or scalar pieces summing to f (see
            :data:`~phasescope.measures.attribution.Objective`); its precision is the model's.
        from_step, to_step: two checkpoints of the run.
        model: a model of the run's architecture on which f is evaluated; its dtype is the attribution's
            (float64: f and its gradients in float64); its parameters hold ``theta_to`` on return.
        split_by: data dimensions to split the change by (``language``, ``kind``).
        rule: ``adaptive`` (the tolerance below), or a fixed ``points``-point rule on every step.
        rtol, atol: the completeness asked of ``adaptive``: |sum of parts - change| <= max(rtol |change|, atol).
        max_gradients: the most objective gradients ``adaptive`` may take over the interval (default
            ``8 x steps``); past it, the remaining steps take the trapezoid and the result reports its gap.
        points: gradients per step of a fixed rule.
        device, tolerance: of the replay (:func:`~phasescope.train.replay.replay_steps`).
        progress: called after each replayed step.
        start: f and its gradient at A, when an earlier interval ended there (the ``end_point`` of its
            result, at bitwise the same weights): the interval then takes one gradient fewer.

    Raises:
        PhasescopeError: a tolerance <= 0, a budget below one gradient per step, or from the replay (no
            resume state, a gap, a changed config, a missed checkpoint).
    """
    if not rtol > 0 or not atol > 0:
        raise PhasescopeError(f"rtol and atol must be > 0, got rtol={rtol:g}, atol={atol:g}")
    steps = to_step - from_step
    budget = GradientBudget(check_budget(steps, max_gradients if max_gradients is not None
                                         else GRADIENTS_PER_STEP * steps, rule, points))
    gradient_at = GradientAt(model, objective)
    names = list(gradient_at.named)
    dtype = next(model.parameters()).dtype
    forwards = 0
    allowed = None
    if rule == "adaptive":  # f at B from the saved checkpoint (the replay reaches it bitwise), for the tolerance
        f_end = gradient_at.value_at_checkpoint(saved_weight_files(run_path, to_step))
        forwards += 1
    parts = dict.fromkeys(names, 0.0)
    data: dict[str, float] = {}
    f_steps: list[float] = []
    gaps: list[float] = []
    gradients: list[int] = []
    residual = 0.0
    if start is not None and rule != "adaptive":
        start = None  # a fixed rule needs f at A only
    for index, replayed in enumerate(replay_steps(run_path, from_step, to_step, split_by, device, tolerance)):
        before = {name: replayed.before[name].to(dtype) for name in names}
        after = {name: replayed.after[name].to(dtype) for name in names}
        delta = {name: after[name] - before[name] for name in names}

        def evaluate(t: float, before=before, delta=delta) -> Point:
            return gradient_at({name: before[name] + t * delta[name] for name in names}, t)

        spent = budget.spent
        if rule == "adaptive":
            if not f_steps:
                if start is None:
                    budget.spend()
                    start = gradient_at(before, 0.0)
                start = Point(0.0, start.value, start.gradient)
                allowed = completeness_tolerance(f_end - start.value, rtol, atol)
                f_steps.append(start.value)
            budget.spend()
            end = gradient_at(after, 1.0)
            budget.reserved = steps - index - 1  # one gradient for each later step's end point
            # the running signed gap must stay within the tolerance's even share of the steps so far
            envelope = allowed * (index + 1) / steps
            # a step may take up to twice its even share of what is left, so that a few hard steps
            # cannot leave the rest with nothing
            limit = STEP_SHARE_LIMIT * (budget.left - budget.reserved) / (steps - index)
            integral = adaptive_mean_gradient(evaluate, start, end, delta, envelope, budget, limit,
                                              carried=math.fsum(gaps))
        else:
            if start is None:
                start = Point(0.0, gradient_at.value(before), {})
                forwards += 1
                f_steps.append(start.value)
            end = Point(1.0, gradient_at.value(after), {})
            forwards += 1
            integral = fixed_mean_gradient(evaluate, start, end, delta, points, rule, budget)
        mean = integral.mean_gradient
        for name in names:
            parts[name] += dot({name: mean[name]}, {name: delta[name]})
        for label, update in replayed.update_parts.items():
            data[label] = data.get(label, 0.0) + dot(mean, update)
        for dimension in split_by:
            residual = max(residual, replayed.split_residual(dimension))
        gaps.append(integral.gap)
        gradients.append(budget.spent - spent)
        f_steps.append(end.value)
        start = Point(0.0, end.value, end.gradient)
        if progress is not None:
            progress()
    return ReplayAttribution(parts, f_steps[0], f_steps[-1], budget.spent, f"replay_{rule}", tolerance=allowed,
                             data=data, f_steps=f_steps, step_gaps=gaps, step_gradients=gradients,
                             steps=(from_step, to_step), split_residual=residual, forwards=forwards,
                             end_point=Point(1.0, start.value, start.gradient) if rule == "adaptive" else None)
