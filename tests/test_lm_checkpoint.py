"""The LM training loop against a plain-torch reference; checkpoints load with transformers' Auto classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from transformers import AutoModelForCausalLM, AutoTokenizer

from phasescope.errors import PhasescopeError
from phasescope.models.llama import build_llama, count_parameters, tied_parameter_names, training_flops_per_token
from phasescope.run import MetricStore, RunDir, dump_config
from phasescope.run.checkpoint import flatten_optimizer_state, unflatten_optimizer_state
from phasescope.train.distributed import DistributedConfig, init_distributed
from phasescope.train.lm import LMRunConfig, run_training
from phasescope.train.lm_checkpoint import read_lm_checkpoint
from tests.lm_fixtures import tiny_tokenizer


class CopyStream:
    """Token tensors made by the test: each row is a random half followed by the same half again."""

    def __init__(self, vocab_size: int, batch_size: int, seq_len: int, seed: int = 0) -> None:
        self.vocab_size, self.batch_size, self.seq_len, self.seed = vocab_size, batch_size, seq_len, seed
        self.position = 0
        self.tokens_per_batch = batch_size * seq_len

    def batch_at(self, position: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + position)
        half = torch.randint(3, self.vocab_size, (self.batch_size, self.seq_len // 2), generator=generator)
        return torch.cat([half, half], dim=1)

    def next_batch(self) -> torch.Tensor:
        self.position += 1
        return self.batch_at(self.position - 1)

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def tiny_lm_config(**train) -> LMRunConfig:
    return LMRunConfig.model_validate({
        "device": "cpu", "seed": 1,
        "model": {"preset": "tiny", "num_layers": 2, "hidden_size": 32, "num_heads": 4, "intermediate_size": 64},
        "train": {"max_steps": 12, "batch_size": 4, "seq_len": 16, "lr": 3e-3, "weight_decay": 0.1, "grad_clip": 0.5,
                  "lr_schedule": {"warmup_steps": 3, "decay_fraction": 0.25, "min_lr_ratio": 0.1}, "log_every": 5,
                  **train},
        "checkpoints": {"schedule": "log_linear", "log_until": 4, "every": 5}})


def train_synthetic(config: LMRunConfig, path: Path, tokenizer=None):
    """run_training on a CopyStream; returns (trained in-memory model, outcome, run)."""
    tokenizer = tokenizer or tiny_tokenizer()
    run = RunDir.create(path, dump_config(config), exist_ok=True)
    if not (path / "tokenizer").exists():
        tokenizer.save_pretrained(path / "tokenizer")
    model = build_llama(config.model, len(tokenizer), config.seed)
    stream = CopyStream(len(tokenizer), config.train.batch_size, config.train.seq_len)
    context = init_distributed("cpu", DistributedConfig())
    outcome = run_training(config, run, model, stream, path / "tokenizer", context)
    return model, outcome, run


def reference_training(config: LMRunConfig, vocab_size: int, steps: int) -> dict[str, torch.Tensor]:
    """Independent loop: for-loop AdamW, the WSD rate written out, loss from the logits by hand."""
    train = config.train
    model = build_llama(config.model, vocab_size, config.seed)
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    gains = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": train.weight_decay},
                                   {"params": gains, "weight_decay": 0.0}],
                                  lr=train.lr, betas=train.betas, eps=train.eps, foreach=False)
    stream = CopyStream(vocab_size, train.batch_size, train.seq_len)
    peak, floor = train.lr, train.lr * 0.1
    # warmup 3 steps, stable until 9, linear decay over the last 3 updates (25% of 12)
    rates = [peak / 3, 2 * peak / 3, peak] + [peak] * 6 + [floor + (peak - floor) * f for f in (2 / 3, 1 / 3, 0)]
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = rates[step]
        batch = stream.next_batch()
        logits = model(input_ids=batch).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab_size).float(), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip, foreach=False)
        optimizer.step()
    return model.state_dict()


def test_training_matches_a_plain_torch_loop(tmp_path):
    config = tiny_lm_config()
    tokenizer = tiny_tokenizer()
    model, outcome, _ = train_synthetic(config, tmp_path / "run", tokenizer)
    assert (outcome.steps, outcome.tokens) == (12, 12 * 64)
    expected = reference_training(config, len(tokenizer), 12)
    for name, tensor in model.state_dict().items():
        assert_close(tensor, expected[name], rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(model.state_dict()["model.norm.weight"], torch.ones(32))  # it did train


def test_every_checkpoint_loads_with_auto_classes_and_matches_the_model(tmp_path):
    config = tiny_lm_config()
    tokenizer = tiny_tokenizer()
    model, outcome, run = train_synthetic(config, tmp_path / "run", tokenizer)
    assert outcome.checkpoints == [0, 1, 2, 4, 5, 10, 12]
    assert [c.step for c in run.list_checkpoints()] == outcome.checkpoints
    assert [c.tokens for c in run.list_checkpoints()] == [s * 64 for s in outcome.checkpoints]
    final = run.checkpoint_dir(12)
    assert sorted(p.name for p in final.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "state.json", "state.safetensors",
        "tokenizer.json", "tokenizer_config.json"]
    inputs = torch.tensor([tokenizer.encode('English: "dog" - Deutsch: "Hund"')])
    loaded = AutoModelForCausalLM.from_pretrained(final)
    model.eval()
    with torch.no_grad():
        assert_close(loaded(inputs).logits, model(inputs).logits, rtol=0, atol=0)
    loaded_tokenizer = AutoTokenizer.from_pretrained(final)
    assert loaded_tokenizer.encode("Hund собака 狗") == tokenizer.encode("Hund собака 狗")
    initial = AutoModelForCausalLM.from_pretrained(run.checkpoint_dir(0))
    fresh = build_llama(config.model, len(tokenizer), config.seed)
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(initial.state_dict()[name], tensor), name
    for checkpoint in run.list_checkpoints():
        AutoModelForCausalLM.from_pretrained(checkpoint.path)  # every one loads


def test_resume_state_and_training_log(tmp_path):
    config = tiny_lm_config()
    _, _, run = train_synthetic(config, tmp_path / "run")
    saved = read_lm_checkpoint(run.checkpoint_dir(10))
    assert (saved.step, saved.tokens) == (10, 640)
    assert saved.meta["data"] == {"position": 10}
    assert saved.meta["scheduler"]["next_lr"] == pytest.approx(3e-4 + 2.7e-3 / 3)  # 2nd of 3 decay updates
    assert saved.rng_states["torch_cpu"].dtype == torch.uint8
    state = saved.optimizer_state["state"]
    assert set(state) == set(saved.model_state)  # one entry per distinct tensor: the tied unembedding is stored once
    assert "lm_head.weight" not in saved.model_state and "model.embed_tokens.weight" in saved.model_state
    assert all(float(entry["step"]) == 10 for entry in state.values())
    assert [g["weight_decay"] for g in saved.optimizer_state["param_groups"]] == [0.1, 0.0]
    log = MetricStore(run).read("train")
    for metric in ("loss", "lr", "grad_norm"):
        assert sorted(log[log.metric == metric].step) == list(range(12))  # every step exactly once
    rates = log[log.metric == "lr"].sort_values("step").value.tolist()
    assert rates[:3] == pytest.approx([1e-3, 2e-3, 3e-3]) and rates[-1] == pytest.approx(3e-4)
    assert (log[log.metric == "grad_norm"].value > 0).all()
    assert sorted(log[log.metric == "tokens_per_second"].step) == [1, 2, 4, 5, 10, 12]  # log points
    assert json.loads((run.checkpoint_dir(12) / "state.json").read_text())["complete"] is True


def test_optimizer_state_flattens_and_back():
    state = {"state": {"model.norm.weight": {"step": torch.tensor(3.0), "exp_avg": torch.ones(4)}},
             "param_groups": [{"lr": 0.1, "betas": (0.9, 0.95), "params": ["model.norm.weight"]}]}
    tensors, groups = flatten_optimizer_state(state)
    assert sorted(tensors) == ["optimizer.model.norm.weight.exp_avg", "optimizer.model.norm.weight.step"]
    assert json.loads(json.dumps(groups)) == [{"lr": 0.1, "betas": [0.9, 0.95], "params": ["model.norm.weight"]}]
    back = unflatten_optimizer_state(tensors, groups)
    assert back["param_groups"] == state["param_groups"]
    assert torch.equal(back["state"]["model.norm.weight"]["exp_avg"], torch.ones(4))


def test_presets_and_flops():
    from phasescope.models.llama import LlamaModelConfig

    tiny = build_llama(LlamaModelConfig(preset="tiny"), 2048, 0)
    assert 1_000_000 <= count_parameters(tiny) <= 2_000_000
    assert tied_parameter_names(tiny) == {"lm_head.weight"}
    # 4 layers x (4 x 128^2 attention + 3 x 128 x 384 MLP + 2 x 128 norm gains) + final norm
    non_embedding = 4 * (4 * 128**2 + 3 * 128 * 384 + 2 * 128) + 128
    assert count_parameters(tiny, embeddings=False) == non_embedding
    assert training_flops_per_token(tiny, 256) == 6 * (non_embedding + 2048 * 128) + 6 * 4 * 256 * 128
    with torch.device("meta"):
        paper = build_llama(LlamaModelConfig(preset="paper-1.7b"), 32000, 0)
    assert paper.config.num_hidden_layers == 24 and paper.config.hidden_size == 2048
    assert paper.config.num_attention_heads == 16
    assert 1.6e9 < count_parameters(paper) < 1.8e9
    with pytest.raises(PhasescopeError, match="hidden_size .* must be a multiple of num_heads"):
        from phasescope.run import validate_config
        validate_config({"preset": "tiny", "num_heads": 5}, LlamaModelConfig)
