"""Packed streams: exact resume from JSON state, packing against a plain concatenation, mixtures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from phasescope.data import (
    ControlledCorpus,
    ControlledCorpusConfig,
    LocalCorpus,
    LocalCorpusConfig,
    MixtureConfig,
    PackedStream,
    heldout_batches,
    mixture_probabilities,
    train_bpe_tokenizer,
)
from phasescope.errors import PhasescopeError

LANGUAGES = ["en", "de", "ja"]


@pytest.fixture(scope="module")
def corpus() -> ControlledCorpus:
    return ControlledCorpus(ControlledCorpusConfig(languages=LANGUAGES, concepts_per_category=4))


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_bpe_tokenizer(corpus, vocab_size=600, documents_per_language=150)


class SizedCorpus:
    """A corpus of numbered documents with given sizes (size_hint), for mixture arithmetic."""

    def __init__(self, sizes: dict[str, float | None]) -> None:
        self.languages = list(sizes)
        self.sizes = sizes

    def documents(self, language, split="train", start=0):
        index = start
        while True:
            yield f"{language} document {index}"
            index += 1

    def size_hint(self, language):
        return self.sizes[language]


def test_resume_from_json_state_is_bitwise_exact(corpus, tokenizer):
    uninterrupted = PackedStream(corpus, tokenizer, seq_len=32, batch_size=4, mixture=MixtureConfig(), seed=3)
    expected = [uninterrupted.next_batch() for _ in range(9)]

    first = PackedStream(corpus, tokenizer, seq_len=32, batch_size=4, mixture=MixtureConfig(), seed=3)
    for _ in range(4):
        first.next_batch()
    saved = json.dumps(first.state_dict())
    assert len(saved) < 20_000  # counters, RNG state and the leftover tokens only, no documents

    resumed = PackedStream(corpus, tokenizer, seq_len=32, batch_size=4, mixture=MixtureConfig(), seed=3)
    resumed.load_state_dict(json.loads(saved))
    for batch in expected[4:]:
        torch.testing.assert_close(resumed.next_batch(), batch, rtol=0, atol=0)
    assert resumed.batches == 9


def test_single_language_stream_is_the_concatenation_of_its_documents(corpus, tokenizer):
    """Reference: tokenize documents 0, 1, 2, ... one by one, append EOS, cut into rows."""
    stream = PackedStream(corpus, tokenizer, seq_len=16, batch_size=3, mixture=MixtureConfig(weights={"de": 1.0}),
                          seed=0)
    got = torch.cat([stream.next_batch().reshape(-1) for _ in range(5)]).tolist()
    reference: list[int] = []
    index = 0
    while len(reference) < len(got):
        ids = tokenizer(corpus.document("de", index))["input_ids"]
        reference += ids + [tokenizer.eos_token_id]
        index += 1
    assert got == reference[:len(got)]
    assert got[0] == tokenizer.bos_token_id


def test_seeds_give_different_streams_and_same_seed_the_same(corpus, tokenizer):
    def batches(seed):
        stream = PackedStream(corpus, tokenizer, seq_len=24, batch_size=2, mixture=MixtureConfig(), seed=seed)
        return torch.stack([stream.next_batch() for _ in range(3)])

    assert torch.equal(batches(1), batches(1))
    assert not torch.equal(batches(1), batches(2))


def test_temperature_sampling_matches_closed_form():
    corpus = SizedCorpus({"en": 900.0, "de": 90.0, "ja": 10.0})
    for temperature in (1.0, 2.0, 5.0):
        got = mixture_probabilities(corpus, MixtureConfig(temperature=temperature))
        raw = np.array([900.0, 90.0, 10.0]) ** (1 / temperature)
        np.testing.assert_allclose([got[x] for x in ("en", "de", "ja")], raw / raw.sum(), rtol=1e-12)
    flat = mixture_probabilities(corpus, MixtureConfig(temperature=1e6))
    np.testing.assert_allclose(list(flat.values()), [1 / 3] * 3, atol=1e-4)


def test_drawn_languages_follow_the_mixture():
    class Tokenizer:  # one token per document: counting tokens counts documents
        eos_token_id = 0

        def __call__(self, texts, add_special_tokens=True):
            return {"input_ids": [[0] for _ in texts]}

    corpus = SizedCorpus({"en": 1.0, "de": 1.0, "ja": 1.0})
    mixture = MixtureConfig(weights={"en": 0.6, "de": 0.3, "ja": 0.1})
    stream = PackedStream(corpus, Tokenizer(), seq_len=100, batch_size=100, mixture=mixture, seed=0)
    stream.next_batch()
    counts = np.array([stream.tokens_per_language[x] for x in ("en", "de", "ja")], dtype=float)
    share = counts / counts.sum()  # 10,000 draws: binomial standard error <= 0.005
    np.testing.assert_allclose(share, [0.6, 0.3, 0.1], atol=0.02)
    assert sum(stream.state_dict()["positions"].values()) == counts.sum()


def test_mixture_errors_name_the_problem():
    corpus = SizedCorpus({"en": 10.0, "de": None})
    with pytest.raises(PhasescopeError, match="needs corpus sizes.*de"):
        mixture_probabilities(corpus, MixtureConfig())
    with pytest.raises(PhasescopeError, match="not in the corpus"):
        mixture_probabilities(corpus, MixtureConfig(weights={"fr": 1.0}))
    assert mixture_probabilities(corpus, MixtureConfig(weights={"en": 3.0, "de": 1.0})) == {"en": 0.75, "de": 0.25}


def test_state_of_another_mixture_is_refused(corpus, tokenizer):
    stream = PackedStream(corpus, tokenizer, seq_len=8, batch_size=2, mixture=MixtureConfig(), seed=0)
    other = PackedStream(corpus, tokenizer, seq_len=8, batch_size=2, mixture=MixtureConfig(weights={"en": 1.0}), seed=0)
    with pytest.raises(PhasescopeError, match="saved for languages"):
        stream.load_state_dict(other.state_dict())
    with pytest.raises(PhasescopeError, match="not a packed-stream state"):
        stream.load_state_dict({"positions": {}})


def test_finite_corpus_cycles_and_resumes_across_epochs(tmp_path, tokenizer):
    folder = tmp_path / "en"
    folder.mkdir()
    (folder / "a.txt").write_text("one two three\nfour five\nsix\n", encoding="utf-8")
    local = LocalCorpus(LocalCorpusConfig(root=tmp_path, txt_unit="line", heldout_share=0.0))
    stream = PackedStream(local, tokenizer, seq_len=8, batch_size=2, mixture=MixtureConfig(), seed=0)
    batches = [stream.next_batch() for _ in range(6)]
    state = stream.state_dict()
    assert state["epochs"]["en"] >= 1
    flat = torch.cat([b.reshape(-1) for b in batches]).tolist()
    one_epoch = [t for line in ("one two three", "four five", "six")
                 for t in tokenizer(line)["input_ids"] + [tokenizer.eos_token_id]]
    assert flat[:2 * len(one_epoch)] == (one_epoch * 2)[:len(flat[:2 * len(one_epoch)])]
    more = stream.next_batch()
    resumed = PackedStream(local, tokenizer, seq_len=8, batch_size=2, mixture=MixtureConfig(), seed=0)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert torch.equal(resumed.next_batch(), more)


def test_heldout_batches_pack_the_heldout_split(corpus, tokenizer):
    rows = heldout_batches(corpus, tokenizer, "ja", seq_len=20, n_sequences=3)
    assert rows.shape == (3, 20) and rows.dtype == torch.long
    assert torch.equal(rows, heldout_batches(corpus, tokenizer, "ja", seq_len=20, n_sequences=3))
    reference = []
    for index in range(10):
        reference += tokenizer(corpus.document("ja", index, "heldout"))["input_ids"] + [tokenizer.eos_token_id]
    assert rows.reshape(-1).tolist() == reference[:60]
    assert corpus.document("ja", 0, "heldout") != corpus.document("ja", 0, "train")
    with pytest.raises(PhasescopeError, match="no language 'fr'"):
        heldout_batches(corpus, tokenizer, "fr", 20, 3)
