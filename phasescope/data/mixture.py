"""Language mixtures and packed token streams: the batches an LM pretraining loop consumes.

Each document's language is drawn from the mixture (explicit weights, or temperature sampling
over corpus sizes, p_i proportional to n_i^(1/T), as in XLM-R and mT5: Conneau et al. 2020,
arXiv 1911.02116; Xue et al. 2021, arXiv 2010.11934). Documents are tokenized (with the
tokenizer's own special tokens, e.g. a leading ``<s>``), ended with the end-of-document token
(EOS) and concatenated; the stream is cut into rows of ``seq_len`` tokens, ``batch_size`` rows a
batch. A document may span two rows or two batches.

The stream is a pure function of (corpus, tokenizer, mixture, seed) and its position is small:
the sampler's RNG state, the next document index of every language, and the tokens left over from
the last batch. :meth:`PackedStream.state_dict` is JSON; a fresh stream given it continues
bitwise as the uninterrupted one would.

The stream also knows where every token came from: run-length :class:`Source` segments (language,
epoch, document index) beside the tokens, kept in the state too, so that a replay of training can
split a step's gradient by the data that produced it (:mod:`phasescope.train.replay`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from pydantic import Field, model_validator

from phasescope.data.corpora import CorpusSource
from phasescope.errors import PhasescopeError
from phasescope.run.config import StrictModel

STATE_VERSION = 1
DOCUMENTS_PER_REFILL = 16  # documents drawn and tokenized together (part of the stream's definition)


class Source(NamedTuple):
    """A run of consecutive tokens from one document: ``tokens`` of document ``index`` (its position in the
    language's training split, pass ``epoch`` over it). ``language`` None: not known (a stream state
    saved before sources were kept)."""

    language: str | None
    epoch: int
    index: int
    tokens: int


class MixtureConfig(StrictModel):
    """How often each language's documents are drawn."""

    # explicit sampling weights per language (normalized); None: temperature sampling over sizes
    weights: dict[str, float] | None = None
    # p_i proportional to n_i^(1/T) over the corpus's size_hint: 1 keeps the natural proportions,
    # larger flattens toward uniform (XLM-R: T = 1/0.3 ~ 3.3)
    temperature: float = Field(1.0, gt=0)
    languages: list[str] | None = None  # a subset of the corpus's languages; None: all

    @model_validator(mode="after")
    def _positive(self) -> MixtureConfig:
        if self.weights is not None and (not self.weights or any(w < 0 for w in self.weights.values())
                                         or sum(self.weights.values()) <= 0):
            raise ValueError(f"weights: expected non-negative weights with a positive sum, got {self.weights}")
        return self


def mixture_probabilities(corpus: CorpusSource, mixture: MixtureConfig) -> dict[str, float]:
    """The probability of drawing each language's next document, in the corpus's language order."""
    languages = list(mixture.languages) if mixture.languages is not None else list(corpus.languages)
    unknown = [language for language in languages if language not in corpus.languages]
    if unknown:
        raise PhasescopeError(f"mixture languages {', '.join(unknown)} are not in the corpus; "
                              f"it has {', '.join(corpus.languages)}")
    if mixture.weights is not None:
        missing = [language for language in mixture.weights if language not in corpus.languages]
        if missing:
            raise PhasescopeError(f"mixture weights name language(s) {', '.join(missing)} not in the corpus; "
                                  f"it has {', '.join(corpus.languages)}")
        raw = {language: float(mixture.weights.get(language, 0.0)) for language in languages}
    else:
        sizes = {language: corpus.size_hint(language) for language in languages}
        unknown_sizes = [language for language, size in sizes.items() if not size]
        if unknown_sizes:
            raise PhasescopeError(f"temperature sampling needs corpus sizes, but the corpus gives none for "
                                  f"{', '.join(unknown_sizes)}; set mixture.weights (or size_hints)")
        raw = {language: size ** (1.0 / mixture.temperature) for language, size in sizes.items()}
    total = sum(raw.values())
    if total <= 0:
        raise PhasescopeError(f"the mixture gives every language weight 0: {raw}")
    return {language: value / total for language, value in raw.items() if value > 0}


