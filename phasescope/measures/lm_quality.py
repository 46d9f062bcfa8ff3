"""Basic linguistic ability of a causal LM: held-out loss and next-token accuracy per language, and
minimal-pair accuracy (MultiBLiMP, the built-in pairs, and pairs made from held-out real sentences).

The reference ("Copy First, Translate Later", arXiv 2604.17633) finds that basic linguistic
ability, measured on MultiBLiMP minimal pairs (Jumelet et al., 2025, arXiv 2504.02768), arrives
early, together with token-level copying. A minimal pair is scored the standard way (BLiMP,
Warstadt et al. 2020): the model is right when the grammatical sentence has the higher summed
token log-probability.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import Field, TypeAdapter, ValidationError, model_validator
from torch import Tensor, nn

from phasescope.data.languages import check_language_codes
from phasescope.errors import PhasescopeError
from phasescope.files import read_text_file
from phasescope.measures.lm_forward import autocast_for, model_device
from phasescope.measures.registry import Measure, MeasureContext, register_measure
from phasescope.models.losses import next_token_losses
from phasescope.run.config import StrictModel, config_hash
from phasescope.run.series import CheckpointSeries


# --- held-out loss and accuracy ------------------------------------------------------------------
def heldout_scores(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None, batch_size: int = 16
                   ) -> dict[str, float]:
    """Mean next-token cross-entropy and top-1 accuracy over a fixed batch of sequences.

    Every position but the last predicts the next token; with ``attention_mask`` (right padding),
    only targets that are real tokens count.

    Args:
        input_ids: (rows, seq_len) token ids.
        attention_mask: (rows, seq_len) 1 for real tokens, 0 for padding (default: all real).

    Returns:
        ``loss`` (nats per predicted token), ``accuracy``, ``tokens`` (predicted tokens counted).
    """
    if input_ids.ndim != 2 or input_ids.shape[1] < 2:
        raise PhasescopeError(f"held-out batch: expected token ids (rows, seq_len >= 2), got shape "
                              f"{tuple(input_ids.shape)}")
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    device = model_device(model)
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, input_ids.shape[0], batch_size):
            ids = input_ids[start:start + batch_size].to(device)
            rows_mask = mask[start:start + batch_size].to(device)
            with autocast_for(device):
                logits = model(input_ids=ids, attention_mask=rows_mask).logits
            targets = ids[:, 1:]
            keep = rows_mask[:, 1:].bool()
            losses = next_token_losses(logits, ids).view(targets.shape)  # (B, T-1)
            loss_sum += float(losses[keep].double().sum())
            correct += int((logits[:, :-1].argmax(-1) == targets)[keep].sum())
            count += int(keep.sum())
    if count == 0:
        raise PhasescopeError("held-out batch has no token to predict")
    return {"loss": loss_sum / count, "accuracy": correct / count, "tokens": count}


# --- sentence log-probabilities and minimal pairs -----------------------------------------------
def sentence_token_ids(tokenizer, sentences: Sequence[str]) -> list[list[int]]:
    """Token ids of each sentence behind a start token; the sentence's tokens are those after the first id.

    The start token (BOS, else EOS as GPT-2 and Pythia use it) makes the first word scorable; a
    tokenizer with neither scores from the sentence's second token on.
    """
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prefix = [start] if start is not None else []
    return [prefix + tokenizer.encode(sentence, add_special_tokens=False) for sentence in sentences]


def sequence_log_probs(model: nn.Module, token_ids: Sequence[Sequence[int]], context: int = 1,
                       batch_size: int = 32, pad_id: int = 0) -> np.ndarray:
    """Summed log-probability of the tokens after the first ``context`` of each sequence.

    Sequences are sorted by length, right-padded (a causal model's real tokens never see the
    padding behind them) and run ``batch_size`` at a time; the result is in the input order.

    Returns:
        (n,) float64: ``sum_{i >= context} log p(x_i | x_<i)``.
    """
    device = model_device(model)
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    scores = np.zeros(len(token_ids))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(token_ids[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, index in enumerate(chunk):
                sequence = token_ids[index]
                ids[row, :len(sequence)] = torch.tensor(sequence, dtype=torch.long)
                mask[row, :len(sequence)] = 1
            ids, mask = ids.to(device), mask.to(device)
            with autocast_for(device):
                logits = model(input_ids=ids, attention_mask=mask).logits
            log_probs = -next_token_losses(logits, ids).view(ids[:, 1:].shape)  # (B, T-1)
            scored = mask[:, 1:].clone()
            scored[:, :context - 1] = 0  # target i+1 is scored when i + 1 >= context
            totals = (log_probs.double() * scored).sum(1)
            scores[chunk] = totals.cpu().numpy()
    return scores


def minimal_pair_correct(model: nn.Module, tokenizer, good: Sequence[str], bad: Sequence[str],
                         batch_size: int = 32) -> np.ndarray:
    """Per pair, whether the grammatical sentence gets the higher summed log-probability.

    Returns:
        (n,) bool. Ties count as wrong.
    """
    if len(good) != len(bad):
        raise PhasescopeError(f"minimal pairs: {len(good)} good sentences but {len(bad)} bad ones")
    ids = sentence_token_ids(tokenizer, [*good, *bad])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = sequence_log_probs(model, ids, batch_size=batch_size, pad_id=pad_id)
    return scores[:len(good)] > scores[len(good):]


# --- held-out data of a series -------------------------------------------------------------------
class HeldoutDataConfig(StrictModel):
    """Which held-out text: the held-out split of the run's own corpus, or local text files (a Hub series)."""

    # language code -> a local text file (one document per blank-line-separated block);
    # None: the held-out split of the corpus in the run's config.yaml (an LM run of `phasescope train`)
    texts: dict[str, str] | None = None
    languages: list[str] | None = None  # None: every language of the corpus (or of `texts`)
    seq_len: int = Field(128, ge=2)  # tokens per row (the demo trains on 128)
    sequences: int = Field(8, ge=1)  # rows per language: a fixed batch, the same at every checkpoint


