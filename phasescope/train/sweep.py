"""Learning-rate sweeps of full-batch gradient descent, trained as one vectorized computation.

Every member (learning rate x seed) starts from the initialization of its seed, so all learning
rates share theta_0. The members' parameters are stacked and updated together with ``vmap``;
members that reached the loss threshold or diverged are masked and keep their final parameters.
Gradient flow from each seed's theta_0 gives s_GF and the critical rate eta_c = 2 / s_GF.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from phasescope.curvature import SharpnessResult, sharpness
from phasescope.data import DataConfig, SupervisedData, load_supervised_data
from phasescope.device import DeviceName, resolve_device
from phasescope.models import ModelConfig, model_checkpoint_config
from phasescope.models.losses import get_loss
from phasescope.models.norms import stacked_norms
from phasescope.run import MetricStore, RunDir, StrictModel, dump_config, save_checkpoint
from phasescope.train.flow import GradientFlowConfig, gradient_flow
from phasescope.train.functional import (
    DiagonalObjective,
    StackedObjective,
    member,
    stack_parameters,
    stacked_accuracy,
)
from phasescope.train.gd import seeded_model
from phasescope.train.status import RunStatus, run_status, status_rows


class LearningRateGrid(StrictModel):
    """Learning rates: ``num`` values from ``min`` to ``max`` (log or linear spacing), or ``values``."""

    min: float | None = Field(None, gt=0)
    max: float | None = Field(None, gt=0)
    num: int = Field(16, ge=1)
    spacing: Literal["log", "linear"] = "log"
    values: list[float] | None = None  # an explicit list instead of min/max/num

    @model_validator(mode="after")
    def _check_range(self) -> LearningRateGrid:
        if self.values is not None:
            if not self.values:
                raise ValueError("values is empty: give at least one learning rate")
            if any(not v > 0 for v in self.values):
                raise ValueError(f"every learning rate must be positive, got {self.values}")
            return self
        if self.min is None or self.max is None:
            raise ValueError("give either values or both min and max")
        if self.min > self.max or (self.min == self.max and self.num > 1):
            raise ValueError(f"the range is empty or inverted: min ({self.min}) must be below max ({self.max})")
        return self

    def resolve(self) -> list[float]:
        """The learning rates, ascending."""
        if self.values is not None:
            return sorted(self.values)
        if self.num == 1:
            return [self.min]
        if self.spacing == "log":
            lo, hi = math.log(self.min), math.log(self.max)
            return [math.exp(lo + (hi - lo) * i / (self.num - 1)) for i in range(self.num)]
        return [self.min + (self.max - self.min) * i / (self.num - 1) for i in range(self.num)]


class SweepTrainConfig(StrictModel):
    max_steps: int = Field(10_000, ge=1)  # per member
    loss_threshold: float = Field(0.05, gt=0)  # epsilon: a member stops once its training loss is below it
    divergence_bound: float = Field(1e4, gt=0)  # a loss above this (or non-finite) counts as diverged
    record_every: int = Field(50, ge=1)  # steps between rows of losses, accuracies and norms
    sharpness_every: int = Field(500, ge=0)  # steps between sharpness measurements (0: only at the stop)
    sharpness_tol: float = Field(1e-3, gt=0)  # Lanczos residual tolerance
    checkpoint_every: int = Field(1000, ge=1)  # steps between checkpoints of the stacked parameters
    chunk_size: int | None = Field(None, ge=1)  # examples per chunk of the full-batch gradient (memory only)


class RegimeCriteria(StrictModel):
    """How a member's regime is read off its trajectory (``classify_regimes``).

    Defaults, and why:
    - ``flow_rtol = 0.05``: GD at rate eta follows a modified gradient flow whose loss differs from
      L by ``eta/4 ||grad L||^2`` (Barrett and Dherin, ICLR 2021), so well below eta_c its final
      sharpness and l1 norm drift from gradient flow's by O(eta), a few percent; 5% holds that drift
      and the Lanczos tolerance (1e-4 to 1e-3) and is far below the gap between s_GF and 2/eta that
      the edge of stability opens once eta exceeds eta_c by more than 5%.
    - ``band = 1.25``: at the edge of stability the sharpness "hovers at, or just above, 2/eta" with
      oscillations of 10-20% (Cohen et al., ICLR 2021, figures 1-2; self-stabilization around 2/eta,
      Damian et al., ICLR 2023); a factor 1.25 either way, symmetric on the log axes the report draws,
      holds those oscillations. Below the band, GD converged where it is stable with room to spare.
    - ``window = 0.25``: the last quarter of the member's steps, so that the edge of stability must
      persist, not be touched once during a catapult; at least the sample at the stop is in it.
    """

    flow_rtol: float = Field(0.05, gt=0)  # flow-aligned: final sharpness and l1 within this of the flow's
    band: float = Field(1.25, gt=1)  # edge of stability: sharpness within [2/eta / band, 2/eta * band]
    window: float = Field(0.25, gt=0, le=1)  # ... at every sample of this last share of the member's steps


class SweepConfig(StrictModel):
    """A learning-rate sweep: for each seed's theta_0, full-batch GD at every rate, plus gradient flow."""

    kind: Literal["sweep"] = "sweep"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    device: DeviceName = "auto"
    data: DataConfig
    model: ModelConfig
    loss: Literal["mse", "cross_entropy"] = "mse"
    lrs: LearningRateGrid
    train: SweepTrainConfig = SweepTrainConfig()
    flow: GradientFlowConfig = GradientFlowConfig()
    regimes: RegimeCriteria = RegimeCriteria()  # how the report reads each member's regime off its trajectory
    # vmap over the grid (closed-form batched updates for diagonal networks with MSE); False loops over
    # members with autograd, the reference path: same numbers, slower
    vectorized: bool = True


