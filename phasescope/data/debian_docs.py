"""Real multilingual text, offline: Debian's translated documentation as a local-folder corpus.

Debian ships documentation written by people and translated by people, in many languages:

- ``gnome-user-docs``: the GNOME help, Mallard XML pages under ``/usr/share/help/<locale>/gnome-help/``
  (``C`` is the English original);
- ``manpages`` and ``manpages-de/-es/-fr/-ja/-ru/-tr/-zh``: manual pages in roff, gzipped, under
  ``/usr/share/man/<locale>/man<N>/`` (English directly under ``/usr/share/man/man<N>/``, where every
  installed package puts its pages);
- ``debian-reference-<lang>``: the Debian Reference, DocBook rendered as one HTML file per chapter,
  ``/usr/share/debian-reference/chNN.<lang>.html``;
- ``libreoffice-help-<lang>``: the LibreOffice help, written in XHP and shipped rendered as one HTML page per
  topic under ``/usr/share/libreoffice/help/<locale>/text/`` (XHP files in a help source tree are read too).
  These packages depend on the whole office suite, which reading them does not need:
  ``scripts/setup-debian-docs.sh --libreoffice DIR`` unpacks them into ``DIR``, a second ``root``;
- ``gettext`` (opt-in, not a default source): the translation catalogs under ``/usr/share/locale``, one
  document per catalog holding its translated interface strings. Not running text, and the source of the
  in-domain lexicon (a corpus that includes it contains the translation pairs it is tested on); it is
  what Debian has in Arabic, so it measures that coverage.

:func:`build_debian_docs` strips the markup, drops boilerplate (legal notices and credits, lines
that recur across a source's documents, documents under 200 characters), exact duplicates and
documents whose language (checked with ``py3langid`` among the corpus languages) is not the folder's
(an untranslated page shipped in a translation), and writes ``<out>/<lang>/<source>--<page>.txt`` (one
document per file, as :class:`~phasescope.data.corpora.LocalCorpus` reads them), a manifest with the
per-language documents, characters, tokens (per source too) and packages, and ``parallel.jsonl``: which documents are
translations of the same page (the same Mallard page id, man page or chapter) in which languages.

Arabic running text is not among these packages (only interface strings, the ``gettext`` source); a
corpus of the languages that have text is built, and the manifest says how much each has.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from phasescope.data.gettext_lexicon import catalog_pairs, normalized
from phasescope.data.languages import HAN_OR_KANA, check_language_codes
from phasescope.data.markup import MalformedPage, html_text, mallard_text, roff_text, xhp_text
from phasescope.errors import PhasescopeError
from phasescope.run.atomic import atomic_directory

MIN_CHARACTERS = 200  # shorter documents (a stub page, a one-line man page) are dropped
BOILERPLATE_SHARE = 0.5  # a line in more than this share of a source's documents (of one language) is boilerplate
SOURCES = ("gnome-help", "man", "debian-reference", "libreoffice-help", "gettext")
DEFAULT_SOURCES = SOURCES[:4]  # gettext holds the lexicon's translation pairs: opt-in

# the locale folder names of each phasescope language, per source
GNOME_LOCALES = {"en": "C", "de": "de", "fr": "fr", "es": "es", "tr": "tr", "ru": "ru", "ar": "ar", "zh": "zh_CN",
                 "ja": "ja"}
MAN_LOCALES = {"en": "", "de": "de", "fr": "fr", "es": "es", "tr": "tr", "ru": "ru", "zh": "zh_CN", "ja": "ja"}
REFERENCE_LOCALES = {"en": "en", "de": "de", "fr": "fr", "es": "es", "ja": "ja", "zh": "zh-cn"}
LIBREOFFICE_LOCALES = {"en": "en-US", "de": "de", "fr": "fr", "es": "es", "tr": "tr", "ru": "ru", "zh": "zh-CN",
                       "ja": "ja"}
GETTEXT_LOCALES = {"de": "de", "fr": "fr", "es": "es", "tr": "tr", "ru": "ru", "ar": "ar", "zh": "zh_CN", "ja": "ja"}
PACKAGES = {
    "gnome-help": {language: "gnome-user-docs" for language in GNOME_LOCALES},
    "man": {language: "manpages" if language == "en" else f"manpages-{language}" for language in MAN_LOCALES},
    "debian-reference": {language: f"debian-reference-{locale}" for language, locale in REFERENCE_LOCALES.items()},
    "libreoffice-help": {language: f"libreoffice-help-{locale.lower()}"
                         for language, locale in LIBREOFFICE_LOCALES.items()},
    "gettext": {language: "gettext catalogs" for language in GETTEXT_LOCALES},
}
# one token per CJK character or kana (scripts written without spaces), else one per run of letters and digits
_TOKEN = re.compile(f"[{HAN_OR_KANA}]|[^\\W{HAN_OR_KANA}]+")


def count_tokens(text: str) -> int:
    """Words in ``text``, the same way in every script: a run of letters and digits is one token, and so is
    each Han character and kana (Chinese and Japanese are written without spaces)."""
    return len(_TOKEN.findall(text))


@dataclass
class RawDocument:
    """One page of one source in one language, before cleaning."""

    source: str
    key: str  # the page's identity across languages (its parallel group)
    language: str
    path: Path
    text: str


@dataclass
class BuildReport:
    """What :func:`build_debian_docs` wrote and dropped."""

    out: Path
    documents: dict[str, int] = field(default_factory=dict)
    characters: dict[str, int] = field(default_factory=dict)
    source_tokens: dict[str, dict[str, int]] = field(default_factory=dict)  # language -> source -> count_tokens
    packages: dict[str, list[str]] = field(default_factory=dict)
    dropped: dict[str, Counter] = field(default_factory=dict)
    parallel_groups: int = 0
    missing: list[str] = field(default_factory=list)  # "source/language": nothing installed for it

    @property
    def tokens(self) -> dict[str, int]:
        """count_tokens over each language's documents."""
        return {language: sum(counts.values()) for language, counts in self.source_tokens.items()}


