"""Languages of study B: ISO codes, endonyms (the names prompts use) and scripts.

The built-in setting has nine languages in four scripts (DESIGN.md); real runs take any language
list, and a language outside this table needs only its endonym to be prompted.
"""

from __future__ import annotations

from dataclasses import dataclass

from phasescope.errors import PhasescopeError


@dataclass(frozen=True)
class Language:
    """One language: ISO 639-1 code, its own name for itself (endonym), English name and script."""

    code: str
    endonym: str
    english_name: str
    script: str  # "Latin", "Cyrillic", "Arabic" or "Han/Kana"


LANGUAGES: dict[str, Language] = {
    language.code: language
    for language in (
        Language("en", "English", "English", "Latin"),
        Language("de", "Deutsch", "German", "Latin"),
        Language("fr", "Français", "French", "Latin"),
        Language("es", "Español", "Spanish", "Latin"),
        Language("tr", "Türkçe", "Turkish", "Latin"),
        Language("ru", "Русский", "Russian", "Cyrillic"),
        Language("ar", "العربية", "Arabic", "Arabic"),
        Language("zh", "中文", "Chinese", "Han/Kana"),
        Language("ja", "日本語", "Japanese", "Han/Kana"),
    )
}
BUILTIN_LANGUAGES: tuple[str, ...] = tuple(LANGUAGES)  # en, de, fr, es, tr, ru, ar, zh, ja
SPACELESS_LANGUAGES = ("zh", "ja")  # written without spaces between words (sentences and glosses joined so)
# the characters of the scripts written without spaces (kana, CJK ideographs and their extensions), as the body
# of a regular-expression character class: one of them is a word-sized unit of Chinese and Japanese text
HAN_OR_KANA = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"


def get_language(code: str) -> Language:
    """The :class:`Language` of an ISO code; an unknown code names the supported ones."""
    if code not in LANGUAGES:
        raise PhasescopeError(f"unknown language code {code!r}; supported: {', '.join(LANGUAGES)}")
    return LANGUAGES[code]


def check_language_codes(codes: list[str] | tuple[str, ...], what: str = "languages") -> list[str]:
    """Validate a list of codes (known, no duplicates, not empty) and return it as a list; errors
    start with ``what:`` (nothing when ``what`` is empty)."""
    codes = list(codes)
    prefix = f"{what}: " if what else ""
    if not codes:
        raise PhasescopeError(f"{prefix}expected at least one language code, got none")
    unknown = [code for code in codes if code not in LANGUAGES]
    if unknown:
        raise PhasescopeError(f"{prefix}unknown language code(s) {', '.join(map(repr, unknown))}; "
                              f"supported: {', '.join(LANGUAGES)}")
    duplicates = sorted({code for code in codes if codes.count(code) > 1})
    if duplicates:
        raise PhasescopeError(f"{prefix}language code(s) listed twice: {', '.join(duplicates)}")
    return codes


def language_codes_field(codes: list[str] | tuple[str, ...]) -> list[str]:
    """:func:`check_language_codes` for a pydantic field validator: a ValueError without a prefix, since
    the config error already names the field."""
    try:
        return check_language_codes(codes, what="")
    except PhasescopeError as error:
        raise ValueError(str(error)) from None


def endonym(code: str) -> str:
    """The language's name for itself, as written in translation prompts (``Deutsch``, ``中文``)."""
    return get_language(code).endonym