class PackedStream:
    """Fixed-length token rows packed from documents drawn by language; resumable exactly.

    Args:
        corpus: the documents.
        tokenizer: a ``transformers`` tokenizer with an eos token.
        seq_len: tokens per row.
        batch_size: rows per batch: the *global* batch (DDP ranks slice it).
        mixture: the language mixture.
        seed: seeds the language sampler.
    """

    def __init__(self, corpus: CorpusSource, tokenizer, seq_len: int, batch_size: int, mixture: MixtureConfig,
                 seed: int) -> None:
        if seq_len < 1 or batch_size < 1:
            raise PhasescopeError(f"expected seq_len >= 1 and batch_size >= 1, got {seq_len} and {batch_size}")
        if tokenizer.eos_token_id is None:
            raise PhasescopeError("the tokenizer has no eos token; packed documents need one to end them")
        self.corpus, self.tokenizer = corpus, tokenizer
        self.seq_len, self.batch_size = seq_len, batch_size
        self.tokens_per_batch = seq_len * batch_size
        probabilities = mixture_probabilities(corpus, mixture)
        self.languages = list(probabilities)
        self.probabilities = np.array([probabilities[language] for language in self.languages])
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._positions = {language: 0 for language in self.languages}  # next document index, this epoch
        self._epochs = {language: 0 for language in self.languages}  # completed passes over a finite corpus
        self._buffer: list[int] = []
        self._sources: list[Source] = []  # the buffer's tokens, run-length by document
        self.last_sources: list[Source] = []  # the tokens of the last batch, row-major, by document
        self._iterators: dict = {}
        self.tokens_per_language = {language: 0 for language in self.languages}  # tokens drawn so far
        self.batches = 0

    def next_batch(self) -> torch.LongTensor:
        """The next (batch_size, seq_len) int64 batch."""
        while len(self._buffer) < self.tokens_per_batch:
            self._refill()
        batch, self._buffer = self._buffer[:self.tokens_per_batch], self._buffer[self.tokens_per_batch:]
        self.last_sources, self._sources = _split_sources(self._sources, self.tokens_per_batch)
        self.batches += 1
        return torch.tensor(batch, dtype=torch.long).view(self.batch_size, self.seq_len)

    def state_dict(self) -> dict:
        """The stream's position as JSON-serializable data (a few kB: no documents, only counters)."""
        return {"version": STATE_VERSION, "languages": self.languages,
                "probabilities": self.probabilities.tolist(), "seq_len": self.seq_len,
                "rng": self._rng.bit_generator.state, "positions": dict(self._positions),
                "epochs": dict(self._epochs), "buffer": list(self._buffer),
                "buffer_sources": [list(source) for source in self._sources],
                "tokens_per_language": dict(self.tokens_per_language), "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (written by :meth:`state_dict` of a stream with the same mixture)."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            version = state.get("version") if isinstance(state, dict) else None
            raise PhasescopeError(f"not a packed-stream state of version {STATE_VERSION}: got a "
                                  f"{type(state).__name__} with version {version}")
        if state["languages"] != self.languages or not np.allclose(state["probabilities"], self.probabilities):
            raise PhasescopeError(f"the data state was saved for languages {state['languages']} with probabilities "
                                  f"{np.round(state['probabilities'], 4).tolist()}; this stream has {self.languages} "
                                  f"with {np.round(self.probabilities, 4).tolist()}")
        self._rng.bit_generator.state = state["rng"]
        self._positions = {language: int(state["positions"][language]) for language in self.languages}
        self._epochs = {language: int(state["epochs"][language]) for language in self.languages}
        self._buffer = [int(token) for token in state["buffer"]]
        saved_sources = state.get("buffer_sources")  # absent in states saved before sources were kept
        self._sources = ([Source(None, 0, 0, len(self._buffer))] if saved_sources is None else
                         [Source(language, int(epoch), int(index), int(tokens))
                          for language, epoch, index, tokens in saved_sources])
        self.tokens_per_language = {language: int(state["tokens_per_language"][language])
                                    for language in self.languages}
        self.batches = int(state["batches"])
        self._iterators = {}  # reopened at the restored positions

    def _refill(self) -> None:
        """Draw DOCUMENTS_PER_REFILL documents by language, tokenize them together, append them."""
        drawn = self._rng.choice(len(self.languages), size=DOCUMENTS_PER_REFILL, p=self.probabilities)
        languages = [self.languages[int(index)] for index in drawn]
        documents = [self._next_document(language) for language in languages]
        kept = [(language, where, text) for language, (where, text) in zip(languages, documents) if text]
        if not kept:
            return
        encoded = self.tokenizer([text for *_, text in kept], add_special_tokens=True)["input_ids"]
        eos = self.tokenizer.eos_token_id
        for (language, (epoch, index), _), ids in zip(kept, encoded):
            ids = list(ids) if ids and ids[-1] == eos else [*ids, eos]
            self._buffer.extend(ids)
            self._sources.append(Source(language, epoch, index, len(ids)))
            self.tokens_per_language[language] += len(ids)

    def _next_document(self, language: str) -> tuple[tuple[int, int], str]:
        """The next document of ``language`` with its (epoch, index)."""
        iterator = self._iterators.get(language)
        if iterator is None:
            iterator = self._iterators[language] = iter(
                self.corpus.documents(language, "train", start=self._positions[language]))
        text = next(iterator, None)
        if text is None:  # a finite corpus ran out: start its next epoch
            if self._positions[language] == 0:
                raise PhasescopeError(f"the corpus has no training documents in language {language!r}")
            self._epochs[language] += 1
            self._positions[language] = 0
            iterator = self._iterators[language] = iter(self.corpus.documents(language, "train", start=0))
            text = next(iterator, None)
            if text is None:
                raise PhasescopeError(f"the corpus has no training documents in language {language!r}")
        self._positions[language] += 1
        return (self._epochs[language], self._positions[language] - 1), text


def _split_sources(sources: list[Source], tokens: int) -> tuple[list[Source], list[Source]]:
    """The segments covering the first ``tokens`` tokens, and those of the rest (a segment may be cut in two)."""
    head: list[Source] = []
    for position, source in enumerate(sources):
        if tokens == 0:
            return head, sources[position:]
        if source.tokens <= tokens:
            head.append(source)
            tokens -= source.tokens
        else:
            head.append(source._replace(tokens=tokens))
            return head, [source._replace(tokens=source.tokens - tokens), *sources[position + 1:]]
    return head, []


def heldout_batches(corpus: CorpusSource, tokenizer, language: str, seq_len: int, n_sequences: int) -> torch.LongTensor:
    """The first ``n_sequences`` rows of ``seq_len`` tokens packed from ``language``'s held-out documents.

    Packed like :class:`PackedStream` (the tokenizer's special tokens, an EOS after each document),
    always from the first held-out document: the same rows at every checkpoint.

    Returns:
        (n, seq_len) int64 with n = ``n_sequences``, or fewer when the held-out split is shorter
        (at least one row).
    """
    if language not in corpus.languages:
        raise PhasescopeError(f"the corpus has no language {language!r}; it has {', '.join(corpus.languages)}")
    if seq_len < 1 or n_sequences < 1:
        raise PhasescopeError(f"expected seq_len >= 1 and n_sequences >= 1, got {seq_len} and {n_sequences}")
    needed = seq_len * n_sequences
    eos = tokenizer.eos_token_id
    tokens: list[int] = []
    documents = iter(corpus.documents(language, "heldout"))
    while len(tokens) < needed:
        chunk = [text for _, text in zip(range(DOCUMENTS_PER_REFILL), documents)]
        if not chunk:
            break
        texts = [text for text in chunk if text]
        for ids in tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []:
            tokens.extend(ids if ids and ids[-1] == eos else [*ids, eos])
    rows = min(len(tokens) // seq_len, n_sequences)
    if rows == 0:
        raise PhasescopeError(f"the held-out split of {language!r} has {len(tokens)} tokens, fewer than one row "
                              f"of {seq_len}")
    return torch.tensor(tokens[:rows * seq_len], dtype=torch.long).view(rows, seq_len)
