"""Learning-rate sweeps and gradient flow: the study-A claims on digits, vectorized vs sequential,
gradient flow against small-step GD, and bad input."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch.testing import assert_close

from phasescope.analysis.edge_of_stability import (
    classify_regimes,
    disagreements,
    final_state,
    flow_summary,
)
from phasescope.data import DigitsConfig, load_digits_data
from phasescope.errors import PhasescopeError
from phasescope.models import MLP
from phasescope.models.losses import mean_squared_error
from phasescope.run import MetricStore, RunDir, validate_config
from phasescope.train import GradientFlowConfig, SweepConfig, gradient_flow, run_sweep
from phasescope.train.sweep import RegimeCriteria
from tests.helpers import HANG_GUARD_SECONDS


def sweep_config(**overrides) -> SweepConfig:
    config = {"seeds": [0], "device": "cpu", "data": {"name": "digits", "train_size": 200},
              "model": {"arch": "mlp", "depth": 2, "width": 32, "activation": "tanh"}, "loss": "mse",
              "lrs": {"values": [0.035, 0.18]},
              "train": {"max_steps": 4000, "loss_threshold": 0.1, "record_every": 100, "sharpness_every": 1000,
                        "checkpoint_every": 2000, "sharpness_tol": 1e-4},
              "flow": {"sharpness_every": 20, "rtol": 1e-6, "refinement_check": False}}
    for key, value in overrides.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    return validate_config(config, SweepConfig)


@pytest.fixture(scope="module")
def digits_sweep(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "run"
    run_sweep(sweep_config(), path)
    store = MetricStore(RunDir.open(path))
    flow = flow_summary(store.read("gradient_flow"))
    sweep = store.read("sweep")
    return classify_regimes(final_state(sweep), flow, sweep[sweep.metric == "sharpness"]), flow


def test_below_eta_c_final_sharpness_and_l1_match_gradient_flow(digits_sweep):
    table, flow = digits_sweep
    eta_c, s_gf, flow_l1 = (float(flow[name].iloc[0]) for name in ("eta_c", "s_gf", "final_l1"))
    small = table[table.lr == 0.035].iloc[0]
    assert small.lr < eta_c / 3  # well below the critical rate
    assert small.status == "reached_threshold" and small.regime == "flow_aligned" == small.predicted_regime
    assert small.sharpness == pytest.approx(s_gf, rel=0.03)
    assert small.l1 == pytest.approx(flow_l1, rel=0.03)


def test_above_eta_c_final_sharpness_tracks_two_over_eta(digits_sweep):
    table, flow = digits_sweep
    large = table[table.lr == 0.18].iloc[0]
    assert large.lr > 1.4 * float(flow["eta_c"].iloc[0])
    assert large.status == "reached_threshold" and large.regime == "edge_of_stability" == large.predicted_regime
    assert 1 / 1.25 <= large.band_low <= large.band_high <= 1.25  # every sample of its last quarter is in the band
    assert large.sharpness == pytest.approx(2 / 0.18, rel=0.15)
    assert large.sharpness < 0.8 * float(flow["s_gf"].iloc[0])  # well below gradient flow's sharpness


def _member(lr, status, sharpness, l1, steps=1000):
    return {"lr": lr, "seed": 0, "steps": steps, "status": status, "sharpness": sharpness, "l1": l1}


def test_regimes_are_read_off_synthetic_trajectories_with_known_answers():
    """Flow summary: eta_c = 0.2 (s_GF = 10), final sharpness 9, l1 5. Each member's trajectory is built
    to be one regime, including two where eta >= eta_c and the data disagree."""
    flow = pd.DataFrame([{"seed": 0, "eta_c": 0.2, "final_sharpness": 9.0, "final_l1": 5.0}])
    final = pd.DataFrame([
        _member(0.05, "reached_threshold", 9.1, 5.1),  # 1.1% and 2% from the flow: flow-aligned
        _member(0.5, "reached_threshold", 4.1, 6.0),  # 2/eta = 4: edge of stability
        _member(1.0, "reached_threshold", 2.1, 6.5),  # 2/eta = 2, but a spike in its last quarter: unresolved
        _member(0.3, "reached_threshold", 2.0, 5.0),  # above eta_c, far below 2/eta = 6.67: unresolved
        _member(0.1, "max_steps", 9.0, 5.0),  # budget ended before epsilon: not flow-aligned, 2/eta = 20: unresolved
        _member(5.0, "diverged", float("nan"), float("nan")),
    ])
    samples = [(0.5, step, 2 / 0.5 * ratio) for step, ratio in [(100, 3.0), (700, 1.2), (800, 0.85), (1000, 1.02)]]
    samples += [(1.0, step, 2 / 1.0 * ratio) for step, ratio in [(500, 1.0), (800, 1.6), (1000, 1.05)]]
    samples += [(0.05, 1000, 9.1), (0.3, 1000, 2.0), (0.1, 1000, 9.0)]
    trajectories = pd.DataFrame([{"lr": lr, "seed": 0, "step": step, "value": value, "metric": "sharpness"}
                                 for lr, step, value in samples])
    table = classify_regimes(final, flow, trajectories).set_index("lr")
    assert table.regime.to_dict() == {0.05: "flow_aligned", 0.5: "edge_of_stability", 1.0: "unresolved",
                                      0.3: "unresolved", 0.1: "unresolved", 5.0: "diverged"}
    assert table.predicted_regime.to_dict() == {0.05: "flow_aligned", 0.5: "edge_of_stability",
                                                1.0: "edge_of_stability", 0.3: "edge_of_stability",
                                                0.1: "flow_aligned", 5.0: "diverged"}
    assert table.flow_gap[0.05] == pytest.approx(0.02)
    assert (table.band_low[0.5], table.band_high[0.5]) == pytest.approx((0.85, 1.02))  # steps 750 to 1000 only
    lines = disagreements(table.reset_index())
    assert len(lines) == 3 and lines[0].startswith("eta = 1 (seed 0): measured unresolved, eta_c predicts edge of")
    # the criteria are the knobs: a wider band takes in the spike, a tighter flow tolerance drops eta = 0.05
    wide = classify_regimes(final, flow, trajectories, RegimeCriteria(band=1.7, flow_rtol=0.01)).set_index("lr")
    assert wide.regime[1.0] == "edge_of_stability" and wide.regime[0.05] == "unresolved"
    # a window of the whole run takes in the catapult at step 100 (3 x 2/eta)
    assert classify_regimes(final, flow, trajectories, RegimeCriteria(window=1.0)).set_index("lr").regime[0.5] == (
        "unresolved")


def test_gradient_flow_measures_every_step_and_checks_its_tolerance():
    torch.manual_seed(0)
    data = load_digits_data(DigitsConfig(train_size=60), "mse")
    model = MLP((64,), 10, depth=1, width=8)
    flow = gradient_flow(model, mean_squared_error, data.train_inputs, data.train_targets, loss_threshold=0.3)
    assert flow.reached_threshold
    steps = len(flow.times) - 1
    assert flow.sharpness_steps == [*range(steps), steps]  # every accepted step (the last one while below epsilon)
    assert flow.max_sharpness == max(flow.sharpness_values)
    assert abs(flow.refinement_change) <= 1e-3  # a tenth of the tolerances moves s_GF by less than 1e-3
    coarse = gradient_flow(model, mean_squared_error, data.train_inputs, data.train_targets, loss_threshold=0.3,
                           config=GradientFlowConfig(sharpness_every=10, refinement_check=False))
    assert coarse.refined_max_sharpness != coarse.refined_max_sharpness  # NaN: not checked
    assert coarse.max_sharpness <= flow.max_sharpness * (1 + 1e-6)  # a subsample cannot exceed the full maximum


def test_vectorized_and_sequential_sweeps_agree(tmp_path):
    # 100 steps: at lr 0.2 the run enters the edge of stability, whose chaotic dynamics amplify the
    # rounding differences of batched and plain matmuls past any tolerance after ~130 steps.
    overrides = {"data": {"train_size": 100}, "model": {"width": 16}, "lrs": {"values": [0.05, 0.2, 0.8, 50.0]},
                 "train": {"max_steps": 100, "record_every": 10, "sharpness_every": 50, "checkpoint_every": 50},
                 "flow": {"enabled": False}}
    tables = {}
    for vectorized in (True, False):
        path = tmp_path / f"vectorized-{vectorized}"
        outcomes = run_sweep(sweep_config(**overrides, vectorized=vectorized), path)
        assert {o.status for o in outcomes} == {"max_steps", "diverged"}
        frame = MetricStore(RunDir.open(path)).read("sweep")
        tables[vectorized] = frame.sort_values(["metric", "lr", "step"]).reset_index(drop=True)
    fast, slow = tables[True], tables[False]
    assert fast[["metric", "lr", "step"]].equals(slow[["metric", "lr", "step"]])
    finite = np.isfinite(slow.value.to_numpy())
    assert (np.isfinite(fast.value.to_numpy()) == finite).all()
    assert_close(torch.tensor(fast.value.to_numpy()[finite]), torch.tensor(slow.value.to_numpy()[finite]),
                 rtol=1e-4, atol=1e-6)


def test_gradient_flow_matches_gd_with_a_tiny_step():
    torch.manual_seed(0)
    data = load_digits_data(DigitsConfig(train_size=50), "mse")
    model = MLP((64,), 10, depth=1, width=8).double()
    inputs, targets = data.train_inputs.double(), data.train_targets.double()
    horizon = 2.0
    flow = gradient_flow(model, mean_squared_error, inputs, targets, loss_threshold=1e-12,
                         config=GradientFlowConfig(max_time=horizon, rtol=1e-9, atol=1e-12, sharpness_every=1000))
    assert flow.times[-1] == pytest.approx(horizon)
    start = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    errors = []
    for lr in (2e-3, 1e-3):  # far below 2/sharpness (sharpness ~ 10 here)
        gd_model = MLP((64,), 10, depth=1, width=8).double()
        gd_model.load_state_dict(model.state_dict())
        optimizer = torch.optim.SGD(gd_model.parameters(), lr=lr)
        for _ in range(round(horizon / lr)):
            optimizer.zero_grad()
            mean_squared_error(gd_model(inputs), targets).backward()
            optimizer.step()
        theta = torch.cat([p.detach().reshape(-1) for p in gd_model.parameters()])
        errors.append(float((theta - flow.final_params).norm() / (flow.final_params - start).norm()))
    assert errors[1] < 5e-3
    assert errors[1] == pytest.approx(errors[0] / 2, rel=0.1)  # GD is first order in its step: error halves


@pytest.mark.parametrize("replace, message", [
    ({"lrs": {"min": 0.5, "max": 0.1}}, "inverted: min (0.5) must be below max (0.1)"),
    ({"lrs": {"values": []}}, "values is empty"),
    ({"data": {"name": "mnist", "path": "/nonexistent/mnist"}}, "/nonexistent/mnist"),
    ({"data": {"name": "digits", "train_size": 5000}}, "train_size is 5000"),
    ({"model": {"arch": "diagonal"}}, "diagonal linear network needs vector inputs and one output"),
    ({"model": {"arch": "cnn"}, "data": {"name": "sparse_regression", "dim": 10}},
     "a CNN needs image inputs"),
])
def test_bad_input_is_reported_before_training(tmp_path, replace, message):
    try:
        config = validate_config({**sweep_config().model_dump(mode="json"), **replace}, SweepConfig)
        run_sweep(config, tmp_path / "run")
    except PhasescopeError as error:
        assert message in str(error) and "\n" not in str(error)
    else:
        pytest.fail("no error")
    assert not (tmp_path / "run").exists()


def test_sweep_and_report_commands_write_every_figure(tmp_path):
    (tmp_path / "tiny.yaml").write_text(
        "seeds: [0]\ndevice: cpu\ndata: {name: digits, train_size: 100}\n"
        "model: {arch: mlp, depth: 1, width: 16}\nlrs: {min: 0.05, max: 1.0, num: 4}\n"
        "train: {max_steps: 300, loss_threshold: 0.2, record_every: 20, sharpness_every: 100}\n"
        "flow: {sharpness_every: 20}\n")
    run = tmp_path / "run"
    for args in (["sweep", str(tmp_path / "tiny.yaml"), "--out", str(run)], ["report", str(run)]):
        result = subprocess.run([sys.executable, "-m", "phasescope.cli", *args], capture_output=True, text=True,
                                timeout=HANG_GUARD_SECONDS)
        assert result.returncode == 0, result.stderr
    assert "eta_c = 2/s_GF" in result.stdout
    for name in ("final_sharpness_vs_lr", "final_norms_vs_lr", "test_loss_vs_lr", "sharpness_trajectories",
                 "steps_to_threshold_vs_lr"):
        assert (run / "report" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (run / "report" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    again = subprocess.run([sys.executable, "-m", "phasescope.cli", "sweep", str(tmp_path / "tiny.yaml"), "--out",
                            str(run)], capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.parametrize("parameterization", ["ww", "uu-vv", "uv"])
def test_diagonal_closed_form_sweep_equals_the_autograd_reference(tmp_path, parameterization):
    config = {"seeds": [0, 1], "device": "cpu",
              "data": {"name": "sparse_regression", "n_train": 10, "n_test": 50, "dim": 20, "sparsity": 3},
              "model": {"arch": "diagonal", "parameterization": parameterization, "alpha": 0.3},
              "lrs": {"values": [0.01, 0.1, 100.0]},
              "train": {"max_steps": 200, "loss_threshold": 1e-4, "record_every": 10, "sharpness_every": 100,
                        "checkpoint_every": 100},
              "flow": {"enabled": False}}
    frames = {}
    for vectorized in (True, False):
        path = tmp_path / f"vectorized-{vectorized}"
        run_sweep(validate_config({**config, "vectorized": vectorized}, SweepConfig), path)
        frame = MetricStore(RunDir.open(path)).read("sweep")
        frames[vectorized] = frame.sort_values(["metric", "seed", "lr", "step"]).reset_index(drop=True)
    fast, slow = frames[True], frames[False]
    assert fast[["metric", "seed", "lr", "step"]].equals(slow[["metric", "seed", "lr", "step"]])
    assert set(fast[fast.metric == "diverged"].value) == {0.0, 1.0}
    finite = np.isfinite(slow.value.to_numpy())
    assert_close(torch.tensor(fast.value.to_numpy()[finite]), torch.tensor(slow.value.to_numpy()[finite]),
                 rtol=1e-4, atol=1e-6)


def test_diagonal_sweep_report_draws_the_theory_figure(tmp_path):
    from phasescope.report.study_a import sweep_report

    config = validate_config({
        "seeds": [0, 1], "device": "cpu",
        "data": {"name": "sparse_regression", "n_train": 8, "n_test": 100, "dim": 30, "sparsity": 3},
        "model": {"arch": "diagonal", "parameterization": "ww", "alpha": 0.1},
        "lrs": {"min": 0.05, "max": 0.5, "num": 4},
        "train": {"max_steps": 3000, "loss_threshold": 1e-4, "record_every": 100, "sharpness_every": 500}},
        SweepConfig)
    run_sweep(config, tmp_path / "run")
    report = sweep_report(RunDir.open(tmp_path / "run"))
    assert (tmp_path / "run" / "report" / "diagonal_theory.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "run" / "report" / "diagonal_theory.pdf").read_bytes()[:5] == b"%PDF-"
    assert sorted(report.flow.seed) == [0, 1]  # gradient flow from every seed's theta_0
    assert len(report.table) == 8
    # below eta_c, GD from a small initialization ends at gradient flow's sharpness
    flow_aligned = report.table[(report.table.regime == "flow_aligned") & (report.table.seed == 0)]
    assert len(flow_aligned) >= 1
    s_gf = float(report.flow[report.flow.seed == 0].s_gf.iloc[0])
    assert flow_aligned.sharpness.iloc[0] == pytest.approx(s_gf, rel=0.02)  # the smallest rate
    assert flow_aligned.sharpness.to_numpy() == pytest.approx(s_gf, rel=0.03)
