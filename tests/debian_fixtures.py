"""Fixtures of the real-text tests: Debian documentation pages of each markup, a file-system root holding
them, and gettext catalogs (written here, in the formats the packages install)."""

from __future__ import annotations

import gzip
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo

GERMAN = ("Die Bildschirmlupe vergrößert den Bereich um den Mauszeiger, damit Sie kleine Schrift besser lesen "
          "können. Sie können die Vergrößerung in den Einstellungen ändern und die Farben umkehren, wenn der "
          "Kontrast zu gering ist. Diese Funktion ist für Menschen mit eingeschränktem Sehvermögen gedacht.")
ENGLISH = ("The screen magnifier enlarges the area around the mouse pointer so that you can read small text "
           "more easily. You can change the magnification in the settings and invert the colors when the "
           "contrast is too low. This feature is meant for people with low vision and it works everywhere.")
FRENCH = ("La loupe agrandit la zone autour du pointeur de la souris afin que vous puissiez lire plus facilement "
          "les petits caractères. Vous pouvez modifier le grossissement dans les paramètres et inverser les "
          "couleurs lorsque le contraste est trop faible. Cette fonction est destinée aux personnes malvoyantes.")


def mallard_page(title: str, body: str, language: str) -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<page xmlns="http://projectmallard.org/1.0/" type="topic" id="a11y-mag" xml:lang="{language}">
  <info>
    <link type="guide" xref="a11y#vision"/>
    <credit type="author"><name>Shaun McCance</name><email>shaunm@gnome.org</email></credit>
    <desc>Zoom in on your screen.</desc>
  </info>
  <title>{title}</title>
  <!-- a comment that is not text -->
  <p>{body}</p>
  <steps><item><p>Open the <gui>Activities</gui> overview and start <app>Settings</app>.</p></item></steps>
</page>
"""


ROFF = r""".\" -*- coding: UTF-8 -*-
.\" Copyright (C) 1989 Free Software Foundation
.ds EL \&.\|.\|.\&
.TH ADDFTINFO 1 "7. März 2023" "Groff 1.22.4"
.SH BEZEICHNUNG
addftinfo \- Informationen zu Troff\-Schriftdateien hinzufügen
.SH BESCHREIBUNG
.B addftinfo
liest eine \fITroff\fP\-Schriftdatei und fügt \(Bqeinige\(rq Informationen hinzu.
.IP \(bu 2
Die Ausgabe geht nach \fBstdout\fR.
.\" a comment
"""


HTML = """<html><head><title>Chapter 2. Package management</title><style>p {color: red}</style></head><body>
<div class="navheader"><table><tr><td>Prev</td><td>Next</td></tr></table></div>
<div class="chapter"><h2 class="title">Chapter 2. Package management</h2>
<div class="toc"><dl><dt>2.1. Concepts</dt></dl></div>
<p>Debian is a volunteer organization &amp; it builds <code>packages</code>.</p>
<pre class="screen">$ apt-get update</pre></div>
<div class="navfooter"><table><tr><td>Home</td></tr></table></div><script>var x = 1;</script></body></html>"""


LIBREOFFICE_HTML = """<html><head><title>Optionen Laden/Speichern</title><script>var x;</script></head><body>
<header><div class="dropdowns"><div class="modules"><a>Writer</a><a>Calc</a></div></div></header>
<aside><div id="Contents">Inhalte</div><div id="Index"><div class="index-label">Index</div></div></aside>
<div id="DisplayArea" itemprop="softwareHelp"><h1>Optionen <span>Laden/Speichern</span></h1>
<p>{body}</p><div class="howtoget"><div>So greifen Sie auf diesen Befehl zu:</div></div></div>
<footer><div id="DEBUG" class="debug"><h3 class="bug">Help content debug info:</h3>
<p>This page is: /text/shared/optionen/01020000.xhp</p></div></footer></body></html>"""

CATALOGS = {  # locale -> domain -> (msgid, msgstr, context)
    "de": {"gtk": [("_File", "_Datei", None), ("_Edit", "_Bearbeiten", None), ("Open File", "Datei öffnen", None),
                   ("FILE", "DATEI", None), ("and", "und", None), ("Print", "Drucken", "menu"),
                   ("Window", "Fenster", None)],
           "nautilus": [("File", "Datei", None), ("Edit…", "Bearbeiten …", None), ("Print:", "Ausdrucken", None),
                        ("Window", "Fenster", None)]},
    "fr": {"gtk": [("_File", "_Fichier", None), ("_Edit", "É_dition", None), ("Print", "Imprimer", "menu"),
                   ("Window", "Fenêtre", None)],
           "nautilus": [("File", "Fichier", None), ("Edit…", "Modifier…", None)]},
}


def write_catalogs(root: Path) -> Path:
    for locale, domains in CATALOGS.items():
        for domain, entries in domains.items():
            catalog = Catalog(locale=locale)
            for msgid, msgstr, context in entries:
                catalog.add(msgid, msgstr, context=context)
            folder = root / locale / "LC_MESSAGES"
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / f"{domain}.mo", "wb") as handle:
                write_mo(handle, catalog)
    return root


def write_fixture_root(root: Path) -> None:
    """A file-system root with GNOME help in en (C), de and fr, manual pages and a Debian Reference chapter."""
    def page(locale: str, name: str, title: str, body: str, language: str) -> None:
        path = root / "usr/share/help" / locale / "gnome-help" / f"{name}.page"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(mallard_page(title, body, language), encoding="utf-8")

    pages = {"a11y-mag": ("Magnify", "Vergrößern", ""), "a11y-contrast": ("Contrast", "Kontrast", " Kontrast."),
             "a11y-font": ("Font size", "Schriftgröße", " Schrift."), "a11y-keys": ("Keys", "Tasten", " Tasten.")}
    for name, (english, german, suffix) in pages.items():
        page("C", name, english, ENGLISH + suffix.replace("Kontrast", "Contrast").replace("Schrift", "Fonts")
             .replace("Tasten", "Keys"), "en")
        page("de", name, german, GERMAN + suffix, "de")
    page("de", "untranslated", "Magnify", ENGLISH + " Untranslated.", "de")  # an English page in the German folder
    page("de", "copy", "Vergrößern", GERMAN, "de")  # a11y-mag's text again
    page("de", "stub", "Kurz", "Zu kurz.", "de")
    page("fr", "a11y-mag", "Agrandir", FRENCH, "fr")
    man = root / "usr/share/man/de/man1/addftinfo.1.gz"
    man.parent.mkdir(parents=True, exist_ok=True)
    man.write_bytes(gzip.compress((ROFF + "\n" + GERMAN + "\n").encode()))
    chapter = root / "usr/share/debian-reference/ch02.en.html"
    chapter.parent.mkdir(parents=True, exist_ok=True)
    chapter.write_text(HTML.replace("&amp; it builds", "&amp; it builds " + ENGLISH), encoding="utf-8")
