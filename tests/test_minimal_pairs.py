"""Minimal pairs: the MultiBLiMP loader on files written here, pairs from the corpus's templates, and pairs
from real sentences (two neighbouring words swapped)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from phasescope.data import ControlledCorpus, ControlledCorpusConfig
from phasescope.data.languages import LANGUAGES
from phasescope.data.minimal_pairs import (
    PHENOMENA,
    is_prose_sentence,
    load_multiblimp,
    sentence_minimal_pairs,
    split_sentences,
    template_minimal_pairs,
)
from phasescope.data.templates import TEMPLATES, render
from phasescope.errors import PhasescopeError

MULTIBLIMP_COLUMNS = ["sen", "verb", "verb_idx", "prefix", "wrong_sen", "wrong_verb", "phenomenon",
                      "grammatical_feature", "ungrammatical_feature"]


@pytest.fixture(scope="module")
def corpus() -> ControlledCorpus:
    return ControlledCorpus(ControlledCorpusConfig(concepts_per_category=None, categories=[
        "month", "weekday", "animal", "food", "transport", "language", "territory", "object"]))


@pytest.fixture(scope="module")
def pairs(corpus) -> pd.DataFrame:
    return template_minimal_pairs(corpus, pairs_per_template=3, seed=1)


def write_multiblimp(root, language: str, rows: list[tuple[str, str, str]]) -> None:
    folder = root / language
    folder.mkdir(parents=True)
    frame = pd.DataFrame([[good, "v", 1, "p", bad, "w", phenomenon, "SG", "PL"] for good, bad, phenomenon in rows],
                         columns=MULTIBLIMP_COLUMNS)
    frame.to_csv(folder / "data.tsv", sep="\t", index=False)


def test_multiblimp_folder_per_language(tmp_path):
    write_multiblimp(tmp_path, "eng", [("The dogs bark.", "The dogs barks.", "SV-#")])
    write_multiblimp(tmp_path, "rus", [("Я иду.", "Я идёт.", "SV-P"), ("Они шли.", "Они шла.", "SV-#")])
    write_multiblimp(tmp_path, "hye", [("Ես գնում եմ։", "Ես գնում ես։", "SV-P")])
    loaded = load_multiblimp(tmp_path)
    assert list(loaded.columns[:4]) == ["language", "phenomenon", "good", "bad"]
    assert loaded["language"].tolist() == ["en", "hye", "ru", "ru"]
    russian = loaded[loaded.language == "ru"]
    assert russian["good"].tolist() == ["Я иду.", "Они шли."] and russian["bad"].tolist() == ["Я идёт.", "Они шла."]
    assert russian["phenomenon"].tolist() == ["SV-P", "SV-#"]
    assert load_multiblimp(tmp_path, languages=["en"])["good"].tolist() == ["The dogs bark."]
    single = load_multiblimp(tmp_path / "rus" / "data.tsv")  # the language from the file's folder
    assert single["language"].unique().tolist() == ["ru"]


def test_multiblimp_lang_column_and_errors(tmp_path):
    frame = pd.DataFrame({"sen": ["Sie geht."], "wrong_sen": ["Sie gehen."], "lang": ["deu"], "phenomenon": ["SV-#"]})
    frame.to_csv(tmp_path / "pairs.tsv", sep="\t", index=False)
    loaded = load_multiblimp(tmp_path / "pairs.tsv")
    assert loaded.iloc[0][["language", "phenomenon", "good", "bad"]].tolist() == ["de", "SV-#", "Sie geht.",
                                                                                   "Sie gehen."]
    pd.DataFrame({"good": ["a"], "bad": ["b"]}).to_csv(tmp_path / "other.tsv", sep="\t", index=False)
    with pytest.raises(PhasescopeError, match="missing MultiBLiMP column\\(s\\) sen, wrong_sen; it has good, bad"):
        load_multiblimp(tmp_path / "other.tsv")
    with pytest.raises(PhasescopeError, match="does not exist"):
        load_multiblimp(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PhasescopeError, match="no .tsv files"):
        load_multiblimp(tmp_path / "empty")
    with pytest.raises(PhasescopeError, match="no MultiBLiMP pairs in language\\(s\\) ja"):
        load_multiblimp(tmp_path / "pairs.tsv", languages=["ja"])


def test_template_pairs_cover_every_language_and_phenomenon(pairs, corpus):
    counts = pairs.groupby(["language", "phenomenon"]).size()
    for language in corpus.languages:
        for phenomenon in PHENOMENA:
            assert counts[(language, phenomenon)] >= 20 * 3, (language, phenomenon)
    assert (pairs["good"] != pairs["bad"]).all()


def test_good_sentences_are_corpus_sentences_and_bad_ones_never_are(pairs, corpus):
    """Good: a template rendered with the concept's word. Bad: no template renders it with any corpus word."""
    for row in pairs.itertuples(index=False):
        template = next(t for t in TEMPLATES if t.name == row.template)
        x = corpus.lexicon.word(row.concept, row.language)
        renderings = {render(t, row.language, x, y) for t in TEMPLATES if t.fits(corpus.category[row.concept])
                      for y in ([x] if t.second is None else
                                [corpus.lexicon.word(c, row.language) for c in corpus.concepts
                                 if corpus.category[c] == corpus.category[row.concept]])}
        assert row.good in renderings and row.bad not in renderings, row
        assert template.fits(corpus.category[row.concept])