@dataclass
class MemberOutcome:
    lr: float
    seed: int
    status: RunStatus
    steps: int
    final_train_loss: float


def initial_models(config: SweepConfig, data: SupervisedData, device: torch.device) -> dict[int, nn.Module]:
    """theta_0 of each seed: the same for every learning rate."""
    return {seed: seeded_model(config.model, seed, data).to(device) for seed in config.seeds}


def run_sweep(config: SweepConfig, run_path: Path | str,
              on_progress: Callable[[str, int, str], None] | None = None) -> list[MemberOutcome]:
    """Train every (learning rate, seed) member and gradient flow; write checkpoints and metrics.

    Args:
        on_progress: called as ``on_progress(phase, advance, info)`` (progress bars); phase is
            "flow" (a flow step), "sweep" (a GD step) or "member" (a member stopped).
    """
    device = resolve_device(config.device)
    data = load_supervised_data(config.data, config.loss).to(device)
    loss_fn = get_loss(config.loss)
    seeds_models = initial_models(config, data, device)
    run = RunDir.create(run_path, dump_config(config), exist_ok=False)
    store = MetricStore(run)
    if config.flow.enabled:  # one shard for every seed's flow
        rows = [row for seed, model in seeds_models.items()
                for row in flow_rows(model, loss_fn, data, config, seed, on_progress)]
        store.write_shard(0, "gradient_flow", config.flow, rows)
    return _train_members(config, run, store, data, loss_fn, seeds_models, on_progress)


def sweep_finished(path: Path | str, members: int) -> bool:
    """Whether the sweep run at ``path`` ran all ``members`` to their stop (and its flow, if enabled)."""
    path = Path(path)
    if not (path / "config.yaml").is_file():
        return False
    run = RunDir.open(path)
    store = MetricStore(run)
    rows = store.read("sweep")
    if rows.empty or len(rows[rows.metric == "steps"]) < members:
        return False
    flow_enabled = bool(run.read_config_dict().get("flow", {}).get("enabled", True))
    return not flow_enabled or not store.read("gradient_flow").empty


