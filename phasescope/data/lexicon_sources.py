"""Builders of the concept lexicon: CLDR names shipped with ``emoji`` and ``babel``, and file loaders.

The built-in lexicon needs no network: the ``emoji`` package ships the CLDR short names of every
emoji in all nine built-in languages (``emoji/unicode_codes/emoji_XX.json``), and ``babel`` ships
CLDR month, weekday, territory and language names. :func:`build_cldr_lexicon` keeps the concepts
whose name is a *single word* in every requested language:

- Latin, Cyrillic and Arabic scripts: letters only (no space, hyphen, parenthesis, apostrophe,
  digit or underscore, which CLDR uses between the words of an emoji name);
- Chinese and Japanese, written without spaces: at most ``MAX_HAN_KANA_CHARS`` characters, which
  keeps ``狗`` / ``自行车`` / ``ハンバーガー`` and drops descriptions such as ``墨西哥玉米煎饼``.

Emoji categories: the ``emoji`` package carries no Unicode group, so the category comes from the
emoji's code point, by the Unicode blocks where the groups are laid out (:data:`EMOJI_CATEGORY_RANGES`:
1F400-1F43F animals, 1F345-1F37F food, ...), ``object`` when no range matches. A handful of emoji
whose CLDR names do not name the same thing across languages (``bug`` is a caterpillar in German,
``foot`` an ankle in Russian) or are not nouns are dropped (:data:`EXCLUDED_EMOJI`). German nouns
are capitalized (CLDR writes emoji names in lower case).

Variants (valid answers beside the canonical word): the sentence-initial capital of a lower-case
word (``dog``/``Dog``), English single-word aliases (``car`` for ``automobile``), the other kana
script of an all-kana Japanese animal, plant or food name (``イヌ``/``いぬ``), and for months and
weekdays the format and stand-alone forms (Russian ``март``/``марта``, Japanese ``一月``/``1月``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from phasescope.data.languages import BUILTIN_LANGUAGES, LANGUAGES, SPACELESS_LANGUAGES, check_language_codes
from phasescope.data.lexicon import Lexicon
from phasescope.errors import PhasescopeError
from phasescope.files import read_text_file

MAX_HAN_KANA_CHARS = 5  # a zh/ja name longer than this is a description, not a word
CASELESS_LANGUAGES = ("ar", "zh", "ja")

# (first code point, last code point, category); the first matching range wins.
EMOJI_CATEGORY_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x1F400, 0x1F43F, "animal"), (0x1F54A, 0x1F54A, "animal"), (0x1F577, 0x1F578, "animal"),
    (0x1F980, 0x1F9AE, "animal"), (0x1FAB0, 0x1FAB2, "animal"), (0x1FABC, 0x1FABC, "animal"),
    (0x1FABF, 0x1FABF, "animal"), (0x1FACE, 0x1FACF, "animal"),
    (0x1F330, 0x1F344, "plant"), (0x1FAB7, 0x1FAB8, "plant"), (0x1FABB, 0x1FABB, "plant"),
    (0x1F32D, 0x1F37F, "food"), (0x1F950, 0x1F96F, "food"), (0x1F9C0, 0x1F9CB, "food"),
    (0x1FAD0, 0x1FADB, "food"),
    (0x1F440, 0x1F445, "body"), (0x1F9B4, 0x1F9B7, "body"), (0x1F9E0, 0x1F9E0, "body"),
    (0x1FAC0, 0x1FAC2, "body"), (0x1FABD, 0x1FABD, "body"),
    (0x1F466, 0x1F487, "person"), (0x1F934, 0x1F936, "person"), (0x1F977, 0x1F977, "person"),
    (0x1F9CC, 0x1F9DF, "person"),
    (0x1F451, 0x1F462, "clothing"), (0x1F48D, 0x1F48D, "clothing"), (0x1F97B, 0x1F97F, "clothing"),
    (0x1F9E2, 0x1F9E6, "clothing"), (0x1FA71, 0x1FA7B, "clothing"),
    (0x1F680, 0x1F6A4, "transport"), (0x1F6B2, 0x1F6B2, "transport"), (0x1F6F3, 0x1F6FC, "transport"),
    (0x2708, 0x2708, "transport"), (0x26F4, 0x26F4, "transport"), (0x1FA82, 0x1FA82, "transport"),
    (0x1F3D4, 0x1F3F0, "place"), (0x26EA, 0x26EA, "place"), (0x26F0, 0x26F2, "place"),
    (0x1F54B, 0x1F54D, "place"), (0x1F30B, 0x1F30B, "place"), (0x1F6D5, 0x1F6D6, "place"),
    (0x1F3B7, 0x1F3BC, "music"), (0x1F3A4, 0x1F3A4, "music"), (0x1F941, 0x1F941, "music"),
    (0x1FA87, 0x1FA89, "music"), (0x1FA95, 0x1FA97, "music"),
    (0x26BD, 0x26BE, "sport"), (0x1F3BE, 0x1F3C0, "sport"), (0x1F3B3, 0x1F3B3, "sport"),
    (0x1F94C, 0x1F94E, "sport"),
    (0x2600, 0x2601, "nature"), (0x1F300, 0x1F32C, "nature"), (0x1F525, 0x1F525, "nature"),
    (0x1FAA8, 0x1FAA8, "nature"), (0x1FAB5, 0x1FAB5, "nature"), (0x1FAE7, 0x1FAE7, "nature"),
)

# English CLDR names of emoji dropped from the lexicon: not nouns, or names that denote different
# things across languages (de "raupe" for bug, ru "щиколотка" for foot, ru "солонка" for salt),
# or Japanese names that describe the picture (電車正面, "train, front view").
EXCLUDED_EMOJI = frozenset({
    "radioactive", "foggy", "sparkle", "collision", "splatter", "kaaba", "khanda", "cinema", "bug", "foot",
    "salt", "train", "tram", "houses", "magnet", "books", "sled", "hut", "pick", "cookie", "eyes",
    "guard", "herb", "lollipop", "camping", "placard", "ewe", "ram",
})

# babel territory codes that are not countries (regions, groupings, unknown)
_NOT_COUNTRIES = frozenset({"EU", "EZ", "UN", "QO", "XA", "XB", "ZZ", "AQ"})
_LETTERS_ONLY = re.compile(r"^[^\W\d_]+$")


def build_cldr_lexicon(languages: Iterable[str] = BUILTIN_LANGUAGES,
                       categories: Iterable[str] | None = None) -> Lexicon:
    """The built-in lexicon: CLDR concepts whose name is a single word in every language.

    Args:
        languages: ISO 639-1 codes; every concept kept has a word in all of them.
        categories: keep only these categories (emoji categories of :data:`EMOJI_CATEGORY_RANGES`
            plus ``object``, ``month``, ``weekday``, ``territory``, ``language``); None keeps all.

    Returns:
        A :class:`Lexicon`, concepts ordered emoji (by code point), months, weekdays,
        territories, languages.
    """
    languages = check_language_codes(list(languages), "lexicon languages")
    rows = [*_emoji_rows(languages), *_calendar_rows(languages), *_territory_rows(languages),
            *_language_name_rows(languages)]
    frame = pd.DataFrame(rows, columns=["concept", "category", "language", "word", "variants"])
    if categories is not None:
        wanted = list(categories)
        unknown = sorted(set(wanted) - set(frame["category"]))
        if unknown:
            raise PhasescopeError(f"unknown lexicon categor(y/ies) {', '.join(unknown)}; "
                                  f"available: {', '.join(sorted(set(frame['category'])))}")
        frame = frame[frame["category"].isin(wanted)]
    return Lexicon(frame.reset_index(drop=True))


def is_single_word(word: str, language: str) -> bool:
    """Whether ``word`` is one word: letters only, and for zh/ja at most MAX_HAN_KANA_CHARS characters."""
    if not word or not _LETTERS_ONLY.match(word):
        return False
    return language not in SPACELESS_LANGUAGES or len(word) <= MAX_HAN_KANA_CHARS


def emoji_category(emoji_text: str) -> str:
    """The category of an emoji from its first code point (:data:`EMOJI_CATEGORY_RANGES`)."""
    code_point = ord(emoji_text[0])
    for first, last, category in EMOJI_CATEGORY_RANGES:
        if first <= code_point <= last:
            return category
    return "object"


def case_variants(word: str, language: str) -> list[str]:
    """The word, and in cased scripts its sentence-initial capitalized form (``dog``, ``Dog``).

    A capitalized word (German nouns, English month names) gets no lower-case variant: it is
    never written that way.
    """
    if language in CASELESS_LANGUAGES or not word:
        return [word]
    upper = {"i": "İ", "ı": "I"}.get(word[0], word[0].upper()) if language == "tr" else word[0].upper()
    return list(dict.fromkeys([word, upper + word[1:]]))


def other_kana(word: str) -> str | None:
    """The word in the other kana script (katakana <-> hiragana) if it is all kana, else None."""
    converted = []
    for char in word:
        code = ord(char)
        if 0x3041 <= code <= 0x3096:
            converted.append(chr(code + 0x60))
        elif 0x30A1 <= code <= 0x30F6:
            converted.append(chr(code - 0x60))
        elif char == "ー":
            converted.append(char)
        else:
            return None
    other = "".join(converted)
    return other if other != word else None


KANA_VARIANT_CATEGORIES = ("animal", "plant", "food")  # names written in either kana (イヌ/いぬ)


def _variants(word: str, language: str, extra: Iterable[str] = (), category: str = "") -> list[str]:
    forms = [word, *extra]
    if language == "ja" and category in KANA_VARIANT_CATEGORIES:
        forms += [kana for kana in (other_kana(form) for form in list(forms)) if kana]
    return list(dict.fromkeys(variant for form in forms for variant in case_variants(form, language)))


def _concept_id(english_name: str) -> str:
    text = unicodedata.normalize("NFKD", english_name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _emoji_rows(languages: list[str]) -> list[tuple]:
    import emoji

    for language in languages:
        if language != "en":
            try:
                emoji.config.load_language(language)
            except (ValueError, KeyError, FileNotFoundError):
                raise PhasescopeError(f"the emoji package has no CLDR names for language {language!r}; "
                                      f"it has {', '.join(emoji.LANGUAGES)}") from None
    rows, seen = [], set()
    for text, data in sorted(emoji.EMOJI_DATA.items(), key=lambda item: [ord(c) for c in item[0]]):
        if len(text) != 1:  # skips ZWJ and flag sequences, skin tones and variation selectors
            continue
        names = {language: str(data.get(language, "")).strip(":") for language in languages + ["en"]}
        english = names["en"]
        if english in EXCLUDED_EMOJI or english in seen:
            continue
        if not all(is_single_word(names[language], language) for language in languages):
            continue
        seen.add(english)
        aliases = [alias.strip(":") for alias in data.get("alias", [])]
        for language in languages:
            word = names[language]
            if language == "de":
                word = word[0].upper() + word[1:]  # German nouns are capitalized
            extra = [a for a in aliases if is_single_word(a, "en") and a != english] if language == "en" else []
            category = emoji_category(text)
            rows.append((_concept_id(english), category, language, word, _variants(word, language, extra, category)))
    return rows


def _calendar_rows(languages: list[str]) -> list[tuple]:
    from babel import Locale

    english = Locale.parse("en")
    rows = []
    for category, names_of, keys in (("month", lambda loc: loc.months, range(1, 13)),
                                     ("weekday", lambda loc: loc.days, range(7))):
        for key in keys:
            concept = _concept_id(names_of(english)["stand-alone"]["wide"][key])
            for language in languages:
                names = names_of(Locale.parse(language))
                forms = [names["stand-alone"]["wide"][key], names["format"]["wide"][key]]
                if language in SPACELESS_LANGUAGES:  # 一月 first: the CLDR data of babel 2.19 writes 1月 for ja
                    forms = [_han_numeral_month(form) for form in forms] + forms
                word, *forms = dict.fromkeys(forms)
                rows.append((concept, category, language, word, _variants(word, language, forms)))
    return rows


HAN_NUMERALS = "一二三四五六七八九十"


def _han_numeral_month(name: str) -> str:
    """``1月`` .. ``12月`` written with Han numerals (``一月`` .. ``十二月``); any other name as it is."""
    match = re.fullmatch(r"(\d{1,2})月", name)
    if match is None or not 1 <= int(match.group(1)) <= 12:
        return name
    number = int(match.group(1))
    tens, ones = divmod(number, 10)
    return ("十" if tens else "") + (HAN_NUMERALS[ones - 1] if ones else "") + "月"


def _territory_rows(languages: list[str]) -> list[tuple]:
    from babel import Locale

    locales = {language: Locale.parse(language) for language in languages}
    english = Locale.parse("en")
    rows = []
    for code in english.territories:
        if not re.fullmatch(r"[A-Z]{2}", code) or code in _NOT_COUNTRIES:
            continue
        names = {language: locales[language].territories.get(code, "") for language in languages}
        if all(is_single_word(names[language], language) for language in languages):
            concept = _concept_id(english.territories[code])
            rows += [(concept, "territory", language, names[language], _variants(names[language], language))
                     for language in languages]
    return rows


def _language_name_rows(languages: list[str]) -> list[tuple]:
    from babel import Locale

    locales = {language: Locale.parse(language) for language in languages}
    english = Locale.parse("en")
    rows = []
    for code in english.languages:
        if not re.fullmatch(r"[a-z]{2}", code):
            continue
        names = {language: locales[language].languages.get(code, "") for language in languages}
        if all(is_single_word(names[language], language) for language in languages):
            concept = _concept_id(english.languages[code]) + "_language"
            rows += [(concept, "language", language, names[language], _variants(names[language], language))
                     for language in languages]
    return rows


# ----------------------------------------------------------------------------------------------
# Loaders of published word lists into the same shape


_CONCEPT_COLUMNS = ("concept", "concept_id", "id", "word_id")
_LANGUAGE_COLUMNS = ("language", "lang", "language_code", "lang_code")
_WORD_COLUMNS = ("word", "translation", "text", "term")
_VARIANT_COLUMNS = ("variants", "synonyms", "valid_translations", "translations", "alternatives")
_CATEGORY_COLUMNS = ("category", "type", "semantic_category", "pos")


def load_wlt_lexicon(path: Path | str, languages: Iterable[str] | None = None) -> Lexicon:
    """A word-level translation table (e.g. ``mainlp/word-level-translations``) from a Parquet file.

    Two layouts are read, recognized by their columns:

    - long: one row per (concept, language), columns ``concept`` (or ``concept_id``/``id``),
      ``language`` (or ``lang``), ``word`` (or ``translation``), optional ``variants`` (a list, or
      a string with ``|``-separated forms) and ``category``;
    - wide: one row per concept, one column per language, named by ISO code (``en``, ``de``) or
      by English name (``English``, ``German``); a cell is a word or a list of valid forms (the
      first is the canonical word); the concept id is the ``concept`` column or the English word.

    Args:
        path: the Parquet file.
        languages: keep these languages (default: every known language found).
    """
    path = Path(path)
    if not path.is_file():
        raise PhasescopeError(f"word-level translation file {path} does not exist (expected a Parquet file)")
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a non-Parquet file
        raise PhasescopeError(f"{path}: not a Parquet file ({' '.join(str(error).split())[:120]})") from None
    columns = {str(column).lower(): column for column in frame.columns}
    language_column = _first_present(columns, _LANGUAGE_COLUMNS)
    word_column = _first_present(columns, _WORD_COLUMNS)
    if language_column and word_column:
        rows = _long_rows(frame, columns, language_column, word_column, path)
    else:
        rows = _wide_rows(frame, columns, path)
    lexicon_frame = pd.DataFrame(rows, columns=["concept", "category", "language", "word", "variants"])
    if languages is not None:
        wanted = check_language_codes(list(languages), "--languages")
        lexicon_frame = lexicon_frame[lexicon_frame["language"].isin(wanted)]
    if lexicon_frame.empty:
        raise PhasescopeError(f"{path}: no words in the requested languages")
    return Lexicon(lexicon_frame.drop_duplicates(["concept", "language"]).reset_index(drop=True))


def _first_present(columns: dict[str, str], names: tuple[str, ...]) -> str | None:
    return next((columns[name] for name in names if name in columns), None)


def _forms(cell) -> list[str]:
    """A cell as a list of forms: lists and arrays as they are, strings split on ``|``."""
    if cell is None or (isinstance(cell, float) and pd.isna(cell)):
        return []
    if isinstance(cell, str):
        return [form.strip() for form in cell.split("|") if form.strip()]
    return [str(form).strip() for form in list(cell) if str(form).strip()]


def _language_code(value: str) -> str | None:
    """An ISO code from a code or an English name or endonym (``German``, ``Deutsch``, ``de``)."""
    value = str(value).strip()
    for language in LANGUAGES.values():
        if value.lower() in (language.code, language.english_name.lower(), language.endonym.lower()):
            return language.code
    return None


def _long_rows(frame: pd.DataFrame, columns: dict[str, str], language_column: str, word_column: str,
               path: Path) -> list[tuple]:
    concept_column = _first_present(columns, _CONCEPT_COLUMNS)
    if concept_column is None:
        raise PhasescopeError(f"{path}: rows have {language_column!r} and {word_column!r} but no concept id column; "
                              f"expected one of {', '.join(_CONCEPT_COLUMNS)}")
    variant_column = _first_present(columns, _VARIANT_COLUMNS)
    category_column = _first_present(columns, _CATEGORY_COLUMNS)
    rows = []
    for record in frame.to_dict("records"):
        language = _language_code(record[language_column])
        forms = _forms(record[word_column])
        if language is None or not forms:
            continue
        variants = forms + (_forms(record[variant_column]) if variant_column else [])
        category = str(record[category_column]) if category_column else "wlt"
        rows.append((str(record[concept_column]), category, language, forms[0], variants))
    return rows


def _wide_rows(frame: pd.DataFrame, columns: dict[str, str], path: Path) -> list[tuple]:
    language_columns = {code: column for column in frame.columns
                        if (code := _language_code(str(column))) is not None}
    if len(language_columns) < 2:
        raise PhasescopeError(f"{path}: expected a long table (concept, language, word) or one column per "
                              f"language (en, de, ... or English, German, ...); got columns "
                              f"{', '.join(map(str, frame.columns))}")
    concept_column = _first_present(columns, _CONCEPT_COLUMNS)
    category_column = _first_present(columns, _CATEGORY_COLUMNS)
    rows = []
    for index, record in enumerate(frame.to_dict("records")):
        english = _forms(record[language_columns["en"]]) if "en" in language_columns else []
        concept = str(record[concept_column]) if concept_column else (english[0] if english else f"concept_{index}")
        category = str(record[category_column]) if category_column else "wlt"
        for code, column in language_columns.items():
            forms = _forms(record[column])
            if forms:
                rows.append((concept, category, code, forms[0], forms))
    return rows


def load_muse_lexicon(directory: Path | str, languages: Iterable[str] | None = None, pivot: str = "en") -> Lexicon:
    """MUSE bilingual dictionaries (``en-de.txt``: one ``source target`` pair per line) as a lexicon.

    A concept is a word of the pivot language; its words in language XX are the targets listed
    for it in ``{pivot}-XX.txt`` (the first one is canonical, all are variants). Only files whose
    source is the pivot are read; a pivot word absent from some dictionary has no word there
    (see :meth:`Lexicon.complete_concepts`).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PhasescopeError(f"MUSE dictionary folder {directory} does not exist")
    wanted = check_language_codes(list(languages), "--languages") if languages is not None else None
    files = sorted(directory.glob(f"{pivot}-*.txt"))
    if wanted is not None:
        files = [file for file in files if file.stem.split("-", 1)[1] in wanted]
    if not files:
        raise PhasescopeError(f"{directory}: no MUSE dictionary files named {pivot}-XX.txt"
                              + (f" for languages {', '.join(wanted)}" if wanted else ""))
    targets: dict[str, dict[str, list[str]]] = {}
    for file in files:
        target_language = file.stem.split("-", 1)[1]
        if target_language not in LANGUAGES:
            continue
        for number, line in enumerate(read_text_file(file).splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise PhasescopeError(f"{file}:{number}: expected 'source target' (two words), got {line!r}")
            source, target = parts
            targets.setdefault(target_language, {}).setdefault(source, []).append(target)
    if not targets:
        raise PhasescopeError(f"{directory}: no dictionary of a supported language ({', '.join(LANGUAGES)})")
    rows = []
    sources = list(dict.fromkeys(source for by_source in targets.values() for source in by_source))
    for source in sources:
        if wanted is None or pivot in wanted:
            rows.append((source, "muse", pivot, source, [source]))
        for language, by_source in targets.items():
            if source in by_source:
                forms = list(dict.fromkeys(by_source[source]))
                rows.append((source, "muse", language, forms[0], forms))
    return Lexicon(pd.DataFrame(rows, columns=["concept", "category", "language", "word", "variants"]))


def build_lexicon(languages: Iterable[str] | None = None, wlt: Path | str | None = None,
                  muse: Path | str | None = None) -> Lexicon:
    """The lexicon of ``phasescope lexicon build``: from the given files, else the built-in CLDR one.

    Args:
        languages: ISO codes to keep (default: the nine built-in languages for CLDR, every
            language found in the files otherwise).
        wlt: a word-level translation Parquet file (:func:`load_wlt_lexicon`).
        muse: a folder of MUSE dictionaries (:func:`load_muse_lexicon`); with ``wlt`` too, a
            (concept, language) in both keeps the WLT word.
    """
    languages = list(languages) if languages is not None else None
    sources = []
    if wlt is not None:
        sources.append(load_wlt_lexicon(wlt, languages))
    if muse is not None:
        sources.append(load_muse_lexicon(muse, languages))
    if not sources:
        sources.append(build_cldr_lexicon(languages if languages is not None else BUILTIN_LANGUAGES))
    return combine_lexicons(sources)


def combine_lexicons(lexicons: Iterable[Lexicon]) -> Lexicon:
    """One lexicon from several; a (concept, language) present in two keeps the first one's row."""
    frames = [lexicon.frame for lexicon in lexicons]
    if not frames:
        raise PhasescopeError("combine_lexicons: expected at least one lexicon")
    frame = pd.concat(frames, ignore_index=True).drop_duplicates(["concept", "language"], keep="first")
    return Lexicon(frame.reset_index(drop=True))


def lexicon_summary(lexicon: Lexicon) -> pd.DataFrame:
    """Concepts per category (rows) and language (columns), plus ``complete`` (in every language)."""
    frame = lexicon.frame
    table = frame.pivot_table(index="category", columns="language", values="concept", aggfunc="nunique",
                              fill_value=0)
    table = table.reindex(columns=lexicon.languages)
    complete = set(lexicon.complete_concepts())
    categories = frame.drop_duplicates("concept").set_index("concept")["category"]
    table["complete"] = [sum(1 for c in complete if categories[c] == category) for category in table.index]
    table.loc["total"] = table.sum()
    return table.astype(int)
