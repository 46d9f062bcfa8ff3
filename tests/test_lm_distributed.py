"""`torchrun` with 2 CPU processes (gloo): DDP and FSDP2 train what one process trains on the same batches."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close
from transformers import AutoModelForCausalLM

from phasescope.run import MetricStore, RunDir, load_config
from phasescope.train.lm import LMRunConfig, train_lm
from tests.helpers import HANG_GUARD_SECONDS, REPO_ROOT, tiny_config, write_config

pytestmark = pytest.mark.slow


def torchrun(config: Path, out: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "phasescope.cli", "train", str(config), "--out", str(out)],
                            capture_output=True, text=True, timeout=HANG_GUARD_SECONDS, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(run: Path, step: int, file: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step:08d}" / file))


def distributed_config(tmp_path: Path, strategy: str) -> Path:
    # 2 micro-batches of 2 rows per process (4 in one process): gradient accumulation and its no_sync too
    return write_config(tmp_path / f"{strategy}.yaml", tiny_config(
        train={"max_steps": 6, "micro_batch_size": 2}, checkpoints={"every": 3}, distributed={"strategy": strategy}))


@pytest.fixture(scope="module")
def single_process(tmp_path_factory) -> Path:
    """The reference: the same config trained by one process (the strategy is unused there)."""
    root = tmp_path_factory.mktemp("single")
    train_lm(load_config(distributed_config(root, "ddp"), LMRunConfig), root / "run")
    return root / "run"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_train_what_one_process_trains(strategy, single_process, tmp_path):
    result = torchrun(distributed_config(tmp_path, strategy), tmp_path / "run")
    assert result.stderr.count("trained to step 6 (1,536 tokens)") == 1  # only rank 0 reports
    run = RunDir.open(tmp_path / "run")
    assert [c.step for c in run.list_checkpoints()] == [0, 3, 6]
    initial, reference = weights(single_process, 0), weights(single_process, 6)
    assert all(torch.equal(initial[name], tensor) for name, tensor in weights(tmp_path / "run", 0).items())
    trained = weights(tmp_path / "run", 6)
    assert trained.keys() == reference.keys()
    for name in reference:  # the gradients are averaged by an all-reduce: equal up to float rounding
        assert_close(trained[name], reference[name], rtol=1e-5, atol=1e-6, msg=name)
        assert (reference[name] - initial[name]).abs().max() > 1e-3  # and the weights did move
    moments, reference_moments = weights(tmp_path / "run", 6, "state.safetensors"), weights(
        single_process, 6, "state.safetensors")
    for name in reference_moments:
        if name.startswith("optimizer."):
            assert_close(moments[name], reference_moments[name], rtol=1e-4, atol=1e-9, msg=name)
    logs = [MetricStore(RunDir.open(path)).read("train") for path in (tmp_path / "run", single_process)]
    losses = [log[log.metric == "loss"].sort_values("step").value.tolist() for log in logs]
    assert_close(torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=1e-5, atol=1e-6)  # the global mean
    AutoModelForCausalLM.from_pretrained(run.checkpoint_dir(6))

    if strategy == "fsdp":  # resuming a sharded run: drop the last checkpoint and train it again
        final = weights(tmp_path / "run", 6)
        shutil.rmtree(run.checkpoint_dir(6))
        for shard in (run.metrics_dir / "train").glob("step_00000006-*"):
            shard.unlink()
        result = torchrun(distributed_config(tmp_path, strategy), tmp_path / "run")
        assert "resumed from step 3" in result.stderr
        again = weights(tmp_path / "run", 6)
        assert all(torch.equal(final[name], again[name]) for name in final)


def test_a_ddp_run_replays_in_one_process_within_float_rounding_not_bitwise(single_process, tmp_path):
    from phasescope import PhasescopeError
    from phasescope.train.replay import replay_device, replay_steps, trained_on

    torchrun(distributed_config(tmp_path, "ddp"), tmp_path / "run")
    run = tmp_path / "run"
    assert trained_on(run, 3) == ("cpu", 2)
    with pytest.raises(PhasescopeError, match="trained on 2 processes.*not bitwise.*replay_tolerance"):
        replay_device(run, 3, 6)
    with pytest.raises(PhasescopeError, match="does not reach the saved checkpoint at step 6 bitwise"):
        list(replay_steps(run, 3, 6))
    assert replay_device(run, 3, 6, tolerance=1e-5) == "cpu"
    [*_, last] = replay_steps(run, 3, 6, tolerance=1e-5)  # both ranks' rows, summed in one process
    saved = weights(run, 6)
    worst = max(float((last.after[name] - saved[name]).abs().max()) for name in saved if name in last.after)
    assert 0 < worst < 1e-5
