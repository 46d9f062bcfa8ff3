"""A language-model run SIGKILLed at random moments and restarted ends bitwise equal to an uninterrupted one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from phasescope.run import MetricStore, RunDir
from tests.helpers import HANG_GUARD_SECONDS, REPO_ROOT, phasescope_here, tiny_config, write_config


def start_training(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "phasescope.cli", "train", str(config), "--out", str(out)],
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def checkpoint_count(run: Path) -> int:
    folder = run / "checkpoints"
    return sum(1 for p in folder.iterdir() if p.name.startswith("step_")) if folder.is_dir() else 0


def kill_after(process: subprocess.Popen, ready, delay: float) -> bool:
    """SIGKILL ``process`` ``delay`` seconds after ``ready()`` holds; False if it finished first."""
    while not ready() and process.poll() is None:
        time.sleep(0.01)
    time.sleep(delay)
    if process.poll() is not None:
        return False
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    return True


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return {**load_file(str(path / "model.safetensors")), **load_file(str(path / "state.safetensors"))}


def test_sigkill_at_random_moments_then_resume_is_bitwise_equal(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path / "tiny.yaml", tiny_config(
        train={"max_steps": 60}, checkpoints={"schedule": "every_steps", "every": 2}))
    code, stderr = phasescope_here(monkeypatch, capsys, "train", str(config), "--out", str(tmp_path / "reference"))
    assert code == 0, stderr

    killed = tmp_path / "killed"
    delays = random.Random(0)
    kills = []
    # first during start-up (imports, corpus, tokenizer training and saving), then during training and
    # checkpoint writing: a short random delay after the checkpoint count reaches a target spread over the
    # 31 checkpoints, so that each kill lands mid-run however fast the machine steps
    process = start_training(config, killed)
    if kill_after(process, lambda: (killed / "config.yaml").exists(), delays.uniform(0.0, 0.5)):
        kills.append(checkpoint_count(killed))
    for target in (6, 14, 22):
        process = start_training(config, killed)
        if kill_after(process, lambda target=target: checkpoint_count(killed) >= target, delays.uniform(0.0, 0.05)):
            kills.append(checkpoint_count(killed))
    final = start_training(config, killed)
    _, stderr = final.communicate(timeout=HANG_GUARD_SECONDS)
    assert final.returncode == 0, stderr
    assert len(kills) >= 3 and max(kills) >= 2, kills  # kills landed in the middle of training
    assert "resumed from step" in stderr

    reference_run, killed_run = RunDir.open(tmp_path / "reference"), RunDir.open(killed)
    assert [c.step for c in killed_run.list_checkpoints()] == [c.step for c in reference_run.list_checkpoints()]
    expected = tensors(reference_run.checkpoint_dir(60))
    resumed = tensors(killed_run.checkpoint_dir(60))
    assert expected.keys() == resumed.keys()
    for name in expected:  # weights, AdamW moments and step counts, RNG state
        assert torch.equal(expected[name], resumed[name]), name
    reference_log, killed_log = (MetricStore(run).read("train") for run in (reference_run, killed_run))
    for log in (reference_log, killed_log):
        assert sorted(log[log.metric == "loss"].step) == list(range(60))  # each step exactly once
    losses = [log[log.metric == "loss"].sort_values("step").value.tolist() for log in (reference_log, killed_log)]
    assert losses[0] == losses[1]
    assert not [p for p in killed.rglob(".tmp-*")]  # leftovers of killed writers are cleaned up on resume