class TextFilesCorpus:
    """Local text files as a corpus whose every document is held out (documents: blank-line blocks)."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.languages = check_language_codes(list(files), "texts")
        self.files = {language: Path(path).expanduser() for language, path in files.items()}
        for language, path in self.files.items():
            if not path.is_file():
                raise PhasescopeError(f"held-out text for {language!r}: {path} is not a file")

    def documents(self, language: str, split: str = "heldout", start: int = 0) -> Iterator[str]:
        if split != "heldout":
            return iter(())
        text = read_text_file(self.files[language])
        blocks = [block.strip() for block in text.split("\n\n") if block.strip()]
        return iter(blocks[start:])

    def size_hint(self, language: str) -> float:
        return float(self.files[language].stat().st_size)


def run_corpus(series: CheckpointSeries):
    """The corpus of an LM run, from the ``data:`` section of its ``config.yaml``."""
    from phasescope.data.corpora import CorpusConfig, build_corpus

    raw = series.run.read_config_dict()
    if "data" not in raw:
        raise PhasescopeError(f"{series.run.config_path} has no corpus (`data:`) section: for a series that was "
                              "not trained by phasescope, give held-out text files as `texts: {language: file}`")
    try:
        corpus_config = TypeAdapter(CorpusConfig).validate_python(raw["data"])
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise PhasescopeError(f"{series.run.config_path}: data.{where}: {problem['msg']}") from None
    return build_corpus(corpus_config)


def heldout_data(series: CheckpointSeries, config: HeldoutDataConfig, tokenizer) -> dict[str, Tensor]:
    """A fixed (sequences, seq_len) batch of held-out token ids per language, packed like training data."""
    from phasescope.data.mixture import heldout_batches

    corpus = TextFilesCorpus(config.texts) if config.texts is not None else run_corpus(series)
    languages = config.languages if config.languages is not None else list(corpus.languages)
    unknown = [language for language in languages if language not in corpus.languages]
    if unknown:
        raise PhasescopeError(f"no held-out text in language(s) {', '.join(unknown)}; "
                              f"there is {', '.join(corpus.languages)}")
    return {language: heldout_batches(corpus, tokenizer, language, config.seq_len, config.sequences)
            for language in languages}


def shared_heldout_data(context: MeasureContext, config: HeldoutDataConfig) -> dict[str, Tensor]:
    """:func:`heldout_data` built once per executor run (keyed by the data fields of ``config``)."""
    data = HeldoutDataConfig.model_validate(config.model_dump(include=set(HeldoutDataConfig.model_fields)))
    return context.shared(f"heldout:{config_hash(data)}",
                          lambda: heldout_data(context.series, data, context.tokenizer))


# --- the measures --------------------------------------------------------------------------------
class LMQualityConfig(HeldoutDataConfig):
    """Config of the ``lm_quality`` measure."""

    batch_size: int = Field(16, ge=1)  # rows per forward pass


def compute_lm_quality(context: MeasureContext, config: LMQualityConfig) -> list[dict]:
    """``heldout_loss`` and ``heldout_accuracy`` per language (``src``) and over all (token-weighted)."""
    rows, losses, correct, total = [], 0.0, 0.0, 0
    for language, batch in shared_heldout_data(context, config).items():
        scores = heldout_scores(context.model, batch, batch_size=config.batch_size)
        rows += [{"metric": "heldout_loss", "value": scores["loss"], "src": language},
                 {"metric": "heldout_accuracy", "value": scores["accuracy"], "src": language}]
        losses += scores["loss"] * scores["tokens"]
        correct += scores["accuracy"] * scores["tokens"]
        total += scores["tokens"]
    return rows + [{"metric": "heldout_loss", "value": losses / total},
                   {"metric": "heldout_accuracy", "value": correct / total}]


LM_QUALITY_MEASURE = register_measure(Measure(
    name="lm_quality", config_cls=LMQualityConfig, compute=compute_lm_quality,
    description="held-out next-token loss and accuracy per language",
))


class MinimalPairsConfig(StrictModel):
    """Config of ``minimal_pairs``."""

    multiblimp: str | None = None  # a MultiBLiMP .tsv file or folder of them (local); None: not scored
    # pairs built from the controlled corpus's templates (the run's controlled corpus, else the default one);
    # None: when the run was not trained on real text (a controlled-corpus run, or a series without `data:`)
    builtin: bool | None = None
    # adjacent-swap pairs per language from sentences of the held-out documents of the run's corpus (those
    # whose swap keeps the token count); None: 100 for a run trained on real text (local or Hub), 0 otherwise
    heldout_pairs: int | None = Field(None, ge=0)
    languages: list[str] | None = None  # None: every language of the pairs
    pairs_per_template: int = Field(4, ge=1)  # built-in pairs per (template, language, phenomenon)
    seed: int = 0  # draws the built-in pairs' concepts and the held-out sentences and swaps
    batch_size: int = Field(32, ge=1)  # sentences per forward pass

    @model_validator(mode="after")
    def _some_pairs(self) -> MinimalPairsConfig:
        if self.multiblimp is None and self.builtin is False and self.heldout_pairs == 0:
            raise ValueError("no minimal pairs: set `multiblimp:` to a path, `heldout_pairs:` above 0 or keep "
                             "`builtin: true`")
        return self


HELDOUT_PAIRS = 100  # held-out sentence pairs per language on real text (heldout_pairs: None)
HELDOUT_DOCUMENTS = 400  # held-out documents per language the sentences are drawn from, at most


def _controlled_corpus(series: CheckpointSeries):
    from phasescope.data.controlled_corpus import ControlledCorpus, ControlledCorpusConfig

    raw = series.run.read_config_dict().get("data")
    if isinstance(raw, dict) and raw.get("source", "controlled") == "controlled":
        try:
            return ControlledCorpus(ControlledCorpusConfig.model_validate(raw))
        except ValidationError as error:
            raise PhasescopeError(f"{series.run.config_path}: data: {error.errors()[0]['msg']}") from None
    return ControlledCorpus(ControlledCorpusConfig())


def _trained_on_real_text(series: CheckpointSeries) -> bool:
    raw = series.run.read_config_dict().get("data")
    return isinstance(raw, dict) and raw.get("source", "controlled") != "controlled"


def heldout_sentence_pairs(series: CheckpointSeries, pairs_per_language: int, languages: list[str] | None,
                           seed: int, tokenizer) -> pd.DataFrame:
    """Adjacent-swap minimal pairs from sentences of the held-out documents of the run's corpus, kept where the
    swapped sentence has as many tokens as the original (a swap that splits a merged token would otherwise
    be told apart by its length alone: an untrained model already prefers the shorter sentence)."""
    from itertools import islice

    from phasescope.data.minimal_pairs import sentence_minimal_pairs

    corpus = run_corpus(series)
    chosen = [language for language in (languages or corpus.languages) if language in corpus.languages]
    documents = {language: list(islice(corpus.documents(language, split="heldout"), HELDOUT_DOCUMENTS))
                 for language in chosen}
    pairs = sentence_minimal_pairs(documents, None, seed)
    if pairs.empty:
        return pairs
    good, bad = (sentence_token_ids(tokenizer, list(pairs[column])) for column in ("good", "bad"))
    same_length = pairs[[len(a) == len(b) for a, b in zip(good, bad)]]
    return same_length.groupby("language", sort=False).head(pairs_per_language).reset_index(drop=True)


@dataclass
class EncodedPairs:
    """Minimal pairs with their sentences tokenized once: ``pairs`` (language, phenomenon, good, bad,
    ``subset``), and the token ids of every good sentence then every bad one."""

    pairs: pd.DataFrame
    token_ids: list[list[int]]
    pad_id: int


def minimal_pair_set(series: CheckpointSeries, config: MinimalPairsConfig, tokenizer) -> EncodedPairs:
    """The built-in, held-out sentence and MultiBLiMP pairs of ``config`` (``subset`` = "builtin" / "heldout" /
    "multiblimp"), tokenized."""
    from phasescope.data.minimal_pairs import load_multiblimp, template_minimal_pairs

    frames = []
    real_text = _trained_on_real_text(series)
    if config.builtin if config.builtin is not None else not real_text:
        builtin = template_minimal_pairs(_controlled_corpus(series), config.pairs_per_template, config.seed)
        frames.append(builtin.assign(subset="builtin"))
    heldout_pairs = config.heldout_pairs if config.heldout_pairs is not None else HELDOUT_PAIRS * real_text
    if heldout_pairs:
        pairs = heldout_sentence_pairs(series, heldout_pairs, config.languages, config.seed, tokenizer)
        frames.append(pairs.assign(subset="heldout"))
    if config.multiblimp is not None:
        frames.append(load_multiblimp(Path(config.multiblimp).expanduser()).assign(subset="multiblimp"))
    if not frames:
        raise PhasescopeError("no minimal pairs for a run trained on real text with heldout_pairs: 0; set "
                              "`builtin: true` or `multiblimp:`")
    pairs = pd.concat(frames, ignore_index=True)[["language", "phenomenon", "good", "bad", "subset"]]
    if config.languages is not None:
        pairs = pairs[pairs["language"].isin(config.languages)].reset_index(drop=True)
    if pairs.empty:
        raise PhasescopeError(f"no minimal pairs in language(s) {', '.join(config.languages or [])}")
    ids = sentence_token_ids(tokenizer, [*pairs["good"], *pairs["bad"]])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return EncodedPairs(pairs, ids, pad_id)


def compute_minimal_pairs(context: MeasureContext, config: MinimalPairsConfig) -> list[dict]:
    """``accuracy`` and ``n_pairs`` per (subset, language) and per (subset, language, phenomenon), and per subset."""
    data = MinimalPairsConfig.model_validate(config.model_dump(exclude={"batch_size"}))
    encoded = context.shared(f"minimal_pairs:{config_hash(data)}",
                             lambda: minimal_pair_set(context.series, data, context.tokenizer))
    scores = sequence_log_probs(context.model, encoded.token_ids, batch_size=config.batch_size, pad_id=encoded.pad_id)
    n = len(encoded.pairs)
    frame = encoded.pairs.assign(correct=scores[:n] > scores[n:])
    rows = []
    for keys, group in frame.groupby(["subset"], sort=True):
        rows += _accuracy_rows(group, keys[0], None, None)
    for (subset, language), group in frame.groupby(["subset", "language"], sort=True):
        rows += _accuracy_rows(group, subset, language, None)
    for (subset, language, phenomenon), group in frame.groupby(["subset", "language", "phenomenon"], sort=True):
        rows += _accuracy_rows(group, subset, language, phenomenon)
    return rows


def _accuracy_rows(group: pd.DataFrame, subset: str, language: str | None, phenomenon: str | None) -> list[dict]:
    where = {"subset": subset, "src": language, "component": phenomenon}
    return [{"metric": "accuracy", "value": float(group["correct"].mean()), **where},
            {"metric": "n_pairs", "value": float(len(group)), **where}]


MINIMAL_PAIRS_MEASURE = register_measure(Measure(
    name="minimal_pairs", config_cls=MinimalPairsConfig, compute=compute_minimal_pairs,
    description="minimal-pair accuracy (the sentence people wrote more likely) per language: built-in, held-out "
                "sentences with two neighbouring words swapped, MultiBLiMP",
))