# --- the installed sources ----------------------------------------------------------------------
Page = tuple[str, Path, Callable[[Path], str]]  # (the page's key across languages, its file, its reader)


def _read(path: Path) -> str:
    """A page's text: UTF-8, gunzipped where it ends in .gz; a file that cannot be read or is not UTF-8 stops the
    build with a line naming it (Debian ships its documentation in UTF-8: none of the ~47,000 pages read here
    is anything else)."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise PhasescopeError(f"{path}: cannot be read ({error}); fix or remove it, or leave its source out "
                              "(--sources)") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PhasescopeError(f"{path}: not UTF-8 text (byte {error.start}); re-encode it or remove it, or leave its "
                              "source out (--sources)") from None


def _reading(extract: Callable[[str], str]) -> Callable[[Path], str]:
    return lambda path: extract(_read(path))


def _gnome_pages(root: Path, language: str) -> Iterator[Page]:
    folder = root / "usr/share/help" / GNOME_LOCALES[language] / "gnome-help"
    for path in sorted(folder.glob("*.page")) if folder.is_dir() else []:
        yield path.stem, path, _reading(mallard_text)


def _man_pages(root: Path, language: str) -> Iterator[Page]:
    if language not in MAN_LOCALES:  # Debian has no manual pages in Arabic
        return
    base = root / "usr/share/man" / MAN_LOCALES[language] if MAN_LOCALES[language] else root / "usr/share/man"
    for section in sorted(base.glob("man[0-9]*")) if base.is_dir() else []:
        for path in sorted(section.iterdir()):
            if path.is_file() and not path.is_symlink():
                name = path.name.removesuffix(".gz")
                yield f"{section.name}/{name}", path, _reading(roff_text)


def _reference_chapters(root: Path, language: str) -> Iterator[Page]:
    if language not in REFERENCE_LOCALES:
        return
    folder = root / "usr/share/debian-reference"
    for path in sorted(folder.glob(f"*.{REFERENCE_LOCALES[language]}.html")) if folder.is_dir() else []:
        chapter = path.name.split(".")[0]
        if chapter != "index":  # the table of contents
            yield chapter, path, _reading(html_text)


def _libreoffice_pages(root: Path, language: str) -> Iterator[Page]:
    if language not in LIBREOFFICE_LOCALES:  # no LibreOffice help in Arabic
        return
    folder = root / "usr/share/libreoffice/help" / LIBREOFFICE_LOCALES[language]
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if path.suffix in (".html", ".xhp") and path.is_file():
            key = path.relative_to(folder).with_suffix("").as_posix()
            # the rendered page's text is the element with id DisplayArea (menus, index and search around it)
            yield key, path, _reading(xhp_text if path.suffix == ".xhp" else
                                      lambda source: html_text(source, area="DisplayArea"))


def _catalogs(root: Path, language: str) -> Iterator[Page]:
    if language not in GETTEXT_LOCALES:  # English is the catalogs' source language: it has none
        return
    folder = root / "usr/share/locale" / GETTEXT_LOCALES[language] / "LC_MESSAGES"
    for path in sorted(folder.glob("*.mo")) if folder.is_dir() else []:
        yield path.stem, path, catalog_text


def catalog_text(path: Path) -> str:
    """A gettext catalog's translated strings, one per line (mnemonics removed), in the order of their English
    originals; a damaged catalog has none."""
    pairs = sorted(catalog_pairs(path))
    return "\n".join(dict.fromkeys(normalized(text) for _, text in pairs if normalized(text)))


FINDERS = {"gnome-help": _gnome_pages, "man": _man_pages, "debian-reference": _reference_chapters,
           "libreoffice-help": _libreoffice_pages, "gettext": _catalogs}


def raw_documents(root: Path, source: str, language: str, malformed: Counter | None = None
                  ) -> Iterator[RawDocument]:
    """The installed pages of ``source`` in ``language`` under ``root`` (``/`` on the machine), markup stripped;
    pages whose markup cannot be parsed are skipped and counted in ``malformed``.

    Raises:
        PhasescopeError: a file cannot be read or is not UTF-8 (naming it).
    """
    for key, path, read in FINDERS[source](root, language):
        try:
            text = read(path)
        except MalformedPage:
            if malformed is not None:
                malformed[language] += 1
            continue
        yield RawDocument(source, key, language, path, text)


# --- cleaning ------------------------------------------------------------------------------------
class LanguageCheck:
    """``py3langid`` restricted to the corpus languages: the language a text is written in."""

    def __init__(self, languages: list[str]) -> None:
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier
        except ImportError:
            raise PhasescopeError("the language check needs py3langid: pip install py3langid") from None
        self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)  # npz, no pickle
        self.identifier.set_languages(sorted(set(languages) | {"en"}))

    def __call__(self, text: str) -> str:
        return self.identifier.classify(text[:4000])[0]


def remove_boilerplate(documents: list[RawDocument]) -> list[RawDocument]:
    """Drop the lines (paragraphs) that recur in more than half of a source's documents of one language
    (licence notices, "this page is part of ..." footers), when the source has at least 4 documents."""
    groups: dict[tuple[str, str], list[RawDocument]] = defaultdict(list)
    for document in documents:
        groups[(document.source, document.language)].append(document)
    cleaned = []
    for group in groups.values():
        counts = Counter(paragraph for document in group for paragraph in set(document.text.split("\n\n")))
        common = {paragraph for paragraph, count in counts.items()
                  if len(group) >= 4 and count > BOILERPLATE_SHARE * len(group)}
        for document in group:
            kept = [paragraph for paragraph in document.text.split("\n\n") if paragraph not in common]
            cleaned.append(RawDocument(document.source, document.key, document.language, document.path,
                                       "\n\n".join(kept)))
    return cleaned


def _file_name(source: str, key: str) -> str:
    return f"{source}--{re.sub(r'[^A-Za-z0-9._-]+', '_', key)}.txt"


def _packages(sources: list[str], languages: list[str], apt_only: bool = False) -> list[str]:
    """The packages that carry ``sources`` in ``languages`` (``apt_only``: those apt-get installs, not the
    LibreOffice help unpacked beside the system or the catalogs that come with other packages)."""
    return sorted({PACKAGES[source][language] for source in sources for language in languages
                   if language in PACKAGES[source] and not (apt_only and source in ("gettext", "libreoffice-help"))})


def build_debian_docs(out: Path | str, languages: list[str] | None = None, sources: list[str] | None = None,
                      root: Path | str | list[Path | str] = "/",
                      progress: Callable[[str], None] | None = None) -> BuildReport:
    """Write the installed Debian documentation as a local-folder corpus (see the module docstring).

    Args:
        out: the corpus folder (must not exist yet, or be empty).
        languages: phasescope language codes (default: all nine, those with no text reported and left out;
            a language given here that has no text is an error).
        sources: some of ``gnome-help``, ``man``, ``debian-reference``, ``libreoffice-help``, ``gettext``
            (default: all but ``gettext``).
        root: the file-system root the packages are installed under, or several (a folder that
            ``scripts/setup-debian-docs.sh --libreoffice DIR`` unpacked packages into, beside ``/``).
        progress: called with a line per source and language.

    Raises:
        PhasescopeError: no documentation of the chosen sources is installed (naming the apt packages), a
            language given has none, a file cannot be read or is not UTF-8, ``out`` is not empty, or an unknown
            source or language. Nothing is written then.
    """
    chosen = languages is not None
    languages = check_language_codes(languages or list(GNOME_LOCALES), "languages")
    sources = list(sources or DEFAULT_SOURCES)
    unknown = [source for source in sources if source not in SOURCES]
    if unknown:
        raise PhasescopeError(f"unknown documentation source {unknown[0]!r}; expected some of {', '.join(SOURCES)}")
    if not any(language in PACKAGES[source] for source in sources for language in languages):
        raise PhasescopeError(f"Debian has no {' or '.join(sources)} in {', '.join(languages)} (nothing to install "
                              "would help); choose other sources (--sources) or languages (--languages)")
    out = Path(out)
    roots = [Path(folder) for folder in (root if isinstance(root, list) else [root])]
    if out.exists() and any(out.iterdir()):
        raise PhasescopeError(f"{out} exists and is not empty; give a new folder")
    report = BuildReport(out)
    documents: list[RawDocument] = []
    malformed: Counter = Counter()
    for source in sources:
        for language in languages:
            found = [document for folder in roots for document in raw_documents(folder, source, language, malformed)]
            if progress:
                progress(f"{source} {language}: {len(found)} pages")
            if not found:
                report.missing.append(f"{source}/{language}")
            documents += found
    where = ", ".join(str(folder) for folder in roots)
    if not documents:
        wanted = _packages(sources, languages, apt_only=True)
        how = [f"apt-get install {' '.join(wanted)} (or run scripts/setup-debian-docs.sh)"] if wanted else []
        if "libreoffice-help" in sources:
            how.append("scripts/setup-debian-docs.sh --libreoffice DIR, then --root / --root DIR")
        if "gettext" in sources:
            how.append("any package with translations (its catalogs go to /usr/share/locale)")
        raise PhasescopeError(f"no Debian documentation of {', '.join(sources)} is installed under {where}; "
                              f"install it: {'; '.join(how)}")
    if chosen:  # a language asked for by name has text, or nothing is built
        empty = [language for language in languages if not any(d.language == language for d in documents)]
        if empty:
            wanted = _packages(sources, empty)
            raise PhasescopeError(f"no {', '.join(sources)} text in {', '.join(empty)} under {where}"
                                  + (f" (the packages would be: {' '.join(wanted)})" if wanted else
                                     " (Debian ships none in these sources)") + "; leave it out of --languages")
    documents = remove_boilerplate(documents)
    check = LanguageCheck(languages)
    kept: list[RawDocument] = []
    seen: set[str] = set()
    dropped: dict[str, Counter] = defaultdict(Counter)
    for language, count in malformed.items():
        dropped[language]["malformed"] = count
    for document in documents:
        text = document.text.strip()
        digest = hashlib.sha256(f"{document.language}\n{text}".encode()).hexdigest()
        if len(text) < MIN_CHARACTERS:
            dropped[document.language]["short"] += 1
        elif digest in seen:
            dropped[document.language]["duplicate"] += 1
        elif check(text) != document.language:
            dropped[document.language]["other language"] += 1
        else:
            seen.add(digest)
            kept.append(RawDocument(document.source, document.key, document.language, document.path, text))
    groups: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    if out.exists():
        out.rmdir()  # empty (checked above): the folder appears whole, or not at all
    with atomic_directory(out) as building:
        for document in kept:
            folder = building / document.language
            folder.mkdir(exist_ok=True)
            name = _file_name(document.source, document.key)
            (folder / name).write_text(document.text + "\n", encoding="utf-8")
            groups[(document.source, document.key)][document.language] = f"{document.language}/{name}"
            report.documents[document.language] = report.documents.get(document.language, 0) + 1
            report.characters[document.language] = report.characters.get(document.language, 0) + len(document.text)
            per_source = report.source_tokens.setdefault(document.language, {})
            per_source[document.source] = per_source.get(document.source, 0) + count_tokens(document.text)
            package = PACKAGES[document.source][document.language]
            report.packages.setdefault(document.language, [])
            if package not in report.packages[document.language]:
                report.packages[document.language].append(package)
        parallel = [{"source": source, "page": key, "files": files} for (source, key), files in sorted(groups.items())
                    if len(files) > 1]
        report.parallel_groups = len(parallel)
        report.dropped = dict(dropped)
        with (building / "parallel.jsonl").open("w", encoding="utf-8") as handle:
            for group in parallel:
                handle.write(json.dumps(group, ensure_ascii=False) + "\n")
        tokens = report.tokens
        manifest = {"sources": sources, "languages": {language: {
            "documents": report.documents.get(language, 0), "characters": report.characters.get(language, 0),
            "tokens": tokens.get(language, 0), "tokens_by_source": report.source_tokens.get(language, {}),
            "packages": report.packages.get(language, []), "dropped": dict(dropped.get(language, {}))}
            for language in languages}, "parallel_groups": report.parallel_groups, "missing": report.missing,
            "tokens": "count_tokens: a run of letters and digits, or one Han character or kana"}
        (building / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return report
