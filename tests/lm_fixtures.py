"""Tiny causal LMs, a tokenizer and checkpoint series built inside the tests (no network).

- ``tiny_tokenizer()``: a byte-level BPE trained on a few sentences in several scripts.
- ``tiny_llama(vocab_size, seed)`` / ``tiny_gpt2(...)`` / ``tiny_neox(...)``: random models.
- ``write_local_run(path, steps)``: a phasescope run directory with HF-format checkpoints.
- ``write_hub_cache(cache, repo, revisions)``: a Hugging Face cache holding a repo whose branches
  are checkpoints, laid out as ``huggingface_hub`` downloads them, so the real loading code runs offline.
- ``FAMILIES``: a tiny model of every architecture family the adapters cover.
- ``wlt_lexicon(languages)``, ``small_lexicon(languages)``: small lexicons for WLT prompts;
  ``tiny_lm_run(path)``: a local run with a lexicon and held-out text, as a series.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import torch

from phasescope.data.lexicon import Lexicon

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


# --- every architecture family, for the adapters and the logit lens ------------------------------
ADAPTER_VOCAB = 61  # the tiny models of every architecture family


def tiny_qwen2(vocab_size, seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return Qwen2ForCausalLM(config).eval()


def tiny_olmo(vocab_size, seed=0, version=1):
    import transformers

    torch.manual_seed(seed)
    config_cls, model_cls = ((transformers.OlmoConfig, transformers.OlmoForCausalLM) if version == 1
                             else (transformers.Olmo2Config, transformers.Olmo2ForCausalLM))
    config = config_cls(vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                        num_attention_heads=4, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return model_cls(config).eval()


FAMILIES = {
    "llama": (lambda: tiny_llama(ADAPTER_VOCAB), "llama"),
    "qwen2": (lambda: tiny_qwen2(ADAPTER_VOCAB), "llama"),
    "olmo": (lambda: tiny_olmo(ADAPTER_VOCAB, version=1), "llama"),
    "olmo2": (lambda: tiny_olmo(ADAPTER_VOCAB, version=2), "llama"),
    "gpt_neox": (lambda: tiny_neox(ADAPTER_VOCAB), "gpt_neox"),
    "gpt2": (lambda: tiny_gpt2(ADAPTER_VOCAB), "gpt2"),
}


# --- lexicons and a local run with one, for the WLT measures -----------------------------------
WLT_WORDS = {  # seven concepts in the nine languages
    "dog": dict(en="dog", de="Hund", fr="chien", es="perro", tr="köpek", ru="собака", ar="كلب", zh="狗", ja="犬"),
    "cat": dict(en="cat", de="Katze", fr="chat", es="gato", tr="kedi", ru="кошка", ar="قطة", zh="猫", ja="猫"),
    "house": dict(en="house", de="Haus", fr="maison", es="casa", tr="ev", ru="дом", ar="بيت", zh="房子", ja="家"),
    "water": dict(en="water", de="Wasser", fr="eau", es="agua", tr="su", ru="вода", ar="ماء", zh="水", ja="水"),
    "sun": dict(en="sun", de="Sonne", fr="soleil", es="sol", tr="güneş", ru="солнце", ar="شمس", zh="太阳", ja="太陽"),
    "moon": dict(en="moon", de="Mond", fr="lune", es="luna", tr="ay", ru="луна", ar="قمر", zh="月亮", ja="月"),
    "tree": dict(en="tree", de="Baum", fr="arbre", es="árbol", tr="ağaç", ru="дерево", ar="شجرة", zh="树", ja="木"),
}
WLT_VARIANTS = {("cat", "de"): ["Katze", "Kater"], ("house", "en"): ["house", "home"],
                ("dog", "fr"): ["chien", "chienne"]}


def wlt_lexicon(languages=None) -> Lexicon:
    """Seven concepts in the nine languages, a few with extra valid variants."""
    rows = [(concept, "thing", language, word, WLT_VARIANTS.get((concept, language), [word]))
            for concept, words in WLT_WORDS.items() for language, word in words.items()
            if languages is None or language in languages]
    return Lexicon(pd.DataFrame(rows, columns=["concept", "category", "language", "word", "variants"]))


SMALL_WORDS = {  # five concepts in four languages
    "dog": dict(en="dog", de="Hund", fr="chien", ru="собака"),
    "cat": dict(en="cat", de="Katze", fr="chat", ru="кошка"),
    "house": dict(en="house", de="Haus", fr="maison", ru="дом"),
    "sun": dict(en="sun", de="Sonne", fr="soleil", ru="солнце"),
    "moon": dict(en="moon", de="Mond", fr="lune", ru="луна"),
}


def small_lexicon(languages=("en", "de", "ru")):
    """Five concepts, a few languages: a WLT set of a few dozen items for the tiny models."""
    rows = [(concept, "thing", language, word, [word]) for concept, words in SMALL_WORDS.items()
            for language, word in words.items() if language in languages]
    return Lexicon(pd.DataFrame(rows, columns=["concept", "category", "language", "word", "variants"]))


def tiny_lm_run(path, steps=(0, 10), factory=tiny_llama):
    """A local run of tiny checkpoints with a lexicon and held-out text files; returns (series, texts)."""
    from phasescope.run.series import open_series

    run = write_local_run(path, list(steps), tokenizer=tiny_tokenizer(), factory=factory)
    small_lexicon().save(run / "data" / "lexicon.parquet")
    texts = {}
    for language, sentences in {"en": SENTENCES[7:8] * 6, "de": SENTENCES[8:9] * 6}.items():
        texts[language] = str(run / "data" / f"{language}.txt")
        (run / "data" / f"{language}.txt").write_text("\n\n".join(sentences), encoding="utf-8")
    return open_series(run), texts


def replayable_config(max_steps: int = 12) -> dict:
    """A ``phasescope train`` config whose replay exercises every term of AdamW: weight decay on, clipping
    active (lr 1e-2 on a fresh model), warmup then decay; checkpoints every 4 steps."""
    from tests.helpers import tiny_config

    return tiny_config(train={"max_steps": max_steps, "batch_size": 8, "seq_len": 32, "lr": 1e-2, "log_every": 4,
                              "weight_decay": 0.1, "grad_clip": 0.5,
                              "lr_schedule": {"warmup_steps": 2, "decay_fraction": 0.25}})


def replayable_run(path: Path, config: dict) -> Path:
    """Train ``config`` into ``path``."""
    from phasescope.run import validate_config
    from phasescope.train.lm import LMRunConfig, train_lm

    train_lm(validate_config(config, LMRunConfig), path)
    return path


def run_model(run_path: Path, config: dict):
    """A fresh model (its step-0 weights) of the run's architecture."""
    from phasescope.data.tokenizer import load_tokenizer
    from phasescope.models.llama import build_llama
    from phasescope.run import validate_config
    from phasescope.train.lm import LMRunConfig

    validated = validate_config(config, LMRunConfig)
    tokenizer = load_tokenizer(run_path / "tokenizer")
    return build_llama(validated.model, len(tokenizer), validated.seed, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
