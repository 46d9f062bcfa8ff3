"""Grids of learning-rate sweeps over the paper's axes: each combination equals the same sweep run on
its own, a rerun trains only the missing combinations, Ray gives the same runs, bad axes fail early."""

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from phasescope.analysis.grid import grid_table
from phasescope.errors import PhasescopeError
from phasescope.execute.grid import run_grid
from phasescope.run import MetricStore, RunDir, validate_config
from phasescope.train import SweepConfig, run_sweep
from phasescope.train.grid import apply_axes, combinations, parse_axis
from tests.helpers import HANG_GUARD_SECONDS

BASE = {"seeds": [0], "device": "cpu", "data": {"name": "digits", "train_size": 60},
        "model": {"arch": "mlp", "depth": 1, "width": 8}, "loss": "mse", "lrs": {"values": [0.05, 0.4]},
        "train": {"max_steps": 60, "loss_threshold": 0.3, "record_every": 20, "sharpness_every": 30,
                  "checkpoint_every": 30},
        "flow": {"max_steps": 60, "sharpness_every": 5, "refinement_check": False}}
AXES = {"width": [8, 16], "parameterization": ["sp", "mup"]}


def _rows(path) -> pd.DataFrame:
    frames = []
    for measure in ("sweep", "gradient_flow"):
        frame = MetricStore(RunDir.open(path)).read(measure).drop(columns=["run"], errors="ignore")
        frames.append(frame.assign(measure=measure))
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values([c for c in ("measure", "metric", "seed", "lr", "step") if c in frame]).reset_index(
        drop=True)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    path = tmp_path_factory.mktemp("grid") / "grid"
    events = []
    run_grid(validate_config(BASE, SweepConfig), AXES, path, on_done=lambda name, how: events.append((name, how)))
    return path, events


def test_each_combination_equals_its_sweep_run_alone(grid, tmp_path):
    path, events = grid
    assert events == [(name, "trained") for name in ("width=8,parameterization=sp", "width=8,parameterization=mup",
                                                    "width=16,parameterization=sp", "width=16,parameterization=mup")]
    config = apply_axes(BASE, {"width": 16, "parameterization": "mup"})
    assert config.model.width == 16 and config.model.parameterization == "mup"
    run_sweep(config, tmp_path / "alone")
    pd.testing.assert_frame_equal(_rows(path / "width=16,parameterization=mup"), _rows(tmp_path / "alone"))
    members, flows = grid_table(path)
    assert len(members) == 8 and len(flows) == 4
    assert set(zip(members.width, members.parameterization)) == {(8, "sp"), (8, "mup"), (16, "sp"), (16, "mup")}
    alone = MetricStore(RunDir.open(tmp_path / "alone")).read("gradient_flow")
    eta_c = float(alone[alone.metric == "eta_c"].value.iloc[0])
    assert flows[(flows.width == 16) & (flows.parameterization == "mup")].eta_c.iloc[0] == eta_c


def test_a_rerun_trains_only_the_missing_combinations(grid, tmp_path):
    path, _ = grid
    copy = tmp_path / "grid"
    shutil.copytree(path, copy)
    before = _rows(copy / "width=8,parameterization=mup")
    shutil.rmtree(copy / "width=8,parameterization=mup" / "metrics" / "sweep")  # killed before its shards landed
    shutil.rmtree(copy / "width=16,parameterization=sp")  # never started
    events = []
    run_grid(validate_config(BASE, SweepConfig), AXES, copy, on_done=lambda name, how: events.append((name, how)))
    assert sorted(events) == sorted([("width=8,parameterization=sp", "kept"), ("width=16,parameterization=mup", "kept"),
                                     ("width=8,parameterization=mup", "trained"),
                                     ("width=16,parameterization=sp", "trained")])
    pd.testing.assert_frame_equal(_rows(copy / "width=8,parameterization=mup"), before)  # retrained to the same rows
    with pytest.raises(PhasescopeError, match="different config.yaml"):  # another grid in the same directory
        run_grid(validate_config(BASE, SweepConfig), {"width": [8]}, copy)


def test_ray_executor_writes_the_same_runs(grid, tmp_path):
    pytest.importorskip("ray")
    path, _ = grid
    axes = {"width": [8, 16]}
    run_grid(validate_config({**BASE, "model": {**BASE["model"], "parameterization": "mup"}}, SweepConfig), axes,
             tmp_path / "ray", executor="ray")
    pd.testing.assert_frame_equal(_rows(tmp_path / "ray" / "width=16"), _rows(path / "width=16,parameterization=mup"))


def test_grid_report_draws_the_axes(grid):
    from phasescope.report.index import write_report

    path, _ = grid
    result = write_report(path)
    assert (path / "report" / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(result.sweeps) == 4
    assert result.headline[0].startswith("width=8,parameterization=sp: eta_c = ")
    assert "Across the grid" in result.path.read_text()


@pytest.mark.parametrize("axes, message", [
    ({"width": [0, 8]}, "grid combination width=0"),
    ({"parameterization": ["sp", "ntk"]}, "'ntk' is not one of sp, standard, mup"),
    ({"width": [8, 8]}, "repeated values"),
])
def test_bad_axis_values_fail_before_anything_is_written(tmp_path, axes, message):
    with pytest.raises(PhasescopeError, match=message):
        run_grid(validate_config(BASE, SweepConfig), axes, tmp_path / "grid")
    assert not (tmp_path / "grid").exists()
    cnn = validate_config({**BASE, "model": {"arch": "cnn"}}, SweepConfig)
    with pytest.raises(PhasescopeError, match="the cnn model has no width field"):
        combinations(cnn, {"width": [8]})


def test_grid_command_line_errors_are_one_line(tmp_path):
    with pytest.raises(PhasescopeError, match="unknown axis 'heads'"):
        parse_axis("heads=1,2")
    config = tmp_path / "tiny.yaml"
    config.write_text("data: {name: digits, train_size: 60}\nmodel: {arch: mlp, depth: 1, width: 8}\n"
                      "lrs: {values: [0.05]}\n")
    for args, message in ((["--grid", "width"], "expected AXIS=V1,V2"),
                          (["--grid", "width=8", "--grid", "width=16"], "given twice"),
                          (["--executor", "ray"], "--executor applies to grids")):
        result = subprocess.run([sys.executable, "-m", "phasescope.cli", "sweep", str(config), "--out",
                                 str(tmp_path / "out"), *args], capture_output=True, text=True,
                                timeout=HANG_GUARD_SECONDS)
        assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_grid_in_a_log_file_says_what_trains_while_a_combination_runs(tmp_path, monkeypatch, capsys):
    """When stderr is not a terminal, plain progress lines come from inside each combination's sweep (here
    every line, PHASESCOPE_LOG_SECONDS=0), not only when a combination ends."""
    from tests.helpers import phasescope_here, write_config

    monkeypatch.setenv("PHASESCOPE_LOG_SECONDS", "0")
    small = {**BASE, "lrs": {"values": [0.05]}, "train": {**BASE["train"], "max_steps": 20, "sharpness_every": 10},
             "flow": {**BASE["flow"], "max_steps": 10}}
    config = write_config(tmp_path / "tiny.yaml", small)
    code, stderr = phasescope_here(monkeypatch, capsys, "sweep", str(config), "--out", str(tmp_path / "out"),
                                   "--grid", "width=8,16")
    assert code == 0, stderr
    inside = [line for line in stderr.splitlines() if line.startswith("grid 0/2") and "width=8: step" in line]
    assert inside, stderr
    assert any(line.startswith("grid 1/2") and "width=16: step" in line for line in stderr.splitlines()), stderr
