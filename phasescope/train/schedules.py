"""Learning-rate and checkpoint schedules of language-model pretraining, as pure functions of the step.

Learning rate: warmup-stable-decay (WSD; Hu et al., "MiniCPM", arXiv 2404.06395; Hägele et al.,
"Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations", arXiv 2405.18392):
a linear warmup to the peak rate, a long constant phase, and a decay to a floor over the last share
of the steps. Because the rate is a pure function of the step, the scheduler's only state is the
step, and a resumed run recomputes it exactly.

Checkpoints: which steps to save, as one of

- ``every_tokens``: one checkpoint every N training tokens (the reference's 200 uniform
  checkpoints, one every ~185M tokens),
- ``every_steps``: one every N optimizer steps,
- ``log_linear``: Pythia's (Biderman et al., arXiv 2304.01373) steps 0, 1, 2, 4, ..., 512, then
  every 1000 steps: dense early, where most of the change happens, uniform later,
- ``steps``: an explicit list.

Every schedule also saves the final step, so that a finished run ends with its final weights.
A schedule that reaches beyond the step budget is a config error.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, model_validator

from phasescope.errors import PhasescopeError
from phasescope.run import StrictModel


class WSDSchedule(StrictModel):
    """Warmup-stable-decay learning rate around the peak ``lr`` of the training config."""

    warmup_steps: int = Field(100, ge=0)  # linear warmup from lr/warmup_steps to the peak
    decay_fraction: float = Field(0.2, ge=0, le=1)  # share of the last steps spent decaying (MiniCPM: ~10-20%)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # floor at the end of the decay, as a fraction of the peak
    decay_shape: Literal["linear", "cosine", "one_minus_sqrt"] = "linear"  # 1-sqrt: Hägele et al.'s best


def decay_steps(schedule: WSDSchedule, max_steps: int) -> int:
    """Number of final steps spent decaying (``decay_fraction`` of ``max_steps``, rounded)."""
    return int(round(schedule.decay_fraction * max_steps))


def check_wsd_fits(schedule: WSDSchedule, max_steps: int) -> None:
    """The warmup and the decay must fit in the step budget without overlapping."""
    decay = decay_steps(schedule, max_steps)
    if schedule.warmup_steps + decay > max_steps:
        raise PhasescopeError(f"lr_schedule: warmup_steps ({schedule.warmup_steps}) + decay steps ({decay} = "
                              f"decay_fraction {schedule.decay_fraction} x {max_steps}) exceed max_steps ({max_steps})")


def wsd_learning_rate(step: int, peak_lr: float, max_steps: int, schedule: WSDSchedule) -> float:
    """The learning rate of the update that takes the weights from ``step`` to ``step + 1``.

    Warmup: ``peak * (step + 1) / warmup_steps`` for ``step < warmup_steps`` (the first update is
    not wasted at lr 0). Stable: ``peak``. Decay over the last ``D = decay_fraction * max_steps``
    updates, with progress ``p = (step - (max_steps - D) + 1) / D`` in (0, 1]:
    ``floor + (peak - floor) * f(p)`` where ``f`` is ``1 - p`` (linear), ``(1 + cos(pi p)) / 2``
    (cosine) or ``1 - sqrt(p)``; the last update (``step = max_steps - 1``) uses the floor.
    """
    if not 0 <= step < max_steps:
        raise PhasescopeError(f"learning rate asked for update {step}; expected 0 <= step < max_steps ({max_steps})")
    floor = peak_lr * schedule.min_lr_ratio
    decay = decay_steps(schedule, max_steps)
    decay_start = max_steps - decay
    if step < schedule.warmup_steps and step < decay_start:
        return peak_lr * (step + 1) / schedule.warmup_steps
    if step < decay_start:
        return peak_lr
    progress = (step - decay_start + 1) / decay
    if schedule.decay_shape == "linear":
        remaining = 1.0 - progress
    elif schedule.decay_shape == "cosine":
        remaining = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        remaining = 1.0 - math.sqrt(progress)
    return floor + (peak_lr - floor) * remaining


# --- checkpoint schedules -------------------------------------------------------------------------


class EveryTokens(StrictModel):
    """One checkpoint each time training passes a multiple of ``tokens`` (plus step 0 and the end)."""

    schedule: Literal["every_tokens"] = "every_tokens"
    tokens: int = Field(ge=1)
    include_initial: bool = True  # also save step 0, the initialization


class EverySteps(StrictModel):
    """One checkpoint every ``every`` optimizer steps (plus the end)."""

    schedule: Literal["every_steps"] = "every_steps"
    every: int = Field(ge=1)
    include_initial: bool = True


class LogLinear(StrictModel):
    """Pythia's schedule: 0, 1, 2, 4, ..., ``log_until`` (powers of two), then every ``every`` steps."""

    schedule: Literal["log_linear"] = "log_linear"
    log_until: int = Field(512, ge=1)  # the last power-of-two step (Pythia: 512)
    every: int = Field(1000, ge=1)  # then one checkpoint every this many steps (Pythia: 1000)

    @model_validator(mode="after")
    def _power_of_two(self) -> LogLinear:
        if self.log_until & (self.log_until - 1):
            raise ValueError(f"log_until must be a power of two, got {self.log_until}")
        return self


