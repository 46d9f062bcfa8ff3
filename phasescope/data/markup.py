"""The text of documentation markup: Mallard and XHP XML, roff manual pages and rendered HTML, reduced
to paragraphs of running text (titles and paragraphs kept; navigation, metadata, index terms, comments
and code-only blocks dropped), for the Debian documentation corpus (:mod:`phasescope.data.debian_docs`)."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from html.parser import HTMLParser

from phasescope.errors import PhasescopeError


class MalformedPage(PhasescopeError):
    """A page whose markup cannot be parsed: the build leaves it out and counts it (``malformed``)."""


MALLARD_BLOCKS = {"title", "subtitle", "p", "item", "td", "th", "code", "screen", "desc", "note", "terms", "tree",
                  "example", "quote", "figure", "listing", "synopsis"}


def mallard_text(source: str) -> str:
    """The readable text of a Mallard page: titles and paragraphs, without its ``<info>`` (links,
    revisions, credits and licence) and without comments; blocks separated by blank lines."""
    return _xml_text(source, "Mallard", MALLARD_BLOCKS, {"info", "comment"})


XHP_BLOCKS = {"title", "paragraph", "h1", "h2", "h3", "h4", "h5", "h6", "tablecell"}
# index terms, comments, references to other files' text, images, the alternatives for other systems, metadata
XHP_SKIPPED = {"bookmark", "bookmark_value", "comment", "embed", "embedvar", "image", "caseinline", "history",
               "filename", "sort", "lastedited"}


def xhp_text(source: str) -> str:
    """The readable text of a LibreOffice help page in XHP: its title and paragraphs (inline links, help
    tips and emphasis kept), without index terms, comments, embedded text from other pages, images or the
    variants for other operating systems; blocks separated by blank lines."""
    return _xml_text(source, "XHP", XHP_BLOCKS, XHP_SKIPPED)


def _xml_text(source: str, kind: str, block_tags: set[str], skipped: set[str]) -> str:
    try:
        root = ET.fromstring(source)
    except ET.ParseError as error:
        raise MalformedPage(f"not well-formed {kind} XML ({error})") from None
    blocks: list[str] = []

    def visit(element) -> None:
        name = _local(element.tag)
        if name in skipped or not isinstance(element.tag, str):
            return
        if name in block_tags:
            text = " ".join("".join(_inline_text(element, block_tags, skipped)).split())
            if text:
                blocks.append(text)
            return
        for child in element:
            visit(child)

    visit(root)
    return "\n\n".join(blocks)


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _inline_text(element, block_tags: set[str], skipped: set[str]) -> Iterator[str]:
    """An element's text with its inline children (links, app names, GUI labels), skipped elements left out."""
    if element.text and isinstance(element.tag, str):
        yield element.text
    for child in element:
        if isinstance(child.tag, str) and _local(child.tag) not in skipped:
            yield from _inline_text(child, block_tags, skipped)
            yield " " if _local(child.tag) in block_tags else ""
        if child.tail:
            yield child.tail


ROFF_ESCAPES = {r"\-": "-", r"\(em": "—", r"\(en": "–", r"\(aq": "'", r"\(dq": '"', r"\(lq": "“", r"\(rq": "”",
                r"\(oq": "‘", r"\(cq": "’", r"\(Bq": "„", r"\(bq": "‚",
                r"\(bu": "•", r"\(co": "©", r"\(rg": "®", r"\(mu": "×", r"\(de": "°",
                r"\e": "\\", r"\ ": " ", r"\~": " ", r"\0": " ", r"\|": "", r"\^": "", r"\&": "", r"\/": "",
                r"\,": "", r"\:": "", r"\%": "", r"\c": "", r"\.": "."}
ROFF_TEXT_MACROS = {"B", "I", "R", "SM", "SB", "BI", "BR", "IB", "IR", "RB", "RI", "SH", "SS", "TP", "IP", "OP",
                    "SY", "UR", "MT", "Nm", "Nd", "Sh", "Ss", "Fl", "Ar", "Xr", "Pa", "Em", "Dq", "Sq", "Ql", "Cm"}
ROFF_BREAKS = {"PP", "P", "LP", "SH", "SS", "TP", "IP", "HP", "TH", "Pp", "Sh", "Ss", "sp", "br", "YS", "EE", "EX"}


