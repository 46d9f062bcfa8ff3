"""Helpers shared by the tests: the command line in a fresh process or in this one, and tiny LM configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from phasescope.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
# A subprocess limit that only catches a hang, far above any plausible time on a loaded machine: a
# test's own work is bounded by its steps and checkpoints, not by the clock.
HANG_GUARD_SECONDS = 3600


def tiny_config(**sections) -> dict:
    """A run of seconds: the built-in corpus, a 300-token BPE, a 1-layer 32-wide Llama, 12 steps."""
    config = {
        "kind": "lm", "seed": 0, "device": "cpu",
        # mostly monolingual text with short documents, so that 12 steps see every language's sentences
        # (the defaults' glossaries, half of all documents, are set for the demo's copy-then-translate order)
        "data": {"source": "controlled", "concepts_per_category": 4, "glossary_rate": 0.35, "repetition_rate": 0.35,
                 "sentences_per_document": [3, 8]},
        "tokenizer": {"vocab_size": 300, "documents_per_language": 20},
        "model": {"preset": "tiny", "num_layers": 1, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
                  "max_position_embeddings": 64},
        "train": {"max_steps": 12, "batch_size": 8, "seq_len": 32, "lr": 1e-2, "log_every": 4,
                  "lr_schedule": {"warmup_steps": 2, "decay_fraction": 0.25}},
        "checkpoints": {"schedule": "every_steps", "every": 4},
    }
    for name, value in sections.items():  # a section is updated, or replaced when it names another kind
        current = config.get(name, {})
        tags = [tag for tag in ("source", "schedule") if tag in value and value[tag] != current.get(tag)]
        config[name] = value if tags else {**current, **value}
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def phasescope(*args: str, timeout: float = HANG_GUARD_SECONDS, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a fresh process."""
    return subprocess.run([sys.executable, "-m", "phasescope.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT, env=env)


def phasescope_here(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The CLI's entry point in this process (no start-up cost): (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["phasescope", *args])
    try:
        main()
        code = 0
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().err
