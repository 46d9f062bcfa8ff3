"""Debian's translated documentation as a corpus: markup stripped from fixture files of each kind written
here (Mallard, roff, DocBook HTML, LibreOffice's rendered HTML and XHP, gettext catalogs), boilerplate,
duplicates and untranslated pages dropped, the parallel index and manifest (tokens per language and
source), several roots, the CLI, and once on the real installed packages where apt put them."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from phasescope import PhasescopeError
from phasescope.data.corpora import LocalCorpus, LocalCorpusConfig
from phasescope.data.debian_docs import build_debian_docs, count_tokens
from phasescope.data.markup import html_text, mallard_text, roff_text, xhp_text
from tests.debian_fixtures import (
    ENGLISH,
    GERMAN,
    HTML,
    LIBREOFFICE_HTML,
    ROFF,
    mallard_page,
    write_catalogs,
    write_fixture_root,
)
from tests.helpers import phasescope_here


def test_mallard_keeps_titles_and_paragraphs_without_info_or_comments():
    text = mallard_text(mallard_page("Magnify", "Some <em>emphasised</em> words.", "en"))
    assert text == "Magnify\n\nSome emphasised words.\n\nOpen the Activities overview and start Settings."
    assert "McCance" not in text and "comment" not in text and "Zoom in" not in text
    with pytest.raises(PhasescopeError, match="not well-formed"):
        mallard_text("<page><p>unclosed</page>")


def test_roff_keeps_prose_and_macro_arguments_and_resolves_escapes():
    text = roff_text(ROFF)
    assert text == ("BEZEICHNUNG addftinfo - Informationen zu Troff-Schriftdateien hinzufügen\n\n"
                    "BESCHREIBUNG addftinfo liest eine Troff-Schriftdatei und fügt „einige” Informationen hinzu.\n\n"
                    "• Die Ausgabe geht nach stdout.")
    assert "Copyright" not in text and "\\" not in text and "ADDFTINFO" not in text


def test_html_keeps_the_chapter_without_navigation_tables_of_contents_or_scripts():
    assert html_text(HTML) == ("Chapter 2. Package management\n\nDebian is a volunteer organization & it builds "
                               "packages.\n\n$ apt-get update")


XHP = """<?xml version="1.0" encoding="UTF-8"?>
<helpdocument version="1.0">
<meta><topic id="textsharedoptionen01020000xml" indexer="include"><title id="tit" xml-lang="en-US">Load/Save
Options</title><filename>/text/shared/optionen/01020000.xhp</filename></topic></meta>
<body>
<bookmark xml-lang="en-US" branch="index" id="bm_id1"><bookmark_value>saving; options</bookmark_value></bookmark>
<h1 id="hd_id1"><link href="text/shared/optionen/01020000.xhp">Load/Save Options</link></h1>
<paragraph role="paragraph" id="par_id1"><ahelp hid=".">Defines general <emph>Load/Save</emph>
settings.</ahelp></paragraph>
<!-- a comment -->
<section id="howtoget"><embed href="text/shared/00/00000406.xhp#optionenladenspeichern"/></section>
<paragraph role="note" id="par_id2"><switchinline select="sys"><caseinline select="MAC">Choose
LibreOffice - Preferences</caseinline><defaultinline>Choose Tools - Options</defaultinline></switchinline>.
</paragraph>
</body></helpdocument>"""


def test_libreoffice_help_keeps_the_display_area_without_menus_index_or_debug_footer():
    text = html_text(LIBREOFFICE_HTML.format(body="Hier legen Sie allgemeine Einstellungen fest."), area="DisplayArea")
    assert text == ("Optionen Laden/Speichern\n\nHier legen Sie allgemeine Einstellungen fest.\n\n"
                    "So greifen Sie auf diesen Befehl zu:")
    assert "Writer" in html_text(LIBREOFFICE_HTML) and "debug" not in html_text(LIBREOFFICE_HTML)  # no area: all


def test_xhp_keeps_title_and_paragraphs_without_index_terms_embeds_or_other_systems():
    assert xhp_text(XHP) == ("Load/Save Options\n\nLoad/Save Options\n\nDefines general Load/Save settings."
                             "\n\nChoose Tools - Options.")
    with pytest.raises(PhasescopeError, match="not well-formed XHP"):
        xhp_text("<helpdocument><paragraph>unclosed</helpdocument>")


def test_tokens_count_words_and_each_han_character_or_kana():
    assert count_tokens("Die Datei-Größe: 12 KB.") == 5
    assert count_tokens("ファイルを開く") == 7 and count_tokens("打开文件 file") == 5
    assert count_tokens("افتح الملف") == 2


def test_libreoffice_help_and_catalogs_from_a_second_root_with_token_coverage(tmp_path):
    write_fixture_root(tmp_path / "root")
    unpacked = tmp_path / "unpacked"  # what setup-debian-docs.sh --libreoffice DIR leaves
    for locale, body in (("en-US", ENGLISH), ("de", GERMAN)):
        for page in ("optionen/01020000", "optionen/01030000"):
            path = unpacked / "usr/share/libreoffice/help" / locale / "text/shared" / f"{page}.html"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(LIBREOFFICE_HTML.format(body=body + page[-5:]), encoding="utf-8")
    write_catalogs(unpacked / "usr/share/locale")  # tiny catalogs: under 200 characters, dropped as short
    report = build_debian_docs(tmp_path / "corpus", ["en", "de"], ["libreoffice-help", "man", "gettext"],
                               root=[tmp_path / "root", unpacked])
    corpus = tmp_path / "corpus"
    assert sorted(p.name for p in (corpus / "de").iterdir()) == [
        "libreoffice-help--text_shared_optionen_01020000.txt", "libreoffice-help--text_shared_optionen_01030000.txt",
        "man--man1_addftinfo.1.txt"]
    assert report.dropped["de"]["short"] == 2  # the two catalogs
    manifest = json.loads((corpus / "manifest.json").read_text())
    for language in ("en", "de"):
        texts = [p.read_text(encoding="utf-8") for p in (corpus / language).iterdir()]
        assert manifest["languages"][language]["tokens"] == sum(count_tokens(text) for text in texts)
    assert set(manifest["languages"]["de"]["tokens_by_source"]) == {"libreoffice-help", "man"}
    assert sum(manifest["languages"]["de"]["tokens_by_source"].values()) == manifest["languages"]["de"]["tokens"]
    groups = [json.loads(line) for line in (corpus / "parallel.jsonl").read_text().splitlines()]
    assert {"source": "libreoffice-help", "page": "text/shared/optionen/01020000",
            "files": {"en": "en/libreoffice-help--text_shared_optionen_01020000.txt",
                      "de": "de/libreoffice-help--text_shared_optionen_01020000.txt"}} in groups
    assert report.missing == ["man/en", "gettext/en"]  # no English man page here; English has no catalogs


def test_a_catalog_is_a_document_of_its_translated_strings(tmp_path):
    from babel.messages.catalog import Catalog
    from babel.messages.mofile import write_mo

    from phasescope.data.debian_docs import catalog_text
    catalog = Catalog(locale="ar")
    for msgid, msgstr in (("_Open", "_فتح"), ("Save", "حفظ"), ("Close the window", "أغلق النافذة"), ("Empty", "")):
        catalog.add(msgid, msgstr)
    with open(tmp_path / "app.mo", "wb") as handle:
        write_mo(handle, catalog)
    # in the order of the English strings (Close the window, Save, _Open), mnemonics removed
    assert catalog_text(tmp_path / "app.mo") == "أغلق النافذة\nحفظ\nفتح"
    (tmp_path / "bad.mo").write_bytes(b"not a catalog")
    assert catalog_text(tmp_path / "bad.mo") == ""


def test_build_writes_clean_checked_documents_a_manifest_and_the_parallel_index(tmp_path):
    write_fixture_root(tmp_path / "root")
    report = build_debian_docs(tmp_path / "corpus", ["en", "de", "fr"], root=tmp_path / "root")
    corpus = tmp_path / "corpus"
    assert sorted(p.name for p in (corpus / "de").iterdir()) == [
        "gnome-help--a11y-contrast.txt", "gnome-help--a11y-font.txt", "gnome-help--a11y-keys.txt",
        "gnome-help--a11y-mag.txt", "man--man1_addftinfo.1.txt"]
    assert report.dropped["de"] == {"other language": 1, "duplicate": 1, "short": 1}
    text = (corpus / "de" / "gnome-help--a11y-contrast.txt").read_text(encoding="utf-8")
    assert text.startswith("Kontrast\n\nDie Bildschirmlupe") and text.endswith("Kontrast.\n") and "<" not in text
    assert "Open the Activities" not in text  # a line in every German page: boilerplate, removed
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["languages"]["de"]["documents"] == 5 and manifest["languages"]["fr"]["documents"] == 1
    assert manifest["languages"]["de"]["packages"] == ["gnome-user-docs", "manpages-de"]
    assert manifest["languages"]["en"]["characters"] == sum(
        len(p.read_text(encoding="utf-8")) - 1 for p in (corpus / "en").iterdir())
    groups = [json.loads(line) for line in (corpus / "parallel.jsonl").read_text().splitlines()]
    mag = next(group for group in groups if group["page"] == "a11y-mag")
    assert mag["files"] == {"en": "en/gnome-help--a11y-mag.txt", "de": "de/gnome-help--a11y-mag.txt",
                            "fr": "fr/gnome-help--a11y-mag.txt"}
    assert all(len(group["files"]) > 1 for group in groups)
    local = LocalCorpus(LocalCorpusConfig(root=corpus, heldout_share=0.0))  # the format phasescope trains on
    assert len(list(local.documents("de"))) == 5


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    with pytest.raises(PhasescopeError, match="apt-get install .*gnome-user-docs") as error:
        build_debian_docs(tmp_path / "corpus", ["en", "de"], root=tmp_path / "empty-root")
    assert "\n" not in str(error.value) and not (tmp_path / "corpus").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    write_fixture_root(tmp_path / "root")
    with pytest.raises(PhasescopeError, match="not empty"):
        build_debian_docs(tmp_path / "full", root=tmp_path / "root")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    with pytest.raises(PhasescopeError, match="unknown documentation source 'wiki'"):
        build_debian_docs(tmp_path / "corpus", sources=["wiki"], root=tmp_path / "root")
    with pytest.raises(PhasescopeError, match=r"no gnome-help, man text in ar under .*gnome-user-docs.*leave it out"):
        build_debian_docs(tmp_path / "corpus", ["en", "ar"], ["gnome-help", "man"], root=tmp_path / "root")
    assert not (tmp_path / "corpus").exists()
    # a page that is not UTF-8, or a damaged gzip file: one line naming the file, nothing written
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "root", broken)
    latin1 = broken / "usr/share/help/de/gnome-help/latin1.page"
    latin1.write_bytes(mallard_page("Größe", GERMAN, "de").encode("latin-1"))
    with pytest.raises(PhasescopeError, match=f"{latin1}: not UTF-8 text") as error:
        build_debian_docs(tmp_path / "corpus", ["en", "de"], root=broken)
    assert "\n" not in str(error.value) and not (tmp_path / "corpus").exists()
    latin1.unlink()
    damaged = broken / "usr/share/man/de/man1/damaged.1.gz"
    damaged.write_bytes(gzip.compress(b".TH X 1\nText.\n")[:20])
    with pytest.raises(PhasescopeError, match=f"{damaged}: cannot be read"):
        build_debian_docs(tmp_path / "corpus", ["en", "de"], root=broken)
    damaged.unlink()
    # malformed markup is left out and counted
    (broken / "usr/share/help/de/gnome-help/broken.page").write_text("<page><p>unclosed</page>", encoding="utf-8")
    report = build_debian_docs(tmp_path / "corpus", ["en", "de"], root=broken)
    assert report.dropped["de"]["malformed"] == 1
    assert not (tmp_path / "corpus" / "de" / "gnome-help--broken.txt").exists()
    code, stderr = phasescope_here(monkeypatch, capsys, "corpus", "build", "--from", "wikipedia", "-o",
                                   str(tmp_path / "corpus"))
    assert code == 2 and "--from must be debian-docs" in stderr
    code, stderr = phasescope_here(monkeypatch, capsys, "corpus", "build", "--from", "debian-docs", "-o",
                                   str(tmp_path / "cli"), "--root", str(tmp_path / "root"), "--languages", "en,de")
    assert code == 0, stderr
    assert (tmp_path / "cli" / "manifest.json").is_file()


REAL = Path("/usr/share/help/C/gnome-help")


@pytest.mark.skipif(not REAL.is_dir() and not os.environ.get("PHASESCOPE_REQUIRE_DEBIAN_DOCS"),
                    reason="gnome-user-docs is not installed (scripts/setup-debian-docs.sh installs it)")
def test_the_real_installed_gnome_help_in_english_and_german(tmp_path):
    report = build_debian_docs(tmp_path / "corpus", ["en", "de"], sources=["gnome-help"])
    assert report.documents["en"] > 200 and report.documents["de"] > 200
    assert report.parallel_groups > 200  # the same page in both languages
    text = (tmp_path / "corpus" / "de" / "gnome-help--a11y-braille.txt").read_text(encoding="utf-8")
    assert "Braille" in text and "<" not in text and "McCance" not in text


def test_the_parallel_knob_excludes_translated_pages_and_names_document_kinds(tmp_path):
    write_fixture_root(tmp_path / "root")
    build_debian_docs(tmp_path / "corpus", ["en", "de", "fr"], root=tmp_path / "root")
    config = dict(root=tmp_path / "corpus", heldout_share=0.0)
    included = LocalCorpus(LocalCorpusConfig(**config))
    kinds = [included.document_kind("de", index) for index in range(5)]
    assert kinds == ["parallel"] * 4 + ["monolingual"]  # four GNOME pages with translations, one man page
    excluded = LocalCorpus(LocalCorpusConfig(**config, languages=["en", "de"], parallel="exclude"))
    assert list(excluded.documents("de")) == [list(included.documents("de"))[-1]]  # only the man page
    assert [excluded.document_kind("de", 0), excluded.document_kind("en", 0)] == ["monolingual"] * 2
    with pytest.raises(PhasescopeError, match="fr: every document has a translation"):
        LocalCorpus(LocalCorpusConfig(**config, parallel="exclude"))
    # one language per page: each of the four pages in exactly one of its languages, the rest kept
    single = LocalCorpus(LocalCorpusConfig(**config, parallel="one_per_page"))
    kept = {language: [p.name for p in single._files[language]] for language in ("en", "de", "fr")}
    for page in ("a11y-mag", "a11y-contrast", "a11y-font", "a11y-keys"):
        assert sum(f"gnome-help--{page}.txt" in names for names in kept.values()) == 1, page
    assert "man--man1_addftinfo.1.txt" in kept["de"] and "debian-reference--ch02.txt" in kept["en"]
    assert {single.document_kind(language, 0) for language in ("en", "de")} == {"monolingual"}


def test_exclude_without_a_parallel_index_is_a_one_line_error(tmp_path):
    (tmp_path / "corpus" / "en").mkdir(parents=True)
    (tmp_path / "corpus" / "en" / "a.txt").write_text(ENGLISH)
    with pytest.raises(PhasescopeError, match="one_per_page needs the parallel index"):
        LocalCorpus(LocalCorpusConfig(root=tmp_path / "corpus", parallel="one_per_page"))
    with pytest.raises(PhasescopeError, match="needs the parallel index"):
        LocalCorpus(LocalCorpusConfig(root=tmp_path / "corpus", parallel="exclude"))


def test_interleave_puts_each_training_page_beside_its_translation_paragraph_by_paragraph(tmp_path):
    write_fixture_root(tmp_path / "root")
    build_debian_docs(tmp_path / "corpus", ["en", "de", "fr"], root=tmp_path / "root")
    corpus = tmp_path / "corpus"
    read = {path: (corpus / path).read_text(encoding="utf-8") for path in
            ("de/gnome-help--a11y-mag.txt", "en/gnome-help--a11y-mag.txt", "fr/gnome-help--a11y-mag.txt")}
    paragraphs = {path: [block.strip() for block in text.split("\n\n") if block.strip()] for path, text in read.items()}
    interleaved = LocalCorpus(LocalCorpusConfig(root=corpus, heldout_share=0.0, parallel="interleave"))
    included = LocalCorpus(LocalCorpusConfig(root=corpus, heldout_share=0.0))
    german, english, french = (paragraphs[f"{language}/gnome-help--a11y-mag.txt"] for language in ("de", "en", "fr"))
    index = [p.name for p in included._files["de"]].index("gnome-help--a11y-mag.txt")
    assert len(german) == len(english) == 2
    assert list(interleaved.documents("de"))[index] == "\n\n".join([german[0], english[0], german[1], english[1]])
    assert interleaved.document_kind("de", index) == "interleaved"
    man = [p.name for p in included._files["de"]].index("man--man1_addftinfo.1.txt")
    assert list(interleaved.documents("de"))[man] == list(included.documents("de"))[man]  # no translation
    assert interleaved.document_kind("de", man) == "monolingual"
    # English pages pair with the first other language that has the page; French with English
    mag = [p.name for p in included._files["en"]].index("gnome-help--a11y-mag.txt")
    assert list(interleaved.documents("en"))[mag] == "\n\n".join(
        block for pair in zip(english, german) for block in pair)
    assert len(french) == 3  # the GNOME line boilerplate removal kept (one French page): not aligned, so
    assert list(interleaved.documents("fr"))[0] == "\n\n".join(french + english)  # the page, then its translation
    # a held-out page is neither interleaved nor a partner: its text stays out of training
    held = LocalCorpus(LocalCorpusConfig(root=corpus, heldout_share=0.5, parallel="interleave"))
    heldout_english = list(held.documents("en", split="heldout"))
    training_text = "\n".join(text for language in ("en", "de", "fr") for text in held.documents(language))
    assert heldout_english and all(text.strip() not in training_text for text in heldout_english)
    assert all(text in list(included.documents("en")) for text in heldout_english)
    with pytest.raises(ValueError, match="interleave pairs whole pages"):
        LocalCorpusConfig(root=corpus, parallel="interleave", txt_unit="paragraph")