def roff_text(source: str) -> str:
    """The readable text of a man page in roff (man or mdoc macros): macro arguments kept, escapes
    and font changes resolved, comments, string and register definitions dropped; paragraphs
    separated by blank lines."""
    paragraphs: list[list[str]] = [[]]
    for line in source.splitlines():
        if line.startswith((".\\\"", "'\\\"", '.\\"', "\\\"")) or line.strip() in (".", "'"):
            continue
        if line.startswith((".", "'")):
            request = line[1:].strip()
            name, _, arguments = request.partition(" ")
            if name in ROFF_BREAKS and paragraphs[-1]:
                paragraphs.append([])
            if name in ROFF_TEXT_MACROS and arguments:
                words = _roff_arguments(arguments)
                paragraphs[-1].append(" ".join(words[:1] if name == "IP" else words))  # .IP tag indent
            continue  # other requests (.ds, .nr, .ie, .el, .de, .TH, ...) carry no prose
        paragraphs[-1].append(line)
    text = "\n\n".join(" ".join(lines) for lines in paragraphs if lines)
    return _roff_inline(text)


def _roff_arguments(arguments: str) -> list[str]:
    return [part.strip('"') for part in re.findall(r'"[^"]*"|\S+', arguments)]


def _roff_inline(text: str) -> str:
    text = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", text)  # font changes
    text = re.sub(r"\\s[+-]?\d", "", text)  # size changes
    text = re.sub(r"\\\*(\[[^\]]*\]|\(..|.)", "", text)  # defined strings
    text = re.sub(r"\\[nk](\[[^\]]*\]|\(..|.)", "", text)  # registers, marks
    text = re.sub(r"\\[hvwlLoDXZbNxY]'[^']*'", "", text)  # motions, drawing, widths
    for escape, value in ROFF_ESCAPES.items():
        text = text.replace(escape, value)
    text = re.sub(r"\\\[([^\]]*)\]", "", text)  # other named glyphs
    text = re.sub(r"\\\(..", "", text)
    text = text.replace("\\", "")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in text.split("\n\n"))


class _HTMLText(HTMLParser):
    """Text of an HTML page by block, leaving out scripts, styles, DocBook's navigation bars and
    LibreOffice's debug footer; given ``area``, only the text inside the element with that id."""

    SKIP = {"script", "style", "head"}
    BLOCKS = {"p", "li", "dt", "dd", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "title", "div", "tr"}
    NAVIGATION = ("navheader", "navfooter", "toc", "list-of-tables", "list-of-figures", "debug")

    def __init__(self, area: str | None = None) -> None:
        super().__init__(convert_charrefs=True)
        self.area = area
        self.blocks: list[str] = []
        self.current: list[str] = []
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, skipping, inside the area)

    def _skipping(self) -> bool:
        if not self.stack:
            return self.area is not None
        _, skipped, inside = self.stack[-1]
        return skipped or not inside

    def handle_starttag(self, tag, attrs) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        parent_skipped, parent_inside = self.stack[-1][1:] if self.stack else (False, self.area is None)
        skipped = parent_skipped or tag in self.SKIP or any(name in classes for name in self.NAVIGATION)
        inside = parent_inside or (self.area is not None and attributes.get("id") == self.area)
        if tag in self.BLOCKS:
            self._flush()
        if tag not in ("br", "img", "meta", "link", "hr", "input"):
            self.stack.append((tag, skipped, inside))

    def handle_endtag(self, tag) -> None:
        if tag in self.BLOCKS:
            self._flush()
        while self.stack:
            name, *_ = self.stack.pop()
            if name == tag:
                break

    def handle_data(self, data) -> None:
        if not self._skipping():
            self.current.append(data)

    def _flush(self) -> None:
        text = " ".join("".join(self.current).split())
        if text:
            self.blocks.append(text)
        self.current = []


def html_text(source: str, area: str | None = None) -> str:
    """The readable text of an HTML page (DocBook output): blocks separated by blank lines, without
    the navigation bars and tables of contents; given ``area``, the element with that id only."""
    parser = _HTMLText(area)
    parser.feed(source)
    parser.close()
    parser._flush()
    return "\n\n".join(html.unescape(block) for block in parser.blocks)
