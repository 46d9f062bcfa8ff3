"""Full-batch gradient descent at a fixed learning rate, with checkpoints and a dense training log.

Training stops when the training loss falls below ``loss_threshold`` (epsilon), when the step
budget ends, or when the loss becomes non-finite or exceeds ``divergence_bound`` (then the run is
recorded as diverged at that step). Restarted on an existing run with the same config, it resumes
from the last complete checkpoint: full-batch GD has no other state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from phasescope.data import DataConfig, DigitsConfig, SupervisedData, load_supervised_data
from phasescope.device import DeviceName, resolve_device
from phasescope.errors import PhasescopeError
from phasescope.models import ModelConfig, build_model, model_checkpoint_config, model_from_checkpoint_config
from phasescope.models.losses import get_loss
from phasescope.models.norms import norm_rows
from phasescope.run import (
    CheckpointInfo,
    MetricStore,
    RunDir,
    StrictModel,
    dump_config,
    load_checkpoint,
    save_checkpoint,
    validate_config,
)
from phasescope.signals import interrupts_deferred
from phasescope.train.functional import stacked_accuracy
from phasescope.train.status import FINISHED, run_status


class GDConfig(StrictModel):
    lr: float = Field(gt=0)  # the fixed learning rate eta
    max_steps: int = Field(2000, ge=1)
    loss_threshold: float = Field(0.0, ge=0)  # epsilon: stop once the training loss is below it (0: never)
    divergence_bound: float = Field(1e4, gt=0)  # a loss above this counts as diverged
    checkpoint_every: int = Field(100, ge=1)  # steps between checkpoints (the final step is always saved)
    record_every: int = Field(1, ge=1)  # steps between rows of the training log (train loss, accuracy)

    @model_validator(mode="after")
    def _schedule_within_budget(self) -> GDConfig:
        if self.checkpoint_every > self.max_steps:
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) exceeds max_steps ({self.max_steps})")
        return self


class GDRunConfig(StrictModel):
    """A full-batch gradient-descent run: data, model, loss and the GD schedule."""

    kind: Literal["gd"] = "gd"
    seed: int = 0  # the initialization theta_0
    device: DeviceName = "auto"
    data: DataConfig = DigitsConfig()
    model: ModelConfig
    loss: Literal["mse", "cross_entropy"] = "mse"
    train: GDConfig


def load_data(config: GDRunConfig) -> SupervisedData:
    """The run's dataset, targets encoded for its loss."""
    return load_supervised_data(config.data, config.loss)


def seeded_model(model_config: ModelConfig, seed: int, data: SupervisedData) -> nn.Module:
    """theta_0 of ``seed``: the same for every learning rate, and checked to fit the data."""
    torch.manual_seed(seed)
    model = build_model(model_config, data.input_shape, data.num_outputs)
    try:  # one forward pass on two examples, so that a shape mismatch is reported before training
        with torch.no_grad():
            model(data.train_inputs[:2].cpu())
    except (RuntimeError, ValueError, IndexError) as error:
        raise PhasescopeError(f"the model does not fit the data (inputs {tuple(data.input_shape)}, "
                              f"{data.num_outputs} outputs): {str(error).splitlines()[0]}") from None
    return model


def initial_model(config: GDRunConfig, data: SupervisedData) -> nn.Module:
    """theta_0 of the run's seed."""
    return seeded_model(config.model, config.seed, data)


def accuracy(outputs: Tensor, targets: Tensor) -> float:
    """Classification accuracy for one-hot or integer targets (NaN for regression)."""
    return float(stacked_accuracy(outputs.unsqueeze(0), targets)[0])


@dataclass
class GDOutcome:
    """How a run ended: ``status`` is reached_threshold, max_steps or diverged."""

    status: str
    steps: int
    final_train_loss: float


