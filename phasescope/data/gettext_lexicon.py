"""An in-domain WLT lexicon from the translation catalogs Debian packages ship.

Software is translated string by string: a package's gettext catalog (``/usr/share/locale/<locale>/
LC_MESSAGES/<domain>.mo``) maps each English interface string to its translation. Single-word
strings (File, Edit, Print, Window, Folder, ...) are a word-level translation table made by the
people who translated the software, in the same domain as its documentation (the real-text corpus of
:mod:`phasescope.data.debian_docs`).

:func:`build_gettext_lexicon` reads every catalog with Python's ``gettext`` (the binary .mo format;
nothing is unpickled), keeps English strings that are one word once mnemonics (``_File``), ellipses
and colons are stripped (a concept is the word case-folded; all-capital placeholders such as FILE
and function words such as "and" are left out), takes each language's most frequent single-word translation across all
catalogs as the word (every translation seen in at least two catalogs as a variant), keeps the
concepts translated into every language, and, given a corpus folder, the concepts whose word occurs
in every language's text, ranked by their rarest language's count (the counts are returned).
"""

from __future__ import annotations

import gettext
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pandas as pd

from phasescope.data.languages import SPACELESS_LANGUAGES, check_language_codes
from phasescope.data.lexicon import Lexicon
from phasescope.data.lexicon_sources import is_single_word
from phasescope.errors import PhasescopeError

LOCALES = {"de": ("de",), "fr": ("fr",), "es": ("es",), "tr": ("tr",), "ru": ("ru",), "ar": ("ar",),
           "zh": ("zh_CN",), "ja": ("ja",)}
CATEGORY = "interface"
MIN_LETTERS = 3  # "OK", "On", "No": too short to be a word that documentation uses as a word
# function words that interfaces translate alone ("and" in "Tom and Jerry"): words, not concepts
FUNCTION_WORDS = frozenset({"and", "or", "the", "of", "to", "in", "on", "at", "by", "for", "with", "from", "not",
                            "yes", "all", "none", "any", "but", "and/or", "than", "then", "via", "per"})
_MNEMONIC = re.compile(r"_(?=\w)|&(?=\w)")
_TRAILING = re.compile(r"(\.\.\.|…|:|\s*\(_\w\))+$")


def normalized(text: str) -> str:
    """An interface string as a word: mnemonics (``_File``, ``&Edit``, ``(_F)``), trailing ellipses and colons
    removed, surrounding space stripped."""
    return _TRAILING.sub("", _MNEMONIC.sub("", _TRAILING.sub("", text.strip()))).strip()


