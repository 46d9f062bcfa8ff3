"""Corpus sources: the controlled corpus's knobs measured on its text, local files, streamed datasets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phasescope.data import (
    ControlledCorpus,
    ControlledCorpusConfig,
    CorpusConfig,
    CorpusSource,
    HuggingFaceCorpus,
    HuggingFaceCorpusConfig,
    LocalCorpus,
    LocalCorpusConfig,
    build_corpus,
)
from phasescope.data.heldout import is_heldout_position, raw_position_of_train, train_documents_before
from phasescope.data.languages import endonym
from phasescope.errors import PhasescopeError
from phasescope.run.config import StrictModel, validate_config

GLOSSARY_LINE = re.compile(r'^(\S+): "([^"]+)" - (\S+): "([^"]+)"$')


class Holder(StrictModel):
    corpus: CorpusConfig


@pytest.fixture(scope="module")
def corpus() -> ControlledCorpus:
    return ControlledCorpus(ControlledCorpusConfig(seed=5))


# ---- controlled corpus -------------------------------------------------------------------------


def test_documents_are_deterministic_and_resumable(corpus):
    first = [text for _, text in zip(range(30), corpus.documents("tr"))]
    assert first == [corpus.document("tr", i) for i in range(30)]
    assert first[12:] == [text for _, text in zip(range(18), corpus.documents("tr", start=12))]
    again = ControlledCorpus(ControlledCorpusConfig(seed=5))
    assert [again.document("tr", i) for i in range(30)] == first
    other_seed = ControlledCorpus(ControlledCorpusConfig(seed=6))
    assert [other_seed.document("tr", i) for i in range(30)] != first
    assert isinstance(corpus, CorpusSource)


def test_knob_rates_measured_on_generated_text(corpus):
    """Document kinds, glosses and repetitions counted on the text itself, against the config."""
    config = corpus.config
    kinds, glossed, mentions, repeated, later_sentences, sentences = [], 0, 0, 0, 0, 0
    for language in corpus.languages:
        for index in range(400):
            document = corpus.generate(language, index)
            text = document.text
            if GLOSSARY_LINE.match(text.split("\n")[0]):
                kinds.append("glossary")
                assert all(GLOSSARY_LINE.match(line) for line in text.split("\n"))
                low, high = config.glossary_lines
                assert low <= len(text.split("\n")) <= high
            elif "\n\n" in text:
                kinds.append("parallel")
            else:
                kinds.append("monolingual")
                glossed += len(re.findall(r"\([^()]+\)", text))  # "Hund (dog)": template text has no parentheses
                mentions += len(document.mentions)
                xs = [m for m in document.mentions if m.slot == "X"]
                earlier = [{m.concept for m in document.mentions if m.sentence < x.sentence} for x in xs]
                repeated += sum(x.concept in before for x, before in zip(xs[1:], earlier[1:]))
                later_sentences += len(xs) - 1
                sentences += len(re.findall(r"[.!?。！？؟](?:\s|$)", text))
                assert len(xs) == max(m.sentence for m in document.mentions) + 1
            assert document.kind == kinds[-1]
    shares = {kind: kinds.count(kind) / len(kinds) for kind in ("glossary", "parallel", "monolingual")}
    n = len(kinds)  # 3600 documents: binomial standard errors <= 0.008
    assert shares["glossary"] == pytest.approx(config.glossary_rate, abs=4 * (0.25 * 0.75 / n) ** 0.5)
    assert shares["parallel"] == pytest.approx(config.parallel_rate, abs=4 * (0.1 * 0.9 / n) ** 0.5)
    # glosses: only seen concepts are glossed, so the rate per mention is code_switch_rate x seen share
    seen_share = len(corpus.seen_concepts) / len(corpus.concepts)
    assert glossed / mentions == pytest.approx(config.code_switch_rate * seen_share, rel=0.15)
    # a sentence after the first repeats an earlier concept with probability repetition_rate, plus the
    # chance that a fresh draw from ~150 concepts hits one of the few already mentioned
    assert config.repetition_rate - 0.03 < repeated / later_sentences < config.repetition_rate + 0.06
    low, high = config.sentences_per_document
    assert low <= sentences / kinds.count("monolingual") <= high


def test_rates_follow_the_knobs():
    base = dict(languages=["en", "de", "ru"], concepts_per_category=4)
    none = ControlledCorpus(ControlledCorpusConfig(**base, glossary_rate=0, parallel_rate=0, code_switch_rate=0))
    texts = [none.document(language, i) for language in none.languages for i in range(200)]
    assert not any("(" in text or "\n" in text for text in texts)
    everything = ControlledCorpus(ControlledCorpusConfig(**base, glossary_rate=1.0, parallel_rate=0))
    assert all(everything.generate("de", i).kind == "glossary" for i in range(50))
    repeats = ControlledCorpus(ControlledCorpusConfig(**base, repetition_rate=1.0, glossary_rate=0, parallel_rate=0,
                                                      sentences_per_document=(5, 5)))
    for i in range(50):  # every sentence after the first is about a concept mentioned before
        mentions = repeats.generate("en", i).mentions
        for x in (m for m in mentions if m.slot == "X" and m.sentence > 0):
            assert x.concept in {m.concept for m in mentions if m.sentence < x.sentence}


def test_heldout_concepts_never_appear_in_bilingual_signals(corpus):
    held = set(corpus.heldout_concepts)
    assert len(held) == round(0.2 * len(corpus.concepts))
    assert {corpus.category[c] for c in corpus.seen_concepts} == set(corpus.category.values())
    assert held.isdisjoint(corpus.seen_concepts) and set(corpus.seen_concepts) | held == set(corpus.concepts)
    words = {(c, lang): corpus.lexicon.word(c, lang) for c in corpus.concepts for lang in corpus.languages}
    seen_words = {words[c, lang] for c in corpus.seen_concepts for lang in corpus.languages}
    # words of held-out concepts that no seen concept's word contains (二月 is inside 十二月)
    held_only = {(words[c, lang], lang) for c in held for lang in corpus.languages}
    held_only = {(word, lang) for word, lang in held_only if not any(word in seen for seen in seen_words)}
    assert len(held_only) > 40

    def contains(text: str, word: str, language: str) -> bool:
        if language in ("zh", "ja"):
            return word in text
        return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) is not None

    monolingual_held = 0
    for language in corpus.languages:
        for index in range(300):
            document = corpus.generate(language, index)
            for mention in document.mentions:
                if mention.concept in held:
                    assert not mention.bilingual and mention.gloss_language is None
                    monolingual_held += 1
            # the same on the text: a held-out-only word is never in a glossary line, a gloss or a parallel doc
            bilingual_parts = re.findall(r"\(([^()]+)\)", document.text)
            if language not in ("zh", "ja"):  # the glossed word itself (zh/ja: no spaces to find it by)
                bilingual_parts += re.findall(r"(\S+) \(", document.text)
            if document.kind != "monolingual":
                bilingual_parts.append(document.text)
            for word, word_language in held_only:
                assert not any(contains(part, word, word_language) for part in bilingual_parts), (word, document.text)
    assert monolingual_held > 100  # held-out concepts are still seen, monolingually


def test_next_frames_only_with_the_whole_cycle():
    whole = ControlledCorpus(ControlledCorpusConfig(languages=["en"], categories=["month"], concepts_per_category=None,
                                                    glossary_rate=0, parallel_rate=0))
    partial = ControlledCorpus(ControlledCorpusConfig(languages=["en"], categories=["month"], concepts_per_category=5,
                                                      glossary_rate=0, parallel_rate=0))
    text = " ".join(whole.document("en", i) for i in range(300))
    assert "After January comes February." in text and "After December comes January." in text
    for match in re.findall(r"After (\w+) comes (\w+)\.", text):
        months = [whole.lexicon.word(c, "en") for c in whole.concepts]
        assert months.index(match[1]) == (months.index(match[0]) + 1) % 12
    assert "comes" not in " ".join(partial.document("en", i) for i in range(300))


def test_glossary_lines_are_in_the_prompt_form(corpus):
    document = next(d for d in (corpus.generate("ja", i) for i in range(100)) if d.kind == "glossary")
    by_line: dict[int, list] = {}
    for mention in document.mentions:
        by_line.setdefault(mention.sentence, []).append(mention)
    translated = 0
    for number, line in enumerate(document.text.split("\n")):
        source, source_word, target, target_word = GLOSSARY_LINE.match(line).groups()
        assert source == endonym("ja") and target == endonym(document.partner)
        if number not in by_line:  # an untranslated line (see the test below)
            assert target_word == source_word
            continue
        first, second = by_line[number]
        assert source_word == corpus.lexicon.word(first.concept, "ja")
        assert target_word == corpus.lexicon.word(second.concept, document.partner)
        translated += 1
    assert translated > 0


def glossary_lines(corpus: ControlledCorpus, language: str, documents: int = 300):
    """(document, the line's four fields, whether it names no concept) for each glossary line of the documents."""
    for index in range(documents):
        document = corpus.generate(language, index)
        if document.kind != "glossary":
            continue
        with_concept = {mention.sentence for mention in document.mentions}
        for number, line in enumerate(document.text.split("\n")):
            yield document, GLOSSARY_LINE.match(line).groups(), number not in with_concept


def test_name_lines_copy_a_pseudo_word_at_the_knob_rate():
    corpus = ControlledCorpus(ControlledCorpusConfig(glossary_rate=0.9, name_rate=0.3, untranslated_rate=0))
    names = lines = 0
    for _, (_, source_word, _, target_word), copied in glossary_lines(corpus, "de"):
        lines += 1
        if copied:  # a name line: a pseudo-word, copied, never translated
            assert target_word == source_word
            assert re.fullmatch(r"(?:[bdklmnprstvz][aeiou]){2,3}", source_word.lower())
            names += 1
    assert lines > 1000 and abs(names / lines - 0.3) < 0.04


def test_untranslated_lines_copy_a_word_from_outside_the_corpus_at_the_knob_rate():
    corpus = ControlledCorpus(ControlledCorpusConfig(glossary_rate=0.9, untranslated_rate=0.25))
    corpus_words = {corpus.lexicon.word(c, "fr") for c in corpus.concepts}
    outside = set(corpus._untranslated["fr"])
    untranslated, lines, distinct = 0, 0, set()
    for document, (source, source_word, target, target_word), copied in glossary_lines(corpus, "fr"):
        assert source == endonym("fr") and target == endonym(document.partner)
        lines += 1
        if copied:  # left untranslated: a French word outside the corpus, copied
            assert target_word == source_word and source_word in outside and source_word not in corpus_words
            untranslated += 1
            distinct.add(source_word)
    assert lines > 1000 and abs(untranslated / lines - 0.25) < 0.04
    assert len(distinct) > 150  # hundreds of words: copying, not a memorized pair, is what pays
    every = ControlledCorpusConfig(languages=["en"], categories=["month"], concepts_per_category=None,
                                   untranslated_rate=0.2)
    with pytest.raises(PhasescopeError, match="untranslated_rate needs lexicon concepts outside"):
        ControlledCorpus(every, lexicon=ControlledCorpus(every.model_copy(update={"untranslated_rate": 0})).lexicon)


def test_untranslated_rate_touches_glossaries_only():
    """Each document has its own generator: the knob changes glossary lines and nothing else."""
    off = ControlledCorpus(ControlledCorpusConfig(glossary_rate=0.6, untranslated_rate=0))
    on = ControlledCorpus(ControlledCorpusConfig(glossary_rate=0.6, untranslated_rate=0.5))
    changed = 0
    for index in range(80):
        before, after = off.generate("ru", index), on.generate("ru", index)
        assert before.kind == after.kind
        if before.kind != "glossary":
            assert before.text == after.text
        else:
            assert before.text.count("\n") == after.text.count("\n")
            changed += before.text != after.text
    assert changed > 20


def test_parallel_documents_render_the_same_plan(corpus):
    document = next(d for d in (corpus.generate("de", i) for i in range(200)) if d.kind == "parallel")
    first, second = document.text.split("\n\n")
    half = len(document.mentions) // 2
    assert [m.concept for m in document.mentions[:half]] == [m.concept for m in document.mentions[half:]]
    assert {m.language for m in document.mentions[half:]} == {document.partner}
    for mention in document.mentions[half:]:
        assert corpus.lexicon.word(mention.concept, document.partner).lower() in second.lower()


def test_heldout_language_pairs_get_no_bilingual_signal():
    corpus = ControlledCorpus(ControlledCorpusConfig(languages=["en", "de", "fr"], concepts_per_category=4,
                                                     heldout_language_pairs=["de-fr"]))
    for language in corpus.languages:
        for index in range(150):
            document = corpus.generate(language, index)
            if language in ("de", "fr") and document.partner is not None:
                assert document.partner == "en"
            for mention in document.mentions:
                assert {mention.language, mention.gloss_language} != {"de", "fr"}


def test_language_weights_are_the_size_hint_and_config_errors_are_named():
    corpus = ControlledCorpus(ControlledCorpusConfig(languages=["en", "ja"], concepts_per_category=3,
                                                     language_weights={"en": 3.0, "ja": 1.0}))
    assert corpus.size_hint("en") == 3 * corpus.size_hint("ja")
    with pytest.raises(PhasescopeError, match="^config: corpus.languages: .*unknown language code.*'xx'.*supported"):
        validate_config({"corpus": {"source": "controlled", "languages": ["en", "xx"]}}, Holder)
    with pytest.raises(PhasescopeError, match="glossary_rate \\+ parallel_rate must be <= 1"):
        validate_config({"corpus": {"source": "controlled", "glossary_rate": 0.8, "parallel_rate": 0.5}}, Holder)
    with pytest.raises(PhasescopeError, match="no language 'fr'"):
        next(corpus.documents("fr"))


def test_builtin_corpus_covers_every_template_category(corpus):
    categories = set(corpus.category.values())
    assert {"animal", "food", "month", "weekday", "territory", "language"} <= categories
    assert len(corpus.concepts) >= 40 and all(list(corpus.category.values()).count(c) <= 3 for c in categories)
    used = {corpus.category[m.concept] for i in range(200) for m in corpus.generate("en", i).mentions}
    assert categories == used


# ---- held-out positions ------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0.01, 0.3, 0.5, 2 / 3])
def test_heldout_positions_are_evenly_spread_and_resume_maps_back(share):
    from fractions import Fraction

    fraction = Fraction(share).limit_denominator(1_000_000)
    flags = [is_heldout_position(k, fraction) for k in range(5000)]
    assert sum(flags) == pytest.approx(share * 5000, abs=1)
    train = [k for k, held in enumerate(flags) if not held]
    for start in (0, 1, 7, 100, 1000):
        raw = raw_position_of_train(start, fraction)
        assert raw == train[start] and train_documents_before(raw, fraction) == start


# ---- local files -------------------------------------------------------------------------------


def write_local_corpus(root: Path) -> dict[str, list[str]]:
    """en: two txt files (one document each); de: jsonl; ja: two parquet files with small row groups."""
    documents = {"en": [f"English document {i}." for i in range(2)],
                 "de": [f"Deutsches Dokument {i}." for i in range(30)],
                 "ja": [f"日本語の文書{i}。" for i in range(45)]}
    for language in documents:
        (root / language).mkdir(parents=True)
    for i, text in enumerate(documents["en"]):
        (root / "en" / f"{i:02d}.txt").write_text(text, encoding="utf-8")
    with open(root / "de" / "part.jsonl", "w", encoding="utf-8") as handle:
        for text in documents["de"]:
            handle.write(json.dumps({"text": text, "id": 1}, ensure_ascii=False) + "\n")
    table = pd.DataFrame({"text": documents["ja"]})
    table.iloc[:20].to_parquet(root / "ja" / "a.parquet", row_group_size=6)
    table.iloc[20:].to_parquet(root / "ja" / "b.parquet", row_group_size=7)
    return documents


def test_local_corpus_reads_every_format_with_a_deterministic_heldout_share(tmp_path):
    documents = write_local_corpus(tmp_path)
    corpus = build_corpus(validate_config({"corpus": {"source": "local", "root": str(tmp_path),
                                                      "heldout_share": 0.2}}, Holder).corpus)
    assert isinstance(corpus, LocalCorpus) and corpus.languages == ["de", "en", "ja"]
    for language, texts in documents.items():
        train, heldout = list(corpus.documents(language)), list(corpus.documents(language, "heldout"))
        assert train == [t for k, t in enumerate(texts) if (k + 1) // 5 == k // 5]  # every 5th is held out
        assert heldout == [t for k, t in enumerate(texts) if (k + 1) // 5 > k // 5]
        for start in range(len(train) + 1):
            assert list(corpus.documents(language, start=start)) == train[start:]
        assert list(corpus.documents(language, "heldout", start=1)) == heldout[1:]
    assert corpus.size_hint("ja") == sum(p.stat().st_size for p in (tmp_path / "ja").iterdir())


def test_local_txt_units(tmp_path):
    (tmp_path / "fr").mkdir()
    (tmp_path / "fr" / "a.txt").write_text("un\ndeux\n\ntrois\n", encoding="utf-8")
    lines = LocalCorpus(LocalCorpusConfig(root=tmp_path, txt_unit="line", heldout_share=0))
    assert list(lines.documents("fr")) == ["un", "deux", "trois"]
    paragraphs = LocalCorpus(LocalCorpusConfig(root=tmp_path, txt_unit="paragraph", heldout_share=0))
    assert list(paragraphs.documents("fr")) == ["un\ndeux", "trois"]


def test_local_corpus_errors_before_any_training(tmp_path):
    (tmp_path / "en").mkdir()
    with pytest.raises(PhasescopeError, match=r"en: no \*\.txt, \*\.jsonl or \*\.parquet files \(found nothing\)"):
        LocalCorpus(LocalCorpusConfig(root=tmp_path))
    (tmp_path / "en" / "notes.md").write_text("hello", encoding="utf-8")
    with pytest.raises(PhasescopeError, match="found notes.md"):
        LocalCorpus(LocalCorpusConfig(root=tmp_path))
    (tmp_path / "klingon").mkdir()
    with pytest.raises(PhasescopeError, match="klingon are not supported language codes.*en, de, fr"):
        LocalCorpus(LocalCorpusConfig(root=tmp_path))
    with pytest.raises(PhasescopeError, match="unknown language code.*'xx'"):
        LocalCorpus(LocalCorpusConfig(root=tmp_path, languages=["xx"]))
    with pytest.raises(PhasescopeError, match="is not a folder"):
        LocalCorpus(LocalCorpusConfig(root=tmp_path / "missing"))
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "a.jsonl").write_text('{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(PhasescopeError, match="no field 'text' \\(it has body\\); set text_field"):
        LocalCorpus(LocalCorpusConfig(root=tmp_path, languages=["de"]))
    assert list(LocalCorpus(LocalCorpusConfig(root=tmp_path, languages=["de"], text_field="body",
                                              heldout_share=0)).documents("de")) == ["x"]


# ---- Hugging Face datasets, streamed from files the test writes -------------------------------


def test_huggingface_streaming_source_on_local_files(tmp_path):
    pytest.importorskip("datasets")
    texts = {"de": [f"Dokument {i}" for i in range(40)], "fr": [f"Document {i}" for i in range(25)]}
    pd.DataFrame({"text": texts["de"], "url": "x"}).to_parquet(tmp_path / "de.parquet", row_group_size=8)
    with open(tmp_path / "fr.jsonl", "w", encoding="utf-8") as handle:
        for text in texts["fr"]:
            handle.write(json.dumps({"text": text}) + "\n")
    config = validate_config({"corpus": {
        "source": "huggingface", "path": "parquet", "heldout_share": 0.1,
        "languages": {"de": {"data_files": str(tmp_path / "de.parquet")},
                      "fr": {"path": "json", "data_files": str(tmp_path / "fr.jsonl")}},
        "size_hints": {"de": 40, "fr": 25}}}, Holder).corpus
    corpus = build_corpus(config)
    assert isinstance(corpus, HuggingFaceCorpus)
    for language, all_texts in texts.items():
        train = [t for k, t in enumerate(all_texts) if (k + 1) // 10 == k // 10]
        heldout = [t for k, t in enumerate(all_texts) if (k + 1) // 10 > k // 10]
        assert list(corpus.documents(language)) == train
        assert list(corpus.documents(language, "heldout")) == heldout
        for start in (1, 9, 10, len(train) - 1):
            assert list(corpus.documents(language, start=start)) == train[start:]
    assert corpus.size_hint("fr") == 25


def test_huggingface_heldout_split_and_errors(tmp_path):
    pytest.importorskip("datasets")
    pd.DataFrame({"text": ["a", "b", "c"], "id": [1, 2, 3]}).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame({"text": ["x", "y"], "id": [4, 5]}).to_parquet(tmp_path / "test.parquet")
    files = {"train": str(tmp_path / "train.parquet"), "test": str(tmp_path / "test.parquet")}
    corpus = HuggingFaceCorpus(HuggingFaceCorpusConfig(path="parquet", heldout_split="test",
                                                       languages={"en": {"data_files": files}}))
    assert list(corpus.documents("en")) == ["a", "b", "c"]
    assert list(corpus.documents("en", start=2)) == ["c"]
    assert list(corpus.documents("en", "heldout")) == ["x", "y"]
    assert list(corpus.documents("en", "heldout", start=1)) == ["y"]
    wrong_field = HuggingFaceCorpus(HuggingFaceCorpusConfig(path="parquet", text_field="content",
                                                            languages={"en": {"data_files": files}}))
    with pytest.raises(PhasescopeError, match="no field 'content' \\(they have text, id\\)"):
        next(wrong_field.documents("en"))
    missing = HuggingFaceCorpus(HuggingFaceCorpusConfig(path="parquet", languages={
        "en": {"data_files": str(tmp_path / "nothing-*.parquet")}}))
    with pytest.raises(PhasescopeError, match="cannot stream parquet split train for language 'en'"):
        next(missing.documents("en"))
    with pytest.raises(PhasescopeError, match="corpus.languages: .*unknown language code.*'klingon'"):
        validate_config({"corpus": {"source": "huggingface", "path": "x", "languages": {"klingon": "tlh"}}}, Holder)


def test_huggingface_without_datasets_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("no datasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    corpus = HuggingFaceCorpus(HuggingFaceCorpusConfig(path="HuggingFaceFW/fineweb-2", languages={"de": "deu_Latn"}))
    with pytest.raises(PhasescopeError, match=r"pip install phasescope\[datasets\]"):
        next(corpus.documents("de"))


def test_seen_fraction_of_words_matches_mentions(corpus):
    """Sanity of the mention records: every mention's word is in the document's text."""
    rng = np.random.default_rng(0)
    for index in rng.integers(0, 10_000, size=40):
        document = corpus.generate("es", int(index))
        lowered = document.text.lower()
        for mention in document.mentions:
            assert corpus.lexicon.word(mention.concept, mention.language).lower() in lowered