def train_gd(config: GDRunConfig, run_path: Path | str,
             on_step: Callable[[int, float], None] | None = None) -> GDOutcome:
    """Train (or resume) a full-batch GD run into ``run_path``.

    Args:
        on_step: called as ``on_step(step, train_loss)`` after each step (progress bars).
    """
    device = resolve_device(config.device)
    data = load_data(config).to(device)
    model = initial_model(config, data).to(device)
    loss_fn = get_loss(config.loss)
    run = RunDir.create(run_path, dump_config(config), exist_ok=True)
    store = MetricStore(run)
    latest = run.latest_checkpoint()
    step = 0
    resumed = latest is not None
    if resumed:
        checkpoint = load_checkpoint(latest.path, device=str(device))
        if checkpoint.train_meta.get("status") in FINISHED:
            return GDOutcome(checkpoint.train_meta["status"], checkpoint.step,
                             float(checkpoint.train_meta["train_loss"]))
        model.load_state_dict(checkpoint.model_state)
        step = checkpoint.step
    model_config = model_checkpoint_config(config.model, data.input_shape, data.num_outputs)
    train_cfg = config.train
    log: list[dict] = []

    def checkpoint_now(status: str | None, train_loss: float) -> None:
        with torch.no_grad():
            test_outputs = model(data.test_inputs)
            rows = [{"step": step, "metric": "test_loss", "value": float(loss_fn(test_outputs, data.test_targets))},
                    {"step": step, "metric": "test_accuracy", "value": accuracy(test_outputs, data.test_targets)}]
        rows += [{"step": step, **row} for row in norm_rows(model)]  # total, per layer, diagonal predictor
        meta = {"train_loss": train_loss, "lr": train_cfg.lr, "status": status}
        with interrupts_deferred():  # a Ctrl-C or SIGTERM now waits for the checkpoint and its shard
            save_checkpoint(run, step, model.state_dict(), model_config, train_meta=meta)
            store.write_shard(step, "train", train_cfg, log + rows)
        log.clear()

    while True:
        model.zero_grad(set_to_none=True)
        outputs = model(data.train_inputs)
        loss = loss_fn(outputs, data.train_targets)
        train_loss = float(loss.detach())
        if step % train_cfg.record_every == 0 and not (resumed and step == latest.step):
            log += [{"step": step, "metric": "train_loss", "value": train_loss},
                    {"step": step, "metric": "train_accuracy", "value": accuracy(outputs.detach(), data.train_targets)}]
        status = run_status(train_loss, step, train_cfg.loss_threshold, train_cfg.max_steps,
                            train_cfg.divergence_bound)
        if status == "diverged":
            log.append({"step": step, "metric": "diverged", "value": 1.0})
            store.write_shard(step, "train", train_cfg, log)  # no checkpoint of non-finite weights
            return GDOutcome("diverged", step, train_loss)
        if status is not None or (step % train_cfg.checkpoint_every == 0 and
                                  not run.checkpoint_dir(step).exists()):
            checkpoint_now(status, train_loss)
        if status is not None:
            return GDOutcome(status, step, train_loss)
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(train_cfg.lr * p.grad)
        step += 1
        if on_step is not None:
            on_step(step, train_loss)



def open_gd_run(path: Path | str) -> tuple[RunDir, GDRunConfig, SupervisedData, Callable]:
    """A GD run directory with its config, dataset (on the run's device) and loss function."""
    run = RunDir.open(path)
    raw = run.read_config_dict()
    if raw.get("kind", "gd") != "gd":
        raise PhasescopeError(f"{run.path} is a {raw.get('kind')!r} run; this needs a run of `phasescope train` "
                              "(kind 'gd'); a sweep records its sharpness while it trains")
    config = validate_config(raw, GDRunConfig, source=str(run.config_path))
    data = load_data(config).to(resolve_device(config.device))
    return run, config, data, get_loss(config.loss)


def load_gd_model(checkpoint: CheckpointInfo, device: torch.device | str = "cpu") -> nn.Module:
    """The model saved in a GD run's checkpoint, rebuilt from its config.json and weights."""
    saved = load_checkpoint(checkpoint.path, device=str(device))
    model = model_from_checkpoint_config(saved.model_config).to(device)
    try:
        model.load_state_dict(saved.model_state)
    except RuntimeError as error:
        raise PhasescopeError(f"{checkpoint.path}: weights do not match config.json "
                              f"({str(error).splitlines()[0]})") from None
    return model
