"""The concept lexicon: the CLDR builder (emoji + babel), file loaders and `phasescope lexicon build`."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from phasescope.data import build_cldr_lexicon, combine_lexicons, lexicon_summary, load_muse_lexicon, load_wlt_lexicon
from phasescope.data.languages import BUILTIN_LANGUAGES
from phasescope.data.lexicon import Lexicon
from phasescope.data.lexicon_sources import MAX_HAN_KANA_CHARS, emoji_category, is_single_word, other_kana
from phasescope.errors import PhasescopeError

# concept -> language -> (canonical word, another valid form or None), from CLDR as shipped
KNOWN = {
    "dog": {"de": ("Hund", None), "ru": ("собака", "Собака"), "ja": ("イヌ", "いぬ"), "en": ("dog", "Dog")},
    "january": {"de": ("Januar", None), "ru": ("январь", "января"), "ja": ("一月", "1月"),
                "fr": ("janvier", "Janvier")},
    "monday": {"de": ("Montag", None), "ru": ("понедельник", "Понедельник"), "ja": ("月曜日", None),
               "ar": ("الاثنين", None)},
    "germany": {"de": ("Deutschland", None), "ru": ("Германия", None), "ja": ("ドイツ", None), "zh": ("德国", None)},
    "german_language": {"de": ("Deutsch", None), "ru": ("немецкий", "Немецкий"), "ja": ("ドイツ語", None)},
    "automobile": {"en": ("automobile", "car"), "de": ("Auto", None)},
}


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return build_cldr_lexicon()


def test_builtin_lexicon_is_large_and_complete(lexicon):
    complete = lexicon.complete_concepts(BUILTIN_LANGUAGES)
    assert len(complete) >= 200
    assert lexicon.languages == list(BUILTIN_LANGUAGES)
    summary = lexicon_summary(lexicon)
    assert summary.loc["month", "complete"] == 12 and summary.loc["weekday", "complete"] == 7
    assert summary.loc["animal", "complete"] >= 30 and summary.loc["food", "complete"] >= 20
    assert summary.loc["territory", "complete"] >= 50 and summary.loc["language", "complete"] >= 30
    assert summary.loc["total", "complete"] == len(complete)
    for row in lexicon.frame.itertuples(index=False):
        assert is_single_word(row.word, row.language), row
        assert row.variants[0] == row.word


def test_known_entries(lexicon):
    for concept, words in KNOWN.items():
        for language, (word, other_form) in words.items():
            assert lexicon.word(concept, language) == word, (concept, language)
            if other_form is not None:
                assert other_form in lexicon.variants(concept, language), (concept, language)
    assert lexicon.category("dog") == "animal" and lexicon.category("january") == "month"
    assert lexicon.category("germany") == "territory" and lexicon.category("monday") == "weekday"
    assert "hund" not in lexicon.variants("dog", "de")  # German nouns are never written in lower case


def test_single_word_rules():
    assert is_single_word("Hund", "de") and is_single_word("кошка", "ru") and is_single_word("كلب", "ar")
    assert not is_single_word("pomme rouge", "fr") and not is_single_word("richter(in)", "de")
    assert not is_single_word("red_apple", "en") and not is_single_word("U2", "en")
    assert is_single_word("自行车", "zh") and not is_single_word("墨西哥玉米煎饼", "zh")
    assert is_single_word("あ" * MAX_HAN_KANA_CHARS, "ja") and not is_single_word("あ" * (MAX_HAN_KANA_CHARS + 1), "ja")
    assert other_kana("イヌ") == "いぬ" and other_kana("いちご") == "イチゴ" and other_kana("自動車") is None
    assert emoji_category("🐕") == "animal" and emoji_category("🍎") == "food" and emoji_category("🔑") == "object"


def test_restricted_languages_and_categories():
    small = build_cldr_lexicon(["en", "ja"], categories=["month", "weekday"])
    assert small.languages == ["en", "ja"] and len(small.concepts) == 19
    with pytest.raises(PhasescopeError, match="unknown lexicon categor.*flowers"):
        build_cldr_lexicon(["en"], categories=["flowers"])
    with pytest.raises(PhasescopeError, match="unknown language code.*'xx'"):
        build_cldr_lexicon(["en", "xx"])


def test_wlt_loader_long_and_wide_tables(tmp_path):
    long = pd.DataFrame({"concept_id": ["dog", "dog", "cat", "cat"], "lang": ["en", "de", "en", "Deutsch"],
                         "word": ["dog", "Hund", "cat", "Katze"],
                         "synonyms": ["hound", "", None, "Mieze|Kätzchen"], "category": "animal"})
    long.to_parquet(tmp_path / "long.parquet")
    lexicon = load_wlt_lexicon(tmp_path / "long.parquet")
    assert lexicon.word("cat", "de") == "Katze" and lexicon.variants("cat", "de") == ["Katze", "Mieze", "Kätzchen"]
    assert lexicon.variants("dog", "en") == ["dog", "hound"] and lexicon.category("dog") == "animal"

    wide = pd.DataFrame({"English": ["dog", "house"], "de": [["Hund", "Köter"], ["Haus"]], "ja": ["犬", "家"]})
    wide.to_parquet(tmp_path / "wide.parquet")
    lexicon = load_wlt_lexicon(tmp_path / "wide.parquet", languages=["en", "ja", "de"])
    assert lexicon.concepts == ["dog", "house"] and lexicon.variants("dog", "de") == ["Hund", "Köter"]
    assert lexicon.word("house", "ja") == "家" and lexicon.complete_concepts() == ["dog", "house"]

    pd.DataFrame({"foo": [1], "bar": [2]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(PhasescopeError, match="one column per language.*got columns foo, bar"):
        load_wlt_lexicon(tmp_path / "bad.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet", encoding="utf-8")
    with pytest.raises(PhasescopeError, match="not a Parquet file"):
        load_wlt_lexicon(tmp_path / "junk.parquet")


def test_muse_loader(tmp_path):
    (tmp_path / "en-de.txt").write_text("dog Hund\ndog Köter\ncat Katze\n\n", encoding="utf-8")
    (tmp_path / "en-ru.txt").write_text("dog собака\n", encoding="utf-8")
    (tmp_path / "de-en.txt").write_text("Hund dog\n", encoding="utf-8")  # not from the pivot: ignored
    lexicon = load_muse_lexicon(tmp_path)
    assert lexicon.concepts == ["dog", "cat"] and set(lexicon.languages) == {"en", "de", "ru"}
    assert lexicon.variants("dog", "de") == ["Hund", "Köter"] and lexicon.word("dog", "ru") == "собака"
    assert lexicon.complete_concepts() == ["dog"] and not lexicon.has("cat", "ru")
    assert load_muse_lexicon(tmp_path, languages=["en", "ru"]).languages == ["en", "ru"]
    (tmp_path / "en-fr.txt").write_text("dog chien méchant\n", encoding="utf-8")
    with pytest.raises(PhasescopeError, match=r"en-fr.txt:1: expected 'source target'"):
        load_muse_lexicon(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PhasescopeError, match="no MUSE dictionary files named en-XX.txt"):
        load_muse_lexicon(tmp_path / "empty")
    with pytest.raises(PhasescopeError, match="does not exist"):
        load_muse_lexicon(tmp_path / "missing")


def test_combine_keeps_the_first_source():
    first = Lexicon(pd.DataFrame({"concept": ["dog"], "category": ["animal"], "language": ["de"], "word": ["Hund"],
                                  "variants": [["Hund"]]}))
    second = Lexicon(pd.DataFrame({"concept": ["dog", "dog"], "category": ["x", "x"], "language": ["de", "en"],
                                   "word": ["Köter", "dog"], "variants": [[], []]}))
    combined = combine_lexicons([first, second])
    assert combined.word("dog", "de") == "Hund" and combined.word("dog", "en") == "dog"


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phasescope.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_builds_writes_and_summarizes(tmp_path):
    out = tmp_path / "out" / "lexicon.parquet"
    result = run_cli("lexicon", "build", "--languages", "en,de,ja", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lexicon = Lexicon.load(out)
    assert lexicon.languages == ["en", "de", "ja"] and lexicon.word("dog", "ja") == "イヌ"
    assert "month" in result.stdout and "total" in result.stdout and "written to" in result.stderr
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]

    (tmp_path / "muse").mkdir()
    (tmp_path / "muse" / "en-de.txt").write_text("dog Hund\n", encoding="utf-8")
    result = run_cli("lexicon", "build", "--from-muse", str(tmp_path / "muse"), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0 and Lexicon.load(out).concepts == ["dog"]

    bad = run_cli("lexicon", "build", "--languages", "en,xx", "--out", str(out), cwd=tmp_path)
    assert bad.returncode == 2 and "unknown language code" in bad.stderr and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1
    assert Lexicon.load(out).concepts == ["dog"]  # the previous file is intact


def test_a_users_own_table_of_concept_language_word_rows_is_a_lexicon(tmp_path, tokenizer):
    from phasescope.measures.translation import wlt_scores
    from tests.lm_fixtures import tiny_llama

    rows = pd.DataFrame({"concept": ["dog", "dog", "cat", "cat", "sun", "sun"],
                         "language": ["en", "de"] * 3, "word": ["dog", "Hund", "cat", "Katze", "sun", "Sonne"]})
    lexicon = Lexicon(rows)
    assert lexicon.category("dog") == "concept" and lexicon.variants("dog", "de") == ["Hund"]
    rows.to_csv(tmp_path / "mine.csv", index=False)
    with_variants = rows.assign(variants=["dog|doggy", "Hund", "cat", "Katze|Mieze", "sun", "Sonne"])
    with_variants.to_csv(tmp_path / "variants.tsv", sep="\t", index=False)
    assert Lexicon.load(tmp_path / "mine.csv").frame.equals(lexicon.frame)
    assert Lexicon.load(tmp_path / "variants.tsv").variants("cat", "de") == ["Katze", "Mieze"]
    rows.to_parquet(tmp_path / "mine.parquet")
    assert Lexicon.load(tmp_path / "mine.parquet").frame.equals(lexicon.frame)
    model = tiny_llama(len(tokenizer))
    from_table = wlt_scores(model, tokenizer, rows, shots=1, seed=0)  # a plain DataFrame, taken as a lexicon
    from_lexicon = wlt_scores(model, tokenizer, lexicon, shots=1, seed=0)
    assert from_table["p_target"].tolist() == from_lexicon["p_target"].tolist() and len(from_table) == 6
    with pytest.raises(PhasescopeError, match="missing column.*word.*category and variants are optional"):
        Lexicon.load(_write(tmp_path / "bad.csv", "concept,language\ndog,en\n"))
    with pytest.raises(PhasescopeError, match="must be a lexicon table with columns concept, language, word"):
        wlt_scores(model, tokenizer, pd.DataFrame({"src": ["en"], "word": ["dog"]}))


def _write(path, text):
    path.write_text(text)
    return path
