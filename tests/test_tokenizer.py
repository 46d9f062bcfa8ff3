"""Tokenizers: a byte-level BPE trained on the corpus round-trips through save/AutoTokenizer; coverage checks."""

from __future__ import annotations

import re

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from phasescope.data import (
    ControlledCorpus,
    ControlledCorpusConfig,
    TokenizerConfig,
    build_tokenizer,
    check_tokenizer_coverage,
    load_tokenizer,
    train_bpe_tokenizer,
    unknown_token_rates,
)
from phasescope.data.languages import BUILTIN_LANGUAGES
from phasescope.errors import PhasescopeError

SAMPLES = {
    "en": ["The dog sleeps in the garden."], "de": ["Der Hund schläft im Garten."],
    "fr": ["Le chien dort dans le jardin."], "es": ["El perro duerme en el jardín."],
    "tr": ["Köpek bahçede uyuyor."], "ru": ["Собака спит в саду."], "ar": ["الكلب نائم في الحديقة."],
    "zh": ["狗在花园里睡觉。"], "ja": ["犬が庭で寝ています。"],
}


@pytest.fixture(scope="module")
def corpus() -> ControlledCorpus:
    return ControlledCorpus(ControlledCorpusConfig(concepts_per_category=3))


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_bpe_tokenizer(corpus, vocab_size=800, documents_per_language=120)


def test_trained_tokenizer_round_trips_through_auto_tokenizer(tokenizer, tmp_path):
    assert len(tokenizer) == 800
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=False)
    for special in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(loaded, special) == getattr(tokenizer, special)
    assert len({loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id, loaded.unk_token_id}) == 4
    for texts in SAMPLES.values():
        ids = tokenizer(texts[0])["input_ids"]
        assert loaded(texts[0])["input_ids"] == ids
        assert ids[0] == tokenizer.bos_token_id  # <s> prepended, like Llama
        assert loaded.decode(ids, skip_special_tokens=True) == texts[0]  # byte-level: lossless in every script


def test_sample_is_language_balanced(tokenizer):
    """Every script gets merges: a multi-character token exists in Latin, Cyrillic, Arabic and CJK text."""
    pieces = [tokenizer.convert_tokens_to_string([token]) for token in tokenizer.get_vocab()]

    def has_merged(low: int, high: int) -> bool:
        return any(sum(low <= ord(c) <= high for c in piece) >= 2 for piece in pieces)

    assert has_merged(0x0400, 0x04FF) and has_merged(0x0600, 0x06FF)
    assert has_merged(0x4E00, 0x9FFF) or has_merged(0x30A0, 0x30FF)
    assert unknown_token_rates(tokenizer, SAMPLES) == dict.fromkeys(BUILTIN_LANGUAGES, 0.0)


def latin_only_word_tokenizer() -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer that knows only the words of Latin-script sentences."""
    model = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    latin = [text for code in ("en", "de", "fr", "es", "tr") for text in SAMPLES[code]]
    model.train_from_iterator(latin, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[EOS]"]))
    return PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]", eos_token="[EOS]")


def test_unknown_rates_of_a_tokenizer_that_lacks_scripts():
    tokenizer = latin_only_word_tokenizer()
    texts = {"en": ["The dog sleeps."], "ru": ["Собака спит в саду."], "zh": ["狗 在 花园 里"],
             "de": ["Der Hund schläft hier."]}
    rates = unknown_token_rates(tokenizer, texts)
    # reference: the Whitespace pre-tokenizer's words (\w+ runs and punctuation) not in the vocabulary
    vocabulary = tokenizer.get_vocab()
    for language, (text,) in texts.items():
        words = [word for word, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)]
        assert rates[language] == pytest.approx(sum(word not in vocabulary for word in words) / len(words))
    assert rates["en"] == 0.0 and rates["zh"] == 1.0
    assert rates["ru"] == pytest.approx(4 / 5)  # every word but the final "."
    assert rates["de"] == pytest.approx(1 / 5)  # "hier" is not in the training sentences
    with pytest.raises(PhasescopeError, match=r"cannot encode.*ru 80\.0%.*zh 100\.0%") as error:
        check_tokenizer_coverage(tokenizer, texts, max_unknown_rate=0.25)
    assert not re.search(r"\b(en|de) \d", str(error.value)) and "\n" not in str(error.value)


def test_build_tokenizer_loads_a_saved_one_and_checks_coverage(tokenizer, corpus, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = build_tokenizer(TokenizerConfig(path=tmp_path / "tok"), corpus)
    assert loaded("Hund")["input_ids"] == tokenizer("Hund")["input_ids"]
    latin_only_word_tokenizer().save_pretrained(tmp_path / "latin")
    with pytest.raises(PhasescopeError, match="cannot encode"):
        build_tokenizer(TokenizerConfig(path=tmp_path / "latin"), corpus)
    with pytest.raises(PhasescopeError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
