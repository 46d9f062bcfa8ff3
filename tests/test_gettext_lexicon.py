"""The in-domain lexicon from gettext catalogs: .mo files written here with babel, read back as a WLT
lexicon, filtered and ranked by a corpus, and through the CLI."""

from __future__ import annotations

import pandas as pd
import pytest

from phasescope import PhasescopeError
from phasescope.data.gettext_lexicon import build_gettext_lexicon, normalized
from phasescope.data.lexicon import Lexicon
from tests.debian_fixtures import write_catalogs
from tests.helpers import phasescope_here


def test_interface_strings_become_words():
    assert [normalized(text) for text in ("_File", "É_dition", "Edit…", "Print:", "Open (_O)", "&Save...")] == [
        "File", "Édition", "Edit", "Print", "Open", "Save"]


def test_single_word_strings_translated_everywhere_make_the_lexicon(tmp_path):
    lexicon, counts = build_gettext_lexicon(["en", "de", "fr"], write_catalogs(tmp_path / "locale"))
    assert sorted(lexicon.concepts) == ["Edit", "File", "Print", "Window"]  # not "Open File", FILE or "and"
    assert lexicon.word("File", "de") == "Datei" and lexicon.variants("File", "de") == ["Datei"]
    assert lexicon.word("Edit", "fr") in ("Édition", "Modifier")  # one catalog each: a tie, broken by length
    assert lexicon.variants("Print", "de") == ["Drucken"]  # the context is dropped; "Ausdrucken" is in one catalog
    assert lexicon.category("Window") == "interface"
    row = counts[(counts.concept == "File") & (counts.language == "de")].iloc[0]
    assert row.word == "Datei" and row.catalogs == 2 and pd.isna(row.corpus_count)
    assert lexicon.concepts[0] == "File"  # ranked by how many catalogs agree


def test_a_corpus_keeps_the_concepts_its_every_language_uses_ranked_by_the_rarest(tmp_path):
    corpus = tmp_path / "corpus"
    texts = {"en": "Open the file. A file, a window and a window. Print it.",
             "de": "Die Datei im Fenster. Noch eine Datei; DATEI. Drucken.",
             "fr": "Le fichier. La fenêtre, la fenêtre, la fenêtre."}
    for language, text in texts.items():
        (corpus / language).mkdir(parents=True)
        (corpus / language / "a.txt").write_text(text, encoding="utf-8")
    lexicon, counts = build_gettext_lexicon(["en", "de", "fr"], write_catalogs(tmp_path / "locale"), corpus=corpus)
    assert lexicon.concepts == ["File", "Window"]  # Print is not in the French text, Edit nowhere
    file_counts = counts[counts.concept == "File"].set_index("language").corpus_count.to_dict()
    assert file_counts == {"en": 2, "de": 3, "fr": 1}
    (corpus / "fr").rename(tmp_path / "elsewhere")
    with pytest.raises(PhasescopeError, match="no text in 'fr'; leave it out"):
        build_gettext_lexicon(["en", "de", "fr"], tmp_path / "locale", corpus=corpus)


def test_bad_input_and_the_cli(tmp_path, monkeypatch, capsys):
    with pytest.raises(PhasescopeError, match="no gettext catalogs") as error:
        build_gettext_lexicon(["en", "de"], tmp_path / "nothing")
    assert "\n" not in str(error.value)
    with pytest.raises(PhasescopeError, match="no single-word translations for ru"):
        build_gettext_lexicon(["en", "de", "ru"], write_catalogs(tmp_path / "locale"))
    out = tmp_path / "lexicon" / "gettext.parquet"
    code, stderr = phasescope_here(monkeypatch, capsys, "lexicon", "build", "--from-gettext",
                                   str(tmp_path / "locale"), "--languages", "en,de,fr", "-o", str(out))
    assert code == 0, stderr
    assert sorted(Lexicon.load(out).concepts) == ["Edit", "File", "Print", "Window"]
    assert len(pd.read_parquet(out.with_name("gettext.counts.parquet"))) == 12
    code, stderr = phasescope_here(monkeypatch, capsys, "lexicon", "build", "--corpus", str(tmp_path), "-o",
                                   str(tmp_path / "x.parquet"))
    assert code == 2 and "--corpus filters a lexicon built --from-gettext" in stderr


def test_a_damaged_catalog_is_named_and_the_others_still_count(tmp_path):
    root = write_catalogs(tmp_path / "locale")
    damaged = root / "de" / "LC_MESSAGES" / "broken.mo"
    damaged.write_bytes(b"\x00not a catalog")
    lines = []
    lexicon, _ = build_gettext_lexicon(["en", "de", "fr"], root, progress=lines.append)
    assert sorted(lexicon.concepts) == ["Edit", "File", "Print", "Window"]  # as without the damaged file
    [line] = [line for line in lines if "damaged" in line]
    assert line.startswith(f"skipped 1 damaged catalog(s): {damaged} (")
