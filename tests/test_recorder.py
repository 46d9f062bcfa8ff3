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

import numpy as np
import pandas as pd
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


def test_a_restarted_loop_supersedes_the_later_records_and_continues_without_duplicates(tmp_path, capsys):
    model, inputs = mlp(), torch.randn(16, 5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def train(recorder, start, end):
        recorder.step(model, optimizer, step=start)
        for step in range(start, end):
            optimizer.zero_grad()
            loss = model(inputs).pow(2).mean()
            loss.backward()
            optimizer.step()
            recorder.log_training(step + 1, loss=loss.detach(), lr=0.1)
            recorder.step(model, optimizer, step=step + 1)
        recorder.finish(model, optimizer, step=end)
        return recorder

    train(Recorder(tmp_path / "run", schedule=2, measures=["norms"]), 0, 9)
    first = {step: saved_weights(tmp_path / "run", step) for step in (8, 9)}
    model.load_state_dict(saved_weights(tmp_path / "run", 6))  # the user resumes from their step-6 checkpoint
    capsys.readouterr()
    train(Recorder(tmp_path / "run", schedule=2, measures=["norms"]), 6, 16)
    assert "resumed at step 6; 6 checkpoints and shards of later steps moved to" in capsys.readouterr().err
    assert checkpoint_steps(tmp_path / "run") == list(range(0, 17, 2))
    superseded = tmp_path / "run" / "superseded" / "after_step_00000006"
    for step, weights in first.items():  # the first trajectory's later records: moved aside, bitwise
        assert all(torch.equal(weights[k], saved_weights(superseded, step)[k]) for k in weights)
    store = MetricStore(RunDir.open(tmp_path / "run"))
    rows = store.read("norms")
    assert sorted(rows[rows.metric == "l1"].step) == list(range(0, 17, 2))  # one shard per step
    train_rows = store.read("train")
    losses = train_rows[train_rows.metric == "loss"].sort_values("step")
    assert list(losses.step) == [*range(1, 7), *range(7, 17)]  # steps 7-9 of the first run moved with their shard
    assert (train_rows[train_rows.metric == "lr"].value == 0.1).all()


@pytest.mark.parametrize("arguments, message", [
    (dict(measures=["flatness"]), "unknown inline measure 'flatness'"),
    (dict(measures=["loss"]), "need a held batch"),
    (dict(measures=["sharpness"], batch=(1, 2)), "needs loss_fn"),
    (dict(schedule="sometimes"), "schedule"),
    (dict(every="often"), "^every: "),
    (dict(schedule={"schedule": "every_steps", "every": 0}), "schedule.every_steps.every"),
    (dict(measures=["wlt"]), "needs the model's tokenizer"),
    (dict(measures={"wlt": {"shots": -1}}, tokenizer=object()), "measures.wlt.shots"),
    (dict(measures={"norms": {"p": 1}}), "the built-in norms measure has no settings"),
    (dict(measures=["loss"], batch=(1, 2, 3)), r"batch: expected \(inputs, targets\)"),
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
def hf_rows(tokenizer) -> torch.utils.data.Dataset:
    from torch.utils.data import Dataset

    rows = torch.randint(3, len(tokenizer), (64, 24), generator=torch.Generator().manual_seed(0))

    class Rows(Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, index):
            return {"input_ids": rows[index], "labels": rows[index]}

    return Rows()


def hf_trainer(tmp_path: Path, tokenizer, callbacks: list, **arguments):
    from transformers import Trainer, TrainingArguments

    defaults = dict(output_dir=str(tmp_path / "hf"), max_steps=12, per_device_train_batch_size=8, learning_rate=1e-3,
                    use_cpu=True, report_to=[], save_strategy="no", logging_steps=100, disable_tqdm=True, seed=0)
    return Trainer(model=tiny_llama(len(tokenizer), seed=0).train(),
                   args=TrainingArguments(**{**defaults, **arguments}), train_dataset=hf_rows(tokenizer),
                   processing_class=tokenizer, callbacks=callbacks)


def test_hf_trainer_callback_records_a_tiny_llama_that_measures_and_report_read(tmp_path, tokenizer, monkeypatch,
                                                                             capsys):
    from transformers import AutoModelForCausalLM, TrainerCallback

    from phasescope.integrations.hf import PhasescopeCallback

    class Witness(TrainerCallback):  # the weights at every step and every log, recorded by the test itself
        def __init__(self):
            self.weights, self.logs = {}, []

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.weights[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.weights[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append((state.global_step, dict(logs)))

    out = tmp_path / "run"
    witness = Witness()  # in callbacks=, before the recorder: where the Trainer's reporting callbacks are
    trainer = hf_trainer(tmp_path, tokenizer, [witness], logging_steps=1)
    PhasescopeCallback.add_to(trainer, out, schedule={"schedule": "log_linear", "log_until": 8, "every": 5},
                              measures=["norms"])
    trainer.train()
    independent = witness.weights
    without = Witness()
    hf_trainer(tmp_path, tokenizer, [without], logging_steps=1).train()  # the recorder changes nothing in training
    assert all(torch.equal(without.weights[12][k], independent[12][k]) for k in independent[12])
    assert checkpoint_steps(out) == [0, 1, 2, 4, 5, 8, 10, 12]  # 12: the last step, which no schedule names
    for step in checkpoint_steps(out):
        loaded = AutoModelForCausalLM.from_pretrained(out / "checkpoints" / f"step_{step:08d}", use_safetensors=True)
        weights = loaded.state_dict()
        assert all(torch.equal(weights[k], independent[step][k]) for k in independent[step]), step
    moments = load_file(str(out / "checkpoints" / "step_00000010" / "state.safetensors"))  # phasescope train's format
    assert {"optimizer.model.norm.weight.exp_avg", "optimizer.model.norm.weight.exp_avg_sq"} <= set(moments)
    # the Trainer's own loss, learning rate and gradient norm of every step, as the train rows
    store = MetricStore(RunDir.open(out))
    train = store.read("train").pivot_table(index="step", columns="metric", values="value")
    logged = {step: logs for step, logs in witness.logs if "loss" in logs}
    assert sorted(train.index) == sorted(logged) == list(range(1, 13))
    for step, logs in logged.items():
        assert train.loc[step, "loss"] == pytest.approx(logs["loss"], rel=1e-12)
        assert train.loc[step, "lr"] == pytest.approx(logs["learning_rate"], rel=1e-12)
        assert train.loc[step, "grad_norm"] == pytest.approx(logs["grad_norm"], rel=1e-12)
    # the inline measures reach a callback that logs after the recorder (as W&B and TensorBoard do)
    norms = store.read("norms").set_index(["step", "metric"]).value
    reported = {step: logs["phasescope/norms/l1"] for step, logs in witness.logs if "phasescope/norms/l1" in logs}
    assert sorted(reported) == [1, 2, 4, 5, 8, 10, 12]  # step 0 is measured before the Trainer logs anything
    assert all(value == pytest.approx(norms[(step, "l1")], rel=1e-12) for step, value in reported.items())
    wlt_lexicon(["en", "fr", "ru"]).save(out / "data" / "lexicon.parquet")
    (tmp_path / "heldout.txt").write_text("the cat sat on the mat and looked at the dog\n" * 20, encoding="utf-8")
    code, stderr = phasescope_here(monkeypatch, capsys, "measure", str(out), "-m", "wlt,logit_lens,lm_sharpness",
                                   "--checkpoints", "0,10", "--set", "wlt.shots=2", "--set", "logit_lens.shots=2",
                                   "--set", "lm_sharpness.k=1", "--set", "lm_sharpness.max_iter=8",
                                   "--set", f"lm_sharpness.texts={{en: {tmp_path / 'heldout.txt'}}}")
    assert code == 0, stderr
    assert set(store.read("wlt").step) == {0, 10}
    sharpness = store.read("lm_sharpness")  # the recorded AdamW state is read as phasescope train's is
    assert set(sharpness[sharpness.metric == "preconditioned_sharpness"].step) == {10}
    code, stderr = phasescope_here_report(out)
    assert code == 0, stderr


def test_hf_every_tokens_schedule_counts_the_trainers_tokens_or_says_what_is_missing(tmp_path, tokenizer):
    from phasescope.integrations.hf import PhasescopeCallback

    schedule = {"schedule": "every_tokens", "tokens": 8 * 24 * 3}  # every third step
    callback = PhasescopeCallback(tmp_path / "run", schedule=schedule)
    hf_trainer(tmp_path, tokenizer, [callback], max_steps=7, include_num_input_tokens_seen=True).train()
    assert checkpoint_steps(tmp_path / "run") == [0, 3, 6, 7]
    with pytest.raises(PhasescopeError, match="include_num_input_tokens_seen=True") as error:
        hf_trainer(tmp_path, tokenizer, [PhasescopeCallback(tmp_path / "other", schedule=schedule)],
                   max_steps=2).train()
    assert "\n" not in str(error.value)


def test_hf_resume_supersedes_later_records_and_restores_the_schedule_position(tmp_path, tokenizer):
    from phasescope.integrations.hf import PhasescopeCallback

    out, schedule = tmp_path / "run", {"schedule": "every_tokens", "tokens": 8 * 24 * 2}
    arguments = dict(max_steps=8, include_num_input_tokens_seen=True, save_strategy="steps", save_steps=3,
                     restore_callback_states_from_checkpoint=True)
    hf_trainer(tmp_path, tokenizer, [PhasescopeCallback(out, schedule=schedule, measures=["norms"])],
               **arguments).train()
    first = {step: saved_weights(out, step) for step in (4, 6, 8)}
    resumed = PhasescopeCallback(out, schedule=schedule, measures=["norms"])
    trainer = hf_trainer(tmp_path, tokenizer, [resumed], **arguments)
    trainer.train(resume_from_checkpoint=str(tmp_path / "hf" / "checkpoint-3"))
    restored = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, PhasescopeCallback))
    assert restored.schedule_state["last_tokens"] == 8 * 24 * 3  # the position at the Trainer's checkpoint
    assert checkpoint_steps(out) == [0, 2, 4, 6, 8]
    superseded = RunDir(out / "superseded" / "after_step_00000003")
    assert [info.step for info in superseded.list_checkpoints()] == [4, 6, 8]  # moved aside, not deleted
    for step, weights in first.items():
        moved = load_file(str(superseded.checkpoint_dir(step) / "model.safetensors"))
        assert all(torch.equal(weights[k], moved[k]) for k in weights)
    assert sorted(MetricStore(RunDir.open(out)).read("norms").query("metric == 'l1'").step) == [0, 2, 4, 6, 8]


# --- Lightning --------------------------------------------------------------------------------------
def test_lightning_callback_records_an_mlp_that_loads_back_and_reports(tmp_path, monkeypatch):
    import lightning.pytorch as lightning
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities import grad_norm
    from torch.utils.data import DataLoader, TensorDataset

    import phasescope.integrations.recorder as recorder_module
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
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
            return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)]

    independent, losses, norms, lrs, batches = {}, {}, {}, {}, []

    class Witness(lightning.Callback):  # Lightning's own values, recorded by the test
        def on_train_start(self, trainer, module):
            independent[trainer.global_step] = {k: v.detach().clone() for k, v in module.state_dict().items()}

        def on_before_optimizer_step(self, trainer, module, optimizer):
            norms[trainer.global_step + 1] = float(grad_norm(module, norm_type=2)["grad_2.0_norm_total"])
            lrs[trainer.global_step + 1] = optimizer.param_groups[0]["lr"]

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            independent[trainer.global_step] = {k: v.detach().clone() for k, v in module.state_dict().items()}
            batches.append(float(outputs["loss"]))
            losses.setdefault((len(batches) + 1) // 2, []).append(batches[-1])  # two batches a step

    gathers = []
    original = recorder_module._gathered
    monkeypatch.setattr(recorder_module, "_gathered", lambda *a: gathers.append(1) or original(*a))
    module = Module()
    trainer = lightning.Trainer(max_steps=11, accelerator="cpu", devices=1, logger=CSVLogger(tmp_path / "logs"),
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                accumulate_grad_batches=2, gradient_clip_val=0.05, log_every_n_steps=1,
                                callbacks=[PhasescopeCallback(tmp_path / "run", schedule=[0, 1, 3, 5, 10],
                                                              measures=["norms"]), Witness()])
    trainer.fit(module, DataLoader(TensorDataset(inputs, targets), batch_size=8))
    assert trainer.global_step == 11
    assert checkpoint_steps(tmp_path / "run") == [0, 1, 3, 5, 10, 11]  # 11: the last step
    assert len(gathers) == 6  # once per recorded step, not once per accumulated batch
    for step in (0, 1, 3, 5, 10, 11):
        fresh = Module()
        fresh.load_state_dict(saved_weights(tmp_path / "run", step))
        assert all(torch.equal(fresh.state_dict()[k], independent[step][k]) for k in independent[step]), step
    momenta = load_file(str(tmp_path / "run" / "checkpoints" / "step_00000010" / "state.safetensors"))
    assert set(momenta) == {f"optimizer.{name}.momentum_buffer" for name, _ in module.named_parameters()}
    store = MetricStore(RunDir.open(tmp_path / "run"))
    rows = store.read("norms")
    assert sorted(rows[rows.metric == "l2"].step) == [0, 1, 3, 5, 10, 11]
    # every optimizer step's loss (mean of its two batches), rate and gradient norm before clipping
    train = store.read("train").pivot_table(index="step", columns="metric", values="value")
    assert list(train.index) == list(range(1, 12))
    for step in range(1, 12):
        assert train.loc[step, "loss"] == pytest.approx(sum(losses[step]) / 2, rel=1e-6)
        assert train.loc[step, "grad_norm"] == pytest.approx(norms[step], rel=1e-5)
        assert train.loc[step, "lr"] == pytest.approx(lrs[step], rel=1e-12)
    assert train.loc[11, "lr"] == pytest.approx(0.1 * 0.9**2)  # the third epoch's rate (StepLR steps per epoch)
    # the inline measures in the trainer's logger
    logged = pd.read_csv(next((tmp_path / "logs").rglob("metrics.csv"))).dropna(subset=["phasescope/norms/l2"])
    assert list(logged.step) == [0, 1, 3, 5, 10, 11]
    assert np.allclose(logged["phasescope/norms/l2"], rows[rows.metric == "l2"].sort_values("step").value)
    code, stderr = phasescope_here_report(tmp_path / "run")
    assert code == 0, stderr
    page = (tmp_path / "run" / "report" / "index.html").read_text()
    assert "Recorded training" in page
    assert "a training run recorded by phasescope" in page and "study B" not in page  # an MLP: no study B


def test_recorder_state_round_trips_and_restores_the_schedule_and_warm_start(tmp_path):
    inputs, targets = torch.randn(16, 5), torch.randn(16, 2)
    schedule = {"schedule": "every_tokens", "tokens": 100}
    recorder = Recorder(tmp_path / "run", schedule=schedule, measures=["sharpness"], batch=(inputs, targets),
                        loss_fn=nn.functional.mse_loss)
    model = mlp()
    recorder.step(model, step=0, tokens=0)
    recorder.step(model, step=1, tokens=60)
    state = recorder.state_dict()
    size = sum(p.numel() for p in model.parameters())
    assert state["last_tokens"] == 60 and state["sharpness_start"].shape == (size,)
    resumed = Recorder(tmp_path / "run", schedule=schedule, measures=["sharpness"], batch=(inputs, targets),
                       loss_fn=nn.functional.mse_loss)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.builtin.sharpness_start, state["sharpness_start"])  # the next measure's warm start
    assert resumed.step(model, step=2, tokens=120)  # crossed 100 since the restored 60 (a fresh one would not know)


def test_recorder_refuses_deepspeed_zero3_in_one_line(tmp_path):
    model = mlp()
    for parameter in model.parameters():
        parameter.ds_id = 0  # what DeepSpeed ZeRO-3 puts on the parameters it partitions
    with pytest.raises(PhasescopeError, match="DeepSpeed ZeRO-3") as error:
        Recorder(tmp_path / "run", schedule=1).step(model, step=0)
    assert "\n" not in str(error.value) and not (tmp_path / "run").exists()


def test_inline_wlt_settings_are_hashed_into_its_shards(tmp_path, tokenizer):
    from phasescope.run import config_hash

    model = tiny_llama(len(tokenizer), seed=0)
    for settings in ({"max_concepts": 2, "shots": 1}, {"max_concepts": 3, "shots": 1}):
        Recorder(tmp_path / str(settings["max_concepts"]), schedule=[0], measures={"wlt": settings},
                 tokenizer=tokenizer).step(model, step=0)
    hashes = [{path.name.split("-")[1] for path in (tmp_path / name / "metrics" / "wlt").iterdir()} for name in "23"]
    assert hashes[0] != hashes[1]
    expected = {"inline": "wlt", "schedule": "checkpoints", "settings": {
        "lexicon": "cldr", "languages": None, "shots": 1, "seed": 0, "max_concepts": 2}}
    assert hashes[0] == {f"{config_hash(expected)}.parquet"}


def test_a_recorded_checkpoint_is_not_mistaken_for_resume_state(tmp_path):
    from phasescope.train.lm_checkpoint import has_resume_state

    model = mlp()
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 5)).sum().backward()
    optimizer.step()
    Recorder(tmp_path / "run", schedule=[1]).step(model, optimizer, step=1)
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000001"
    assert (checkpoint / "state.safetensors").is_file()
    assert not has_resume_state(checkpoint)  # path attribution takes the chord here, and says so


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
        for file in ("model.safetensors", "state.safetensors"):
            path = Path("checkpoints") / f"step_{step:08d}" / file
            if file == "state.safetensors" and step == 0:
                assert not (tmp_path / "run" / path).exists()  # no momentum before the first step
                continue
            ours, theirs = load_file(str(tmp_path / "run" / path)), load_file(str(tmp_path / "single" / path))
            assert ours.keys() == theirs.keys()
            for name in theirs:
                assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6, msg=f"{path} {name}")