def test_word_order_pairs_have_the_same_words_in_another_order(pairs):
    for row in pairs[pairs.phenomenon == "word_order"].itertuples(index=False):
        if row.language in ("zh", "ja"):
            assert sorted(row.good) == sorted(row.bad)  # the same characters
        else:
            def words(text):
                return sorted(word.lower() for word in re.findall(r"\w+", text))

            assert words(row.good) == words(row.bad), row
        assert row.good != row.bad


def test_foreign_word_pairs_swap_in_another_script(pairs, corpus):
    for row in pairs[pairs.phenomenon == "foreign_word"].itertuples(index=False):
        native = corpus.lexicon.word(row.concept, row.language)
        foreign = [corpus.lexicon.word(row.concept, other) for other in corpus.languages
                   if LANGUAGES[other].script != LANGUAGES[row.language].script]
        bad, good = row.bad.lower(), row.good.lower()  # a sentence-initial word is capitalized
        used = max((word.lower() for word in foreign if word.lower() in bad), key=len)  # "julio", not "juli"
        assert bad.replace(used, native.lower(), 1) == good


def test_examples_by_hand(corpus):
    """A few pairs checked against sentences written by hand."""
    pairs = template_minimal_pairs(corpus, pairs_per_template=50, phenomena=("word_order",))

    def bad_of(language, template, good):
        rows = pairs[(pairs.language == language) & (pairs.template == template) & (pairs.good == good)]
        return rows["bad"].iloc[0] if len(rows) else None

    month = corpus.lexicon.word("january", "en")
    assert bad_of("en", "birthday", f"My birthday is in {month}.") == f"My birthday is {month} in."
    assert bad_of("de", "today", "Heute ist Montag.") == "Heute Montag ist."
    assert bad_of("ja", "today", "今日は月曜日です。") == "今日月曜日はです。"
    assert bad_of("zh", "today", "今天是星期一。") == "今天星期一是。"
    with pytest.raises(PhasescopeError, match="unknown minimal-pair phenomena"):
        template_minimal_pairs(corpus, phenomena=("agreement",))


REAL = {
    "en": ["The screen magnifier enlarges the area around the mouse pointer. You can change the magnification in "
           "the settings! Use the --zoom=2 option.\nIs the contrast too low for you?",
           "apt-get install foo\nPackages are installed with the package manager of the system."],
    "de": ["Die Bildschirmlupe vergrößert den Bereich um den Mauszeiger. Zu kurz."],
    "ja": ["画面の一部を拡大して表示します。設定で倍率を変更できます。"],
}


def test_sentences_are_split_and_only_prose_is_kept():
    assert split_sentences(REAL["en"][0]) == [
        "The screen magnifier enlarges the area around the mouse pointer.",
        "You can change the magnification in the settings!", "Use the --zoom=2 option.",
        "Is the contrast too low for you?"]
    assert split_sentences(REAL["ja"][0]) == ["画面の一部を拡大して表示します。", "設定で倍率を変更できます。"]
    kept = [sentence for sentence in split_sentences(" ".join(REAL["en"])) if is_prose_sentence(sentence, "en")]
    assert "Use the --zoom=2 option." not in kept and "apt-get install foo" not in kept  # not prose; no full stop
    assert not is_prose_sentence("Zu kurz.", "de") and is_prose_sentence("設定で倍率を変更できます。", "ja")


def test_real_sentence_pairs_swap_two_neighbouring_words_and_nothing_else():
    pairs = sentence_minimal_pairs({language: texts for language, texts in REAL.items()}, pairs_per_language=3,
                                   seed=2)
    assert pairs.groupby("language").size().to_dict() == {"de": 1, "en": 3, "ja": 2}  # what prose there is
    assert set(pairs["phenomenon"]) == {"adjacent_swap"} and set(pairs["source"]) == {"heldout"}
    for row in pairs.itertuples():
        spaced = row.language != "ja"
        good, bad = (row.good.split(" "), row.bad.split(" ")) if spaced else (list(row.good), list(row.bad))
        changed = [i for i, (a, b) in enumerate(zip(good, bad)) if a != b]
        assert len(good) == len(bad) and len(changed) == 2 and changed[1] == changed[0] + 1, row
        i = changed[0]
        assert (good[i], good[i + 1]) == (bad[i + 1], bad[i]) and (i > 0 or not spaced), row
        assert all(character.isalpha() for word in (good[i], good[i + 1]) for character in word), row
    again = sentence_minimal_pairs(REAL, pairs_per_language=3, seed=2)
    pd.testing.assert_frame_equal(pairs, again)  # the seed fixes sentences and positions
    assert len(sentence_minimal_pairs(REAL, pairs_per_language=1, seed=0)) == 3
    assert sentence_minimal_pairs({"en": ["apt-get install foo"]}).empty
    assert not is_prose_sentence("git-name-rev(1) finds symbolic names for given revs.", "en")  # no capital
    latin = sentence_minimal_pairs({"ja": [f"html HTML 出力を行{'い' * index}ます。" for index in range(20)]}, 20)
    assert len(latin) == 20 and all(bad.startswith("html HTML ") for bad in latin["bad"])  # kana and Han only
