"""Full-batch GD training against an independent plain-torch loop, resume, divergence, stopping."""


import pytest
import torch
from torch.testing import assert_close

from phasescope.models.losses import mean_squared_error
from phasescope.run import MetricStore, RunDir, load_checkpoint
from phasescope.train import GDRunConfig, initial_model, load_data, train_gd


def tiny_config(**train) -> GDRunConfig:
    return GDRunConfig.model_validate({
        "seed": 3, "device": "cpu", "data": {"name": "digits", "train_size": 200},
        "model": {"arch": "mlp", "depth": 1, "width": 16, "activation": "tanh"},
        "loss": "mse", "train": {"lr": 0.2, "max_steps": 40, "checkpoint_every": 10, **train}})


def reference_losses(config: GDRunConfig, steps: int) -> tuple[list[float], dict]:
    """Plain torch GD with SGD(lr) on the full batch, from the same theta_0."""
    data = load_data(config)
    model = initial_model(config, data)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.train.lr)
    losses = []
    for _ in range(steps + 1):
        optimizer.zero_grad()
        loss = mean_squared_error(model(data.train_inputs), data.train_targets)
        losses.append(float(loss.detach()))
        loss.backward()
        optimizer.step()
    return losses, model.state_dict()


def test_gd_matches_plain_torch_and_writes_checkpoints(tmp_path):
    config = tiny_config()
    outcome = train_gd(config, tmp_path / "run")
    assert outcome.status == "max_steps" and outcome.steps == 40
    run = RunDir.open(tmp_path / "run")
    assert [c.step for c in run.list_checkpoints()] == [0, 10, 20, 30, 40]
    log = MetricStore(run).read("train")
    train_loss = log[log.metric == "train_loss"].sort_values("step")
    assert train_loss.step.tolist() == list(range(41))
    expected, _ = reference_losses(config, 40)
    assert_close(torch.tensor(train_loss.value.tolist()), torch.tensor(expected), rtol=1e-5, atol=1e-7)
    assert set(log[log.step == 40].metric) >= {"test_loss", "test_accuracy", "l1", "l2", "train_loss"}


def test_resume_continues_from_the_last_checkpoint_bitwise(tmp_path):
    config = tiny_config()
    train_gd(config, tmp_path / "full")

    def interrupt(step, loss):
        if step == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_gd(config, tmp_path / "resumed", on_step=interrupt)
    assert RunDir.open(tmp_path / "resumed").latest_checkpoint().step == 20
    train_gd(config, tmp_path / "resumed")
    full = load_checkpoint(tmp_path / "full" / "checkpoints" / "step_00000040").model_state
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "step_00000040").model_state
    for name in full:
        assert torch.equal(full[name], resumed[name])
    log = MetricStore(RunDir.open(tmp_path / "resumed")).read("train")
    assert sorted(log[log.metric == "train_loss"].step.tolist()) == list(range(41))  # each step once


def test_divergence_is_recorded_without_a_nan_checkpoint(tmp_path):
    outcome = train_gd(tiny_config(lr=500.0), tmp_path / "run")
    assert outcome.status == "diverged"
    run = RunDir.open(tmp_path / "run")
    log = MetricStore(run).read("train")
    assert log[log.metric == "diverged"].step.tolist() == [outcome.steps]
    for checkpoint in run.list_checkpoints():
        state = load_checkpoint(checkpoint.path).model_state
        assert all(torch.isfinite(t).all() for t in state.values())


def test_loss_threshold_stops_early_and_saves_the_final_step(tmp_path):
    losses, _ = reference_losses(tiny_config(), 40)
    epsilon = losses[15] * 0.999  # first reached at step 16
    outcome = train_gd(tiny_config(loss_threshold=epsilon), tmp_path / "run")
    assert outcome.status == "reached_threshold"
    assert outcome.steps == next(i for i, loss in enumerate(losses) if loss < epsilon)
    assert RunDir.open(tmp_path / "run").latest_checkpoint().step == outcome.steps


def test_bad_schedule_is_reported_by_field():
    from phasescope.errors import PhasescopeError
    from phasescope.run import validate_config

    with pytest.raises(PhasescopeError, match="train: .*checkpoint_every .* exceeds max_steps"):
        validate_config({"model": {"arch": "mlp"}, "train": {"lr": 0.1, "max_steps": 5, "checkpoint_every": 10}},
                        GDRunConfig)
    with pytest.raises(PhasescopeError, match=r"train\.lr: Input should be greater than 0"):
        validate_config({"model": {"arch": "mlp"}, "train": {"lr": -1}}, GDRunConfig)