def catalog_pairs(path: Path, damaged: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """(English msgid, translation) of one .mo file, contexts dropped, plural forms and empty entries skipped.
    A damaged or foreign catalog yields nothing; with ``damaged``, its path and the reason are appended."""
    try:
        with open(path, "rb") as handle:
            catalog = gettext.GNUTranslations(handle)._catalog
    except (OSError, UnicodeDecodeError, ValueError) as error:
        if damaged is not None:
            damaged.append(f"{path} ({' '.join(str(error).split()) or type(error).__name__})")
        return
    for key, value in catalog.items():
        if not isinstance(key, str) or not key or not isinstance(value, str) or not value:
            continue  # plural entries are keyed (msgid, n)
        yield key.split("\x04", 1)[-1], value


def gettext_translations(locale_root: Path, languages: list[str], damaged: list[str] | None = None
                         ) -> tuple[dict[str, dict[str, Counter]], dict]:
    """(language -> concept -> Counter of its single-word translations, one count per catalog;
    concept -> Counter of its English forms). A concept is an English word case-folded (File, file);
    all-capital strings (FILE, PATH: placeholders in usage lines) and function words are left out. Damaged
    catalogs are skipped and, with ``damaged``, named there."""
    table: dict[str, dict[str, Counter]] = {language: defaultdict(Counter) for language in languages}
    english_forms: dict[str, Counter] = defaultdict(Counter)
    for language in languages:
        for locale in LOCALES.get(language, ()):
            folder = locale_root / locale / "LC_MESSAGES"
            for path in sorted(folder.glob("*.mo")) if folder.is_dir() else []:
                seen: set[tuple[str, str]] = set()
                for source, target in catalog_pairs(path, damaged):
                    english, word = normalized(source), normalized(target)
                    if len(english) < MIN_LETTERS or not is_single_word(english, "en") or not english.isascii():
                        continue
                    concept = english.casefold()
                    if english.isupper() or concept in FUNCTION_WORDS:
                        continue
                    if not is_single_word(word, language) or word.isupper() or (concept, word) in seen:
                        continue
                    seen.add((concept, word))
                    table[language][concept][word] += 1
                    english_forms[concept][english] += 1
    return table, english_forms


def corpus_counts(corpus: Path, language: str, words: Iterable[str]) -> dict[str, int]:
    """How often each word occurs in the language's text (case-insensitive whole words; substrings in zh/ja)."""
    folder = corpus / language
    if not folder.is_dir():
        raise PhasescopeError(f"{folder}: the corpus has no text in {language!r}; leave it out (--languages)")
    words = list(dict.fromkeys(words))
    text = "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in sorted(folder.glob("*.txt")))
    if language in SPACELESS_LANGUAGES:
        return {word: text.count(word) for word in words}
    tokens = Counter(re.findall(r"[^\W\d_]+", text.casefold()))
    return {word: tokens[word.casefold()] for word in words}


def build_gettext_lexicon(languages: Iterable[str] | None = None, locale_root: Path | str = "/usr/share/locale",
                          corpus: Path | str | None = None, max_concepts: int | None = 125, min_count: int = 1,
                          progress: Callable[[str], None] | None = None) -> tuple[Lexicon, pd.DataFrame]:
    """The lexicon and a table of what survived (see the module docstring).

    Args:
        languages: ISO codes (English is the source; default: the nine built-in languages).
        locale_root: where the catalogs are (``<root>/<locale>/LC_MESSAGES/*.mo``).
        corpus: a corpus folder (``phasescope corpus build``); its text filters and ranks the concepts.
        max_concepts: keep this many (the reference's WLT set has 125); None keeps all.
        min_count: the least occurrences of a concept's word in every language's text.

    Returns:
        (lexicon, counts): counts has one row per (concept, language) kept, with ``word``, ``catalogs``
        (how many catalogs translate it so) and ``corpus_count``.

    Raises:
        PhasescopeError: no catalogs under ``locale_root`` (naming the folder), or no concept survives.
    """
    languages = check_language_codes(list(languages) if languages else ["en", "de", "fr", "es", "tr", "ru", "ar",
                                                                         "zh", "ja"], "languages")
    others = [language for language in languages if language != "en"]
    locale_root = Path(locale_root)
    damaged: list[str] = []
    table, english_forms = gettext_translations(locale_root, others, damaged)
    if damaged and progress:
        progress(f"skipped {len(damaged)} damaged catalog(s): {damaged[0]}" + (" and others" if len(damaged) > 1
                                                                                else ""))
    empty = [language for language in others if not table[language]]
    if len(empty) == len(others):
        raise PhasescopeError(f"no gettext catalogs (*.mo) for {', '.join(others)} under {locale_root} "
                              "(<locale>/LC_MESSAGES/*.mo); install translated packages or name another locale folder")
    if empty:
        raise PhasescopeError(f"no single-word translations for {', '.join(empty)} under {locale_root}; leave those "
                              "languages out (--languages)")
    concepts = sorted(set.intersection(*(set(table[language]) for language in others)))
    if progress:
        progress(f"{len(concepts)} English words have a single-word translation in every one of {', '.join(others)} "
                 f"({', '.join(f'{language} {len(table[language])}' for language in others)} alone)")
    rows = []
    for concept in concepts:
        forms = english_forms[concept]
        english = max(forms.items(), key=lambda item: (item[1], item[0].islower(), item[0]))[0]
        for language in languages:
            if language == "en":
                rows.append((english, language, english, [english, *sorted(set(forms) - {english})],
                             sum(forms.values())))
                continue
            counts = table[language][concept]
            word, catalogs = max(counts.items(), key=lambda item: (item[1], -len(item[0]), item[0]))
            variants = [word, *sorted(w for w, c in counts.items() if c >= 2 and w != word)]
            rows.append((english, language, word, variants, catalogs))
    frame = pd.DataFrame(rows, columns=["concept", "language", "word", "variants", "catalogs"])
    frame["corpus_count"] = pd.NA
    if corpus is not None:
        for language in languages:
            chosen = frame.language == language
            counts = corpus_counts(Path(corpus), language, frame.loc[chosen, "word"])
            frame.loc[chosen, "corpus_count"] = frame.loc[chosen, "word"].map(counts)
        rarest = frame.groupby("concept")["corpus_count"].min()
        kept = rarest[rarest >= min_count].sort_values(ascending=False, kind="stable")
        if progress:
            progress(f"{len(kept)} of them occur at least {min_count} time(s) in every language's text")
        order = list(kept.index[:max_concepts] if max_concepts else kept.index)
    else:
        support = frame.groupby("concept")["catalogs"].sum().sort_values(ascending=False, kind="stable")
        order = list(support.index[:max_concepts] if max_concepts else support.index)
    if not order:
        raise PhasescopeError("no concept has a single-word translation in every language"
                              + (" that occurs in every language's text" if corpus is not None else ""))
    frame = frame[frame.concept.isin(order)].copy()
    frame["rank"] = frame.concept.map({concept: i for i, concept in enumerate(order)})
    # rows were made concept by concept in language order: a stable sort by rank keeps that order within each
    frame = frame.sort_values("rank", kind="stable").drop(columns="rank")
    lexicon = Lexicon(frame.assign(category=CATEGORY)[["concept", "category", "language", "word", "variants"]])
    return lexicon, frame[["concept", "language", "word", "catalogs", "corpus_count"]].reset_index(drop=True)
