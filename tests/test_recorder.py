"""Recording the user's own training: a plain loop, the real Hugging Face Trainer and the real Lightning
Trainer write checkpoints at exactly the scheduled steps, equal to the weights recorded independently,
that phasescope's measures and report read; restarts continue; SIGKILL leaves nothing partial;
under torchrun one process writes what one process would."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.testing import assert_close

import phasescope
from phasescope import PhasescopeError
from phasescope.integrations import Recorder
from phasescope.run import MetricStore, RunDir
from tests.helpers import HANG_GUARD_SECONDS, REPO_ROOT, phasescope_here
from tests.lm_fixtures import tiny_llama, wlt_lexicon

SCRIPT = Path(__file__).with_name("recorder_script.py")


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2))


def checkpoint_steps(run: Path) -> list[int]:
    return [info.step for info in RunDir.open(run).list_checkpoints()]


def saved_weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step:08d}" / "model.safetensors"))


# --- a plain loop ----------------------------------------------------------------------------------
def test_plain_gd_loop_records_scheduled_steps_and_its_sharpness_equals_phasescope(tmp_path):
    model, (inputs, targets) = mlp(), (torch.randn(48, 5), torch.randn(48, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.functional.mse_loss
    recorder = Recorder(tmp_path / "run", schedule={"schedule": "log_linear", "log_until": 8, "every": 10},
                        measures=["loss", "norms", "sharpness"], batch=(inputs, targets), loss_fn=loss_fn)
    independent = {}
    recorder.step(model, optimizer, step=0)
    independent[0] = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(1, 31):
        optimizer.zero_grad()
        loss_fn(model(inputs), targets).backward()
        optimizer.step()
        recorder.step(model, optimizer, step=step)
        independent[step] = {k: v.clone() for k, v in model.state_dict().items()}
    expected_steps = [0, 1, 2, 4, 8, 10, 20, 30]
    assert checkpoint_steps(tmp_path / "run") == expected_steps
    rows = MetricStore(RunDir.open(tmp_path / "run")).read()
    for step in expected_steps:
        weights = saved_weights(tmp_path / "run", step)
        assert weights.keys() == independent[step].keys()
        assert all(torch.equal(weights[k], independent[step][k]) for k in weights)
        fresh = mlp(seed=1)
        fresh.load_state_dict(weights)
        reference = phasescope.sharpness(fresh, loss_fn, (inputs, targets))
        recorded = rows[(rows.step == step) & (rows.metric == "sharpness")].value.item()
        assert recorded == pytest.approx(float(reference.eigenvalues[0]), rel=1e-6)
        assert rows[(rows.step == step) & (rows.metric == "loss")].value.item() == pytest.approx(
            float(loss_fn(fresh(inputs), targets).detach()), rel=1e-6)
        l2 = torch.cat([p.detach().flatten() for p in fresh.parameters()]).double().norm()
        assert rows[(rows.step == step) & (rows.metric == "l2")].value.item() == pytest.approx(float(l2), rel=1e-12)
    code, stderr = phasescope_here_report(tmp_path / "run")
    assert code == 0, stderr


def phasescope_here_report(run: Path) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "phasescope.cli", "report", str(run)], capture_output=True,
                            text=True, cwd=REPO_ROOT, timeout=HANG_GUARD_SECONDS)
    assert (run / "report" / "index.html").is_file() or result.returncode != 0
    return result.returncode, result.stderr


class Untouchable(nn.Linear):
    """A model that fails if anything reads its weights."""

    def state_dict(self, *args, **kwargs):
        raise AssertionError("state_dict read on an unscheduled step")

    def parameters(self, *args, **kwargs):
        raise AssertionError("parameters read on an unscheduled step")


def test_unscheduled_steps_read_nothing_and_write_nothing(tmp_path):
    recorder = Recorder(tmp_path / "run", schedule=[5], measures=["norms"])
    model = Untouchable(2, 2)
    assert not any(recorder.step(model, step=step) for step in (1, 2, 3, 4, 6, 7))
    assert not (tmp_path / "run").exists()  # not even the run directory


def test_a_restarted_loop_continues_without_duplicating_or_losing_steps(tmp_path):
    model, inputs = mlp(), torch.randn(16, 5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def train(recorder, start, end):
        recorder.step(model, optimizer, step=start)
        for step in range(start, end):
            optimizer.zero_grad()
            model(inputs).pow(2).mean().backward()
            optimizer.step()
            recorder.step(model, optimizer, step=step + 1)

    train(Recorder(tmp_path / "run", schedule=2, measures=["norms"]), 0, 10)
    first = {step: saved_weights(tmp_path / "run", step) for step in (6, 8, 10)}
    model.load_state_dict(saved_weights(tmp_path / "run", 6))  # the user resumes from their step-6 checkpoint
    train(Recorder(tmp_path / "run", schedule=2, measures=["norms"]), 6, 16)
    assert checkpoint_steps(tmp_path / "run") == list(range(0, 17, 2))
    for step, weights in first.items():  # what was there is kept, not rewritten
        assert all(torch.equal(weights[k], saved_weights(tmp_path / "run", step)[k]) for k in weights)
    rows = MetricStore(RunDir.open(tmp_path / "run")).read("norms")
    assert sorted(rows[rows.metric == "l1"].step) == list(range(0, 17, 2))  # one shard per step


@pytest.mark.parametrize("arguments, message", [
    (dict(measures=["flatness"]), "unknown inline measure 'flatness'"),
    (dict(measures=["loss"]), "need a held batch"),
    (dict(measures=["sharpness"], batch=(1, 2)), "needs loss_fn"),
    (dict(schedule="sometimes"), "schedule"),
    (dict(schedule={"schedule": "every_steps", "every": 0}), "schedule.every_steps.every"),
    (dict(measures=["wlt"]), "needs the model's tokenizer"),
])
def test_bad_recorder_settings_are_one_line_errors(tmp_path, arguments, message):
    with pytest.raises(PhasescopeError, match=message) as error:
        Recorder(tmp_path / "run", **arguments)
    assert "\n" not in str(error.value)


def test_other_settings_on_the_same_directory_are_refused(tmp_path):
    Recorder(tmp_path / "run", schedule=2).step(mlp(), step=0)
    with pytest.raises(PhasescopeError, match="different config"):
        Recorder(tmp_path / "run", schedule=3).step(mlp(), step=0)
    with pytest.raises(PhasescopeError, match="needs the tokens seen"):
        Recorder(tmp_path / "other", schedule={"schedule": "every_tokens", "tokens": 100}).step(mlp(), step=1)


# --- the Hugging Face Trainer ---------------------------------------------------------------------
def test_hf_trainer_callback_records_a_tiny_llama_that_measures_and_report_read(tmp_path, tokenizer, monkeypatch,
                                                                             capsys):
    from torch.utils.data import Dataset
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from phasescope.integrations.hf import PhasescopeCallback

    rows = torch.randint(3, len(tokenizer), (64, 24), generator=torch.Generator().manual_seed(0))

    class Rows(Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, index):
            return {"input_ids": rows[index], "labels": rows[index]}

    class Witness(TrainerCallback):  # the weights at every step, recorded by the test itself
        def __init__(self):
            self.weights = {}

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.weights[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.weights[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def train(*callbacks) -> dict:
        witness = Witness()
        arguments = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=12, per_device_train_batch_size=8,
                                      learning_rate=1e-3, use_cpu=True, report_to=[], save_strategy="no",
                                      logging_steps=100, disable_tqdm=True, seed=0)
        Trainer(model=tiny_llama(len(tokenizer), seed=0).train(), args=arguments, train_dataset=Rows(),
                processing_class=tokenizer, callbacks=[*callbacks, witness]).train()
        return witness.weights

    out = tmp_path / "run"
    independent = train(PhasescopeCallback(out, schedule={"schedule": "log_linear", "log_until": 8, "every": 5}))
    without = train()  # the recorder changes nothing in training (AdamW's step count included)
    assert all(torch.equal(without[12][k], independent[12][k]) for k in without[12])
    assert checkpoint_steps(out) == [0, 1, 2, 4, 5, 8, 10]
    for step in checkpoint_steps(out):
        loaded = AutoModelForCausalLM.from_pretrained(out / "checkpoints" / f"step_{step:08d}", use_safetensors=True)
        weights = loaded.state_dict()
        assert all(torch.equal(weights[k], independent[step][k]) for k in independent[step]), step
    assert load_file(str(out / "checkpoints" / "step_00000010" / "optimizer.safetensors"))  # AdamW's moments
    wlt_lexicon(["en", "fr", "ru"]).save(out / "data" / "lexicon.parquet")
    code, stderr = phasescope_here(monkeypatch, capsys, "measure", str(out), "-m", "wlt,logit_lens",
                                   "--checkpoints", "0,10", "--set", "wlt.shots=2", "--set", "logit_lens.shots=2")
    assert code == 0, stderr
    assert set(MetricStore(RunDir.open(out)).read("wlt").step) == {0, 10}
    code, stderr = phasescope_here_report(out)
    assert code == 0, stderr


# --- Lightning --------------------------------------------------------------------------------------
def test_lightning_callback_records_an_mlp_that_loads_back_and_reports(tmp_path):
    import lightning.pytorch as lightning
    from torch.utils.data import DataLoader, TensorDataset

    from phasescope.integrations.lightning import PhasescopeCallback

    inputs, targets = torch.randn(64, 5), torch.randn(64, 2)

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    independent = {}

    class Witness(lightning.Callback):
        def on_train_start(self, trainer, module):
            independent[trainer.global_step] = {k: v.detach().clone() for k, v in module.state_dict().items()}

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            independent[trainer.global_step] = {k: v.detach().clone() for k, v in module.state_dict().items()}

    module = Module()
    trainer = lightning.Trainer(max_steps=10, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, accumulate_grad_batches=2,
                                callbacks=[PhasescopeCallback(tmp_path / "run", schedule=[0, 1, 3, 5, 10],
                                                              measures=["norms"]), Witness()])
    trainer.fit(module, DataLoader(TensorDataset(inputs, targets), batch_size=8))
    assert trainer.global_step == 10
    assert checkpoint_steps(tmp_path / "run") == [0, 1, 3, 5, 10]
    for step in (0, 1, 3, 5, 10):
        fresh = Module()
        fresh.load_state_dict(saved_weights(tmp_path / "run", step))
        assert all(torch.equal(fresh.state_dict()[k], independent[step][k]) for k in independent[step]), step
    momenta = load_file(str(tmp_path / "run" / "checkpoints" / "step_00000010" / "optimizer.safetensors"))
    assert set(momenta) == {f"{name}.momentum_buffer" for name, _ in module.named_parameters()}
    rows = MetricStore(RunDir.open(tmp_path / "run")).read("norms")
    assert sorted(rows[rows.metric == "l2"].step) == [0, 1, 3, 5, 10]
    code, stderr = phasescope_here_report(tmp_path / "run")
    assert code == 0, stderr
    assert "Recorded training" in (tmp_path / "run" / "report" / "index.html").read_text()


# --- SIGKILL and torchrun ---------------------------------------------------------------------------
def run_script(out: Path, steps: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), str(steps), *extra], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


@pytest.mark.slow
def test_sigkill_mid_write_leaves_nothing_partial_and_the_restart_continues(tmp_path):
    steps = 80
    reference = run_script(tmp_path / "reference", steps)
    assert reference.wait(timeout=HANG_GUARD_SECONDS) == 0, reference.stderr.read()
    out, delays, kills = tmp_path / "killed", random.Random(0), 0
    for target in (15, 35, 60):  # kill once the record passes each target, a random moment later
        process = run_script(out, steps)
        while process.poll() is None and len(list((out / "checkpoints").glob("step_*"))
                                             if (out / "checkpoints").is_dir() else []) < target:
            time.sleep(0.005)
        time.sleep(delays.uniform(0.0, 0.05))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            kills += 1
        for entry in (out / "checkpoints").iterdir():  # every visible checkpoint is complete
            if entry.name.startswith("step_"):
                assert (entry / "state.json").is_file() and load_file(str(entry / "model.safetensors")), entry
        MetricStore(RunDir.open(out)).read()  # every visible shard is readable
    assert kills >= 2
    final = run_script(out, steps)
    assert final.wait(timeout=HANG_GUARD_SECONDS) == 0, final.stderr.read()
    assert checkpoint_steps(out) == list(range(steps + 1))
    rows = MetricStore(RunDir.open(out)).read("norms")
    assert sorted(rows[rows.metric == "l1"].step) == list(range(steps + 1))
    last, expected = saved_weights(out, steps), saved_weights(tmp_path / "reference", steps)
    assert all(torch.equal(last[k], expected[k]) for k in expected)  # weights and momenta restored: bitwise


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_under_torchrun_one_process_writes_what_one_process_would(tmp_path, strategy):
    single = run_script(tmp_path / "single", 4)
    assert single.wait(timeout=HANG_GUARD_SECONDS) == 0, single.stderr.read()
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(SCRIPT), str(tmp_path / "run"), "4", strategy], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    opened = [json.loads(Path(f"{tmp_path / 'run'}.rank{rank}.json").read_text())["opened"] for rank in (0, 1)]
    assert opened == [True, False]  # rank 0 wrote; rank 1 never touched the directory
    assert checkpoint_steps(tmp_path / "run") == checkpoint_steps(tmp_path / "single") == [0, 1, 2, 3, 4]
    for step in (0, 4):  # the gradients are averaged over the two halves: equal up to float rounding
        for file in ("model.safetensors", "optimizer.safetensors"):
            path = Path("checkpoints") / f"step_{step:08d}" / file
            if file == "optimizer.safetensors" and step == 0:
                assert not (tmp_path / "run" / path).exists()  # no momentum before the first step
                continue
            ours, theirs = load_file(str(tmp_path / "run" / path)), load_file(str(tmp_path / "single" / path))
            assert ours.keys() == theirs.keys()
            for name in theirs:
                assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6, msg=f"{path} {name}")