class ExplicitSteps(StrictModel):
    """Exactly these steps (plus the end)."""

    schedule: Literal["steps"] = "steps"
    steps: list[int] = Field(min_length=1)

    @model_validator(mode="after")
    def _non_negative(self) -> ExplicitSteps:
        if any(step < 0 for step in self.steps):
            raise ValueError(f"steps must be >= 0, got {min(self.steps)}")
        return self

    @cached_property
    def step_set(self) -> frozenset[int]:
        return frozenset(self.steps)


CheckpointSchedule = Annotated[EveryTokens | EverySteps | LogLinear | ExplicitSteps, Field(discriminator="schedule")]


AnySchedule = EveryTokens | EverySteps | LogLinear | ExplicitSteps


def is_due(schedule: AnySchedule, step: int, tokens: int | None = None, previous_tokens: int | None = None) -> bool:
    """Whether ``schedule`` names ``step`` (the one home of every schedule's rule; a run's final step is
    added by :func:`checkpoint_steps`, and by a recorder when training ends).

    Args:
        schedule: one of the checkpoint schedules.
        step: optimizer updates done.
        tokens: training tokens seen after ``step`` (``every_tokens`` only).
        previous_tokens: tokens seen at the previous step (``every_tokens``); None when unknown (the first
            step after a restart): then the step is due only if ``tokens`` is a multiple itself.

    Raises:
        PhasescopeError: an ``every_tokens`` schedule without ``tokens``.
    """
    if isinstance(schedule, LogLinear):
        return step == 0 or (step <= schedule.log_until and step & (step - 1) == 0) or step % schedule.every == 0
    if isinstance(schedule, EverySteps):
        return step % schedule.every == 0 and (step > 0 or schedule.include_initial)
    if isinstance(schedule, ExplicitSteps):
        return step in schedule.step_set
    if tokens is None:
        raise PhasescopeError("an every_tokens schedule needs the tokens seen at each step")
    if step == 0 or tokens == 0:
        return schedule.include_initial
    if previous_tokens is None:
        return tokens % schedule.tokens == 0
    return tokens // schedule.tokens > previous_tokens // schedule.tokens


def checkpoint_steps(schedule: AnySchedule, max_steps: int, tokens_per_step: int) -> list[int]:
    """The sorted steps to checkpoint, the final step ``max_steps`` always included.

    Args:
        schedule: one of the checkpoint schedules.
        max_steps: the step budget (optimizer updates).
        tokens_per_step: training tokens per optimizer step (global batch size x sequence length).

    Raises:
        PhasescopeError: the schedule reaches beyond the step budget (a step after ``max_steps``,
            a token interval larger than the token budget, a period longer than the run).
    """
    budget_tokens = max_steps * tokens_per_step
    problems = []  # every reach beyond the budget, in one line
    if isinstance(schedule, EveryTokens) and schedule.tokens > budget_tokens:
        problems.append(f"checkpoints.tokens: one checkpoint every {schedule.tokens:,} tokens is beyond the token "
                        f"budget ({max_steps} steps x {tokens_per_step:,} = {budget_tokens:,})")
    if isinstance(schedule, EverySteps) and schedule.every > max_steps:
        problems.append(f"checkpoints.every: one checkpoint every {schedule.every} steps is beyond the step budget "
                        f"(max_steps {max_steps})")
    if isinstance(schedule, LogLinear):
        problems += [f"checkpoints.{name}: {getattr(schedule, name)} is beyond the step budget (max_steps {max_steps})"
                     for name in ("log_until", "every") if getattr(schedule, name) > max_steps]
    if isinstance(schedule, ExplicitSteps):
        beyond = [step for step in schedule.steps if step > max_steps]
        if beyond:
            listed = ", ".join(map(str, beyond[:5])) + (" ..." if len(beyond) > 5 else "")
            problems.append(f"checkpoints.steps: {'steps' if len(beyond) > 1 else 'step'} {listed} "
                            f"{'are' if len(beyond) > 1 else 'is'} beyond the step budget (max_steps {max_steps})")
    if problems:
        raise PhasescopeError("; ".join(problems))
    steps = {step for step in range(max_steps + 1)
             if is_due(schedule, step, step * tokens_per_step, (step - 1) * tokens_per_step if step else None)}
    return sorted(steps | {max_steps})
