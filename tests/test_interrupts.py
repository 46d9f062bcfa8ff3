"""What a user meets when work stops early: Ctrl-C and SIGTERM exit 130 saying what was kept, a
checkpoint being written is finished first, the demo's second process dies with the demo, a truncated
weight file is one line naming it, and files follow the umask."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from phasescope.run import MetricStore, RunDir, save_checkpoint
from phasescope.signals import interrupts_deferred, received_signal, termination_handled
from tests.helpers import HANG_GUARD_SECONDS, REPO_ROOT, phasescope, tiny_config, write_config
from tests.lm_fixtures import tiny_tokenizer, write_local_run


def _start(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "phasescope.cli", *args], cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _wait_for(condition, process: subprocess.Popen, what: str, limit: float = HANG_GUARD_SECONDS) -> None:
    """Poll until ``condition()``; the limit only guards against a hang (the work is a few steps)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert process.poll() is None, f"the process ended before {what}: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"no {what} within {limit:.0f} s"
        time.sleep(0.05)


def test_a_signal_inside_a_deferred_block_is_raised_when_it_ends():
    reached_the_end, before = False, signal.getsignal(signal.SIGTERM)
    with termination_handled():
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler has run by now, and held the signal
                reached_the_end = True
        assert received_signal() == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert reached_the_end
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_training_exits_130_saying_what_was_kept_then_resumes(tmp_path, signum):
    config = write_config(tmp_path / "tiny.yaml", tiny_config(train={"max_steps": 4000, "log_every": 4}))
    run = tmp_path / "run"
    process = _start("train", str(config), "--out", str(run))
    _wait_for(lambda: (run / "checkpoints" / "step_00000008").is_dir(), process, "the checkpoint of step 8")
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=HANG_GUARD_SECONDS)
    assert process.returncode == 130, stderr[-2000:]
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    latest = RunDir.open(run).latest_checkpoint()
    assert last.startswith(f"interrupted ({signal.Signals(signum).name}): kept checkpoints up to step "
                           f"{latest.step} ")
    assert f"resume with: phasescope train {config} --out {run}" in last
    assert "Traceback" not in stderr
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]  # nothing half-written


def test_interrupted_measure_exits_130_and_names_the_shards_kept(tmp_path):
    run = write_local_run(tmp_path / "run", list(range(0, 200, 10)), tokenizer=tiny_tokenizer())
    process = _start("measure", str(run), "--measures", "test_text_logprob", "--import", "tests.measure_fixtures",
                     "--set", "test_text_logprob.repeats=10")
    metrics = Path(run) / "metrics"
    _wait_for(lambda: len(list(metrics.rglob("step_*.parquet"))) >= 2, process, "two shards")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=HANG_GUARD_SECONDS)
    assert process.returncode == 130, stderr[-2000:]
    written = len(MetricStore(RunDir.open(run)).shard_paths("test_text_logprob"))
    assert 2 <= written < 20
    assert (f"interrupted (SIGINT): kept the {written} metric shards written before the interrupt in {metrics}; "
            "rerun to compute only the missing ones: phasescope measure") in " ".join(stderr.split())


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_the_demos_second_process_dies_when_the_demo_is_killed(tmp_path):
    process = _start("demo", "--quick", "--out", str(tmp_path / "demo"))
    children: list[int] = []  # study A's process, and multiprocessing's resource tracker if it started one

    def study_a_started() -> bool:
        children[:] = _children(process.pid)
        return bool(children) and (tmp_path / "demo" / "digits-mlp-mse" / "config.yaml").exists()

    _wait_for(study_a_started, process, "study A's process")
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)], "a child process outlived the demo"


def test_demo_on_cuda_without_a_gpu_fails_before_any_work(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = phasescope("demo", "--device", "cuda", "--out", str(tmp_path / "demo"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: device 'cuda' was asked for but no CUDA GPU is available (use 'auto' or 'cpu')"]
    assert not (tmp_path / "demo").exists()


def test_a_truncated_weight_file_is_one_line_naming_it_and_the_other_checkpoints_go_on(tmp_path):
    run = write_local_run(tmp_path / "run", [0, 10, 20], tokenizer=tiny_tokenizer())
    weights = Path(run) / "checkpoints" / "step_00000010" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = phasescope("measure", str(run), "--measures", "test_text_logprob", "--import", "tests.measure_fixtures")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: test_text_logprob at step_00000010: {weights}: corrupt checkpoint file, expected "
                      "safetensors (Error while deserializing header: incomplete metadata, file not fully covered)"]
    assert "Traceback" not in result.stderr
    assert sorted(MetricStore(RunDir.open(run)).read("test_text_logprob").step.unique()) == [0, 20]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_checkpoint_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        run = RunDir.create(tmp_path / "run", "kind: gd\n")
        info = save_checkpoint(run, 3, {"weight": torch.ones(2)}, {"arch": "test"}, train_meta={"lr": 0.1},
                               train_state={"momentum": torch.zeros(2)})
        MetricStore(run).write_shard(3, "test", {}, [{"metric": "x", "value": 1.0}])
    finally:
        os.umask(previous)
    files = [p for p in [*info.path.iterdir(), *run.metrics_dir.rglob("*.parquet")] if p.is_file()]
    assert {p.name for p in files} >= {"model.safetensors", "state.safetensors", "config.json", "state.json"}
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o666 & ~umask)}
