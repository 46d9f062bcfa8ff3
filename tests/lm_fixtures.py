"""Tiny causal LMs, a tokenizer and checkpoint series built inside the tests (no network).

- ``tiny_tokenizer()``: a byte-level BPE trained on a few sentences in several scripts.
- ``tiny_llama(vocab_size, seed)`` / ``tiny_gpt2(...)`` / ``tiny_neox(...)``: random models.
- ``write_local_run(path, steps)``: a phasescope run directory with HF-format checkpoints.
- ``write_hub_cache(cache, repo, revisions)``: a Hugging Face cache holding a repo whose branches
  are checkpoints, laid out as ``huggingface_hub`` downloads them, so the real loading code runs offline.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

SENTENCES = [
    'English: "dog" - Deutsch: "Hund"', 'Français: "chien" - Español: "perro"', 'Türkçe: "köpek"',
    'Русский: "собака"', 'العربية: "كلب"', '中文: "狗"', '日本語: "犬"', "The cat sees the dog.",
    "Die Katze sieht den Hund.", "Le chat voit le chien.", "Кошка видит собаку.", "猫が犬を見る。",
]


def tiny_tokenizer(vocab_size: int = 300):
    """A byte-level BPE (PreTrainedTokenizerFast) with bos/eos/pad tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(SENTENCES * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_llama(vocab_size: int, seed: int = 0, layers: int = 2, hidden: int = 32, heads: int = 4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=256, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(vocab_size: int, seed: int = 0, layers: int = 2, hidden: int = 32, heads: int = 4):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=256)
    return GPT2LMHeadModel(config).eval()


def tiny_neox(vocab_size: int, seed: int = 0, layers: int = 2, hidden: int = 32, heads: int = 4):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=256)
    return GPTNeoXForCausalLM(config).eval()


def write_local_run(path: Path, steps: list[int], tokens_per_step: int = 1000, tokenizer=None,
                    factory=tiny_llama) -> Path:
    """A run directory with one HF-format checkpoint per step (different random weights each)."""
    from phasescope.run import RunDir, atomic_directory

    tokenizer = tokenizer or tiny_tokenizer()
    run = RunDir.create(path, "kind: lm\n", exist_ok=True)
    for index, step in enumerate(steps):
        with atomic_directory(run.checkpoint_dir(step)) as directory:
            factory(len(tokenizer), seed=index).save_pretrained(directory)
            tokenizer.save_pretrained(directory)
            (directory / "state.json").write_text(json.dumps({"step": step, "tokens": step * tokens_per_step}))
    return run.path


def write_hub_cache(cache: Path, repo: str, revisions: list[str], tokenizer=None, factory=tiny_llama) -> Path:
    """A Hugging Face cache with ``repo`` whose branches ``revisions`` each hold a checkpoint."""
    tokenizer = tokenizer or tiny_tokenizer()
    root = Path(cache) / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    for index, revision in enumerate(revisions):
        commit = hashlib.sha1(revision.encode()).hexdigest()
        snapshot = root / "snapshots" / commit
        factory(len(tokenizer), seed=index).save_pretrained(snapshot)
        tokenizer.save_pretrained(snapshot)
        (root / "refs" / revision).write_text(commit)
    return Path(cache)