def flow_rows(model: nn.Module, loss_fn, data: SupervisedData, config: SweepConfig, seed: int,
              on_progress=None) -> list[dict]:
    """Gradient flow from ``model`` as tidy rows: time, loss and sharpness along the way (``step`` is
    the integrator's step), and the summary: s_gf, eta_c, final sharpness and norms."""
    result = gradient_flow(model, loss_fn, data.train_inputs, data.train_targets, config.train.loss_threshold,
                           config.flow, on_step=None if on_progress is None else
                           lambda t, loss: on_progress("flow", 0, f"seed {seed}: t={t:.3g} loss={loss:.4g}"))
    rows = []
    for step, (time, loss) in enumerate(zip(result.times, result.losses)):
        rows += [{"step": step, "metric": "time", "value": time, "seed": seed},
                 {"step": step, "metric": "loss", "value": loss, "seed": seed}]
    rows += [{"step": step, "metric": "sharpness", "value": value, "seed": seed}
             for step, value in zip(result.sharpness_steps, result.sharpness_values)]
    final = result.final_params
    l1, l2 = float(final.abs().sum()), float(final.norm())
    summary = {"s_gf": result.max_sharpness, "eta_c": result.critical_learning_rate,
               "final_sharpness": result.final_sharpness, "final_l1": l1, "final_l2": l2,
               "final_time": result.times[-1], "final_loss": result.losses[-1],
               "reached_threshold": float(result.reached_threshold), "gradients": float(result.num_gradients),
               "s_gf_refined": result.refined_max_sharpness, "s_gf_refinement_change": result.refinement_change}
    rows += [{"metric": name, "value": value, "seed": seed, "subset": "summary"} for name, value in summary.items()]
    return rows


class _Members:
    """The members of a sweep as they train: stacked parameters, which are still running, their outcomes,
    warm starts for their sharpness, and the metric rows not yet written to a shard."""

    def __init__(self, config: SweepConfig, data: SupervisedData, loss_fn, seeds_models: dict[int, nn.Module]):
        self.config, self.train, self.data, self.loss_fn = config, config.train, data, loss_fn
        self.members = [(lr, seed) for seed in config.seeds for lr in config.lrs.resolve()]
        self.params = stack_parameters([seeds_models[seed] for _, seed in self.members])
        device = next(iter(self.params.values())).device
        self.lrs = torch.tensor([lr for lr, _ in self.members], device=device)
        self.active = torch.ones(len(self.members), dtype=torch.bool, device=device)
        self.outcomes: list[MemberOutcome | None] = [None] * len(self.members)
        self.eigenvectors: list[SharpnessResult | None] = [None] * len(self.members)
        self.rows: list[dict] = []
        # one module to hold a single member's parameters for the curvature engine, written before each use
        self.probe = copy.deepcopy(next(iter(seeds_models.values())))

    def add_rows(self, i: int, step: int, values: dict[str, float]) -> None:
        lr, seed = self.members[i]
        self.rows.extend({"step": step, "metric": name, "value": value, "lr": lr, "seed": seed}
                         for name, value in values.items())

    def record(self, step: int, which: Tensor, objective, losses: Tensor, outputs: Tensor) -> None:
        """Losses, accuracies and norms of the members ``which`` (a mask)."""
        data = self.data
        test_losses, test_outputs = objective.evaluate(self.params, data.test_inputs, data.test_targets)
        l1, l2 = stacked_norms(self.params)
        values = {"train_loss": losses, "train_accuracy": stacked_accuracy(outputs.detach(), data.train_targets),
                  "test_loss": test_losses, "test_accuracy": stacked_accuracy(test_outputs, data.test_targets),
                  "l1": l1, "l2": l2}
        for i in which.nonzero().flatten().tolist():
            self.add_rows(i, step, {name: float(v[i]) for name, v in values.items()})

    def measure_sharpness(self, i: int, step: int) -> None:
        """Member ``i``'s sharpness, warm-started from its previous eigenvector."""
        own = member(self.params, i)
        with torch.no_grad():
            for name, p in self.probe.named_parameters():
                p.copy_(own[name])
        result = sharpness(self.probe, self.loss_fn, (self.data.train_inputs, self.data.train_targets),
                           tol=self.train.sharpness_tol, v0=self.eigenvectors[i], chunk_size=self.train.chunk_size)
        self.eigenvectors[i] = result
        self.add_rows(i, step, {"sharpness": result.top, "sharpness_hvps": float(result.num_hvps)})

    def stop(self, i: int, step: int, loss: float) -> MemberOutcome:
        """Member ``i`` stops at ``step``: its outcome, and its steps and status as rows."""
        train = self.train
        lr, seed = self.members[i]
        status = run_status(loss, step, train.loss_threshold, train.max_steps, train.divergence_bound)
        self.outcomes[i] = MemberOutcome(lr, seed, status, step, loss)
        self.add_rows(i, step, dict([("steps", float(step)), *status_rows(status)]))
        return self.outcomes[i]

    def descend(self, grads: dict[str, Tensor]) -> None:
        """One GD step of every running member at its own rate; stopped members keep their parameters."""
        with torch.no_grad():
            for name, p in self.params.items():
                shape = (-1,) + (1,) * (p.ndim - 1)
                update = p - self.lrs.view(shape).to(p.dtype) * grads[name]
                self.params[name] = torch.where(self.active.view(shape), update, p)

    def write_checkpoint(self, run: RunDir, store: MetricStore, step: int, model_config: dict) -> None:
        """The parameters at ``step`` with each member's status, then every row up to it as one shard."""
        status = [{"lr": lr, "seed": seed, "status": "running" if o is None else o.status,
                   "steps": step if o is None else o.steps} for (lr, seed), o in zip(self.members, self.outcomes)]
        save_checkpoint(run, step, self.params, {**model_config, "members": len(self.members)},
                        train_meta={"members": status})
        store.write_shard(step, "sweep", self.config, self.rows)
        self.rows.clear()


