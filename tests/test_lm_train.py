"""`phasescope train` on a kind: lm config, end to end and sized down; one-line errors for bad input."""

from __future__ import annotations

import math
import re
import string
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from phasescope.data.corpora import build_corpus
from phasescope.data.mixture import heldout_batches
from phasescope.errors import PhasescopeError
from phasescope.run import MetricStore, RunDir, load_config
from phasescope.train.lm import LMRunConfig
from tests.helpers import REPO_ROOT, phasescope, phasescope_here, tiny_config, write_config


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(RunDir.open(run).latest_checkpoint().path / "model.safetensors"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lm")
    result = phasescope("train", str(write_config(root / "tiny.yaml", tiny_config())), "--out", str(root / "run"))
    assert result.returncode == 0, result.stderr
    assert "trained to step 12 (3,072 tokens)" in result.stderr
    return root / "run"


def test_cli_trains_and_checkpoints_a_language_model(trained):
    run = RunDir.open(trained)
    assert [(c.step, c.tokens) for c in run.list_checkpoints()] == [(s, s * 256) for s in (0, 4, 8, 12)]
    assert sorted(p.name for p in (trained / "tokenizer").iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    checkpoint = run.checkpoint_dir(12)
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    assert model.config.vocab_size == len(tokenizer) == 300
    assert model.config.eos_token_id == tokenizer.eos_token_id
    ids = tokenizer('English: "dog" - Deutsch: "', return_tensors="pt").input_ids
    assert ids[0, 0] == tokenizer.bos_token_id
    log = MetricStore(run).read("train")
    losses = log[log.metric == "loss"].sort_values("step")
    assert losses.step.tolist() == list(range(12))
    assert abs(losses.value.iloc[0] - math.log(300)) < 0.1  # a 300-token vocabulary starts near uniform
    assert (log[log.metric == "tokens_per_second"].value > 0).all()
    # it learns: held-out English and Chinese text (never trained on) is better predicted at the end
    config = load_config(trained.parent / "tiny.yaml", LMRunConfig)
    initial = AutoModelForCausalLM.from_pretrained(run.checkpoint_dir(0))
    for language in ("en", "zh"):
        rows = heldout_batches(build_corpus(config.data), tokenizer, language, 32, 4)
        with torch.no_grad():
            before, after = (m(rows, labels=rows).loss.item() for m in (initial, model))
        assert abs(before - math.log(300)) < 0.1 and after < before - 0.5, (language, before, after)


def test_rerun_of_a_finished_run_trains_nothing(trained):
    before = final_weights(trained)
    result = phasescope("train", str(trained.parent / "tiny.yaml"), "--out", str(trained))
    assert result.returncode == 0, result.stderr
    assert "trained to step 12" in result.stderr and "resumed from step 12" in result.stderr
    after = final_weights(trained)
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_resume_against_a_changed_config_is_refused(trained, tmp_path, monkeypatch, capsys):
    changed = write_config(tmp_path / "changed.yaml", tiny_config(train={"lr": 1e-3}))
    code, stderr = phasescope_here(monkeypatch, capsys, "train", str(changed), "--out", str(trained))
    assert code == 2
    assert stderr.strip().splitlines() == [
        f"error: {trained} holds a run with a different config (train.lr: 0.01 -> 0.001); expected the same "
        "config to resume it, or a new run directory (--out)"]


@pytest.fixture
def one_line_error(tmp_path, monkeypatch, capsys):
    """The CLI's error for a config: one line, exit code 2, nothing written."""
    return lambda config: _one_line_error(tmp_path, config, monkeypatch, capsys)


def _one_line_error(tmp_path: Path, config: dict, monkeypatch, capsys) -> str:
    code, stderr = phasescope_here(monkeypatch, capsys, "train", str(write_config(tmp_path / "bad.yaml", config)),
                                   "--out", str(tmp_path / "run"))
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written
    return lines[0]


def test_unknown_language_code(tmp_path, one_line_error):
    line = one_line_error(tiny_config(data={"languages": ["en", "xx"]}))
    assert "unknown language code(s) 'xx'; supported: en, de, fr, es, tr, ru, ar, zh, ja" in line


def test_empty_language_folder(tmp_path, one_line_error):
    root = tmp_path / "corpus"
    (root / "en").mkdir(parents=True)
    (root / "en" / "a.txt").write_text("The dog sleeps.\n\nThe cat sees the dog.\n")
    (root / "de").mkdir()
    line = one_line_error(tiny_config(data={"source": "local", "root": str(root)}))
    assert line == f"error: {root / 'de'}: no *.txt, *.jsonl or *.parquet files (found nothing)"


def test_tokenizer_that_cannot_encode_a_script(tmp_path, one_line_error):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # a byte-level BPE whose alphabet holds only the bytes of ASCII text: Cyrillic bytes become <unk>
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>", "<unk>"], show_progress=False)
    core.train_from_iterator([string.printable] * 10, trainer=trainer)
    latin_only = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                         eos_token="</s>", pad_token="<pad>")
    latin_only.save_pretrained(tmp_path / "latin-only")
    line = one_line_error(tiny_config(data={"languages": ["en", "ru"]},
                                                tokenizer={"path": str(tmp_path / "latin-only")}))
    # English documents carry Russian glosses and glossary lines, so en has unknown tokens too
    assert re.fullmatch(r"error: the tokenizer cannot encode these languages' text: en \d+\.\d%, ru (\d+\.\d)% of "
                        r"tokens are unknown \(<unk>\), above the limit 1\.0%", line), line
    assert float(re.search(r"ru (\d+\.\d)%", line).group(1)) > 50


def test_checkpoint_schedule_beyond_the_budget(tmp_path, one_line_error):
    line = one_line_error(tiny_config(checkpoints={"schedule": "steps", "steps": [4, 40]}))
    assert line.endswith("checkpoints.steps: step 40 is beyond the step budget (max_steps 12)")
    line = one_line_error(tiny_config(checkpoints={"schedule": "every_tokens", "tokens": 10_000}))
    assert "one checkpoint every 10,000 tokens is beyond the token budget (12 steps x 256 = 3,072)" in line


@pytest.mark.parametrize("train, message", [
    ({"max_tokens": 1000}, "give exactly one of max_steps and max_tokens"),
    ({"seq_len": 128}, "train.seq_len (128) exceeds the model's max_position_embeddings (64)"),
    ({"micro_batch_size": 3}, "train.micro_batch_size (3) must divide the rows of each process"),
])
def test_bad_training_sections(tmp_path, one_line_error, train, message):
    config = tiny_config(train=train)
    path = write_config(tmp_path / "bad.yaml", config)
    if "micro_batch_size" in train:  # known only once the number of processes is
        assert message in one_line_error(config)
        return
    with pytest.raises(PhasescopeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path, LMRunConfig)


def test_shipped_lm_configs_validate():
    tiny = load_config(REPO_ROOT / "configs" / "multilingual-tiny.yaml", LMRunConfig)
    assert tiny.model.preset == "tiny" and tiny.data.source == "controlled"
    assert len(tiny.data.languages) == 9
    from phasescope.train.schedules import checkpoint_steps

    assert len(checkpoint_steps(tiny.checkpoints, tiny.train.total_steps, tiny.train.tokens_per_step)) >= 40
    paper = load_config(REPO_ROOT / "configs" / "multilingual-paper-1.7b.yaml", LMRunConfig)
    assert paper.model.preset == "paper-1.7b" and paper.data.source == "huggingface"
    assert paper.train.weight_decay == 0.01 and paper.distributed.strategy == "fsdp"
    steps = checkpoint_steps(paper.checkpoints, paper.train.total_steps, paper.train.tokens_per_step)
    assert len(steps) == 201  # the initialization + 200 uniform checkpoints
    assert 36e9 <= paper.train.total_steps * paper.train.tokens_per_step <= 38e9


def test_a_file_that_is_not_utf8_in_a_local_corpus_is_one_line_naming_it(tmp_path, one_line_error):
    root = tmp_path / "corpus"
    for language, text in (("en", "The dog sleeps.\n\nThe cat sees the dog.\n"),
                           ("de", "Der Hund schläft.\n\nDie Katze sieht den Hund.\n")):
        (root / language).mkdir(parents=True)
        (root / language / "a.txt").write_text(text * 40, encoding="utf-8")
    (root / "de" / "b.txt").write_bytes("Die Katze schläft.\n".encode("latin-1") * 40)  # ä as one byte, 0xe4
    line = one_line_error(tiny_config(data={"source": "local", "root": str(root), "languages": ["en", "de"]}))
    assert line.startswith(f"error: {root / 'de' / 'b.txt'}: not UTF-8 text (byte 0xe4 at offset")