def _objective(config: SweepConfig, data: SupervisedData, loss_fn, template: nn.Module):
    """Batched losses and gradients of all members: closed form for diagonal networks under MSE."""
    if config.vectorized and config.model.arch == "diagonal" and config.loss == "mse":
        return DiagonalObjective(config.model.parameterization, data.train_inputs, data.train_targets)
    return StackedObjective(copy.deepcopy(template), loss_fn, data.train_inputs, data.train_targets,
                            config.train.chunk_size, vectorized=config.vectorized)


def _train_members(config: SweepConfig, run: RunDir, store: MetricStore, data: SupervisedData, loss_fn,
                   seeds_models: dict[int, nn.Module], on_progress) -> list[MemberOutcome]:
    train = config.train
    state = _Members(config, data, loss_fn, seeds_models)
    objective = _objective(config, data, loss_fn, next(iter(seeds_models.values())))
    model_config = model_checkpoint_config(config.model, data.input_shape, data.num_outputs)
    for step in range(train.max_steps + 1):
        grads, losses, outputs = objective.gradient(state.params)
        active = state.active
        diverged = active & (~torch.isfinite(losses) | (losses > train.divergence_bound))
        done = active & ~diverged & ((losses < train.loss_threshold) | (step == train.max_steps))
        stopping = diverged | done
        record = active & ((step % train.record_every == 0) | stopping)
        if record.any():
            state.record(step, record, objective, losses, outputs)
        measure_now = train.sharpness_every > 0 and step % train.sharpness_every == 0
        for i in (active & ~diverged).nonzero().flatten().tolist():
            if measure_now or bool(done[i]):
                state.measure_sharpness(i, step)
        for i in stopping.nonzero().flatten().tolist():
            outcome = state.stop(i, step, float(losses[i]))
            if on_progress is not None:
                on_progress("member", 1, f"eta={outcome.lr:.3g}: {outcome.status} at step {step}")
        state.active = active & ~stopping
        if step % train.checkpoint_every == 0 or not state.active.any():
            state.write_checkpoint(run, store, step, model_config)
        if not state.active.any():
            break
        state.descend(grads)
        if on_progress is not None:
            on_progress("sweep", 1, f"step {step + 1}: {int(state.active.sum())} running")
    return [o for o in state.outcomes if o is not None]
