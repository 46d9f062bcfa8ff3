"""Minimal pairs (a grammatical sentence and a minimally different ungrammatical one) per language.

Three sources, one shape: a DataFrame with columns ``language, phenomenon, good, bad`` (plus
provenance columns). A language model "knows" a pair when it gives ``good`` a higher summed token
log-probability than ``bad`` (the scoring lives in the measures layer).

- :func:`load_multiblimp`: MultiBLiMP 1.0 (Jumelet, Weissweiler and Bisazza 2025, arXiv
  2504.02768; the ``jumelet/multiblimp`` dataset): TSV files with the grammatical sentence in
  ``sen``, the ungrammatical one in ``wrong_sen`` and the agreement phenomenon (``SV-#``,
  ``SV-P``, ``SV-G``, ``SP-#``, ...) in ``phenomenon``; one folder per ISO 639-3 language.
- :func:`template_minimal_pairs`: pairs built from the controlled corpus's own templates, so they
  probe exactly the grammar the built-in corpus teaches. Two controlled violations, neither of
  which the corpus ever contains:

  ``word_order``: the concept word trades places with the word before it (or after it, when it
  opens the sentence), punctuation staying in place: en ``Where is dog the?`` style breaks,
  ``На собака картинке.``, ``Resimde köpek bir var.``; in Chinese and Japanese, written without
  spaces, the word trades places with the nearest character before it (a particle or the end of
  a word): ``写真イヌにが写っています。``, ``我在狗找。``. Same words, different order. This
  breaks the grammar the corpus teaches; in languages with free word order a few swapped
  sentences stay acceptable in the wider language (ru ``Вторник сегодня.``), so on real text
  prefer MultiBLiMP.

  ``foreign_word``: the concept word is replaced by the same concept's word in another language
  of a different script, without the parentheses of a gloss: ``Тема дня: dog.`` The corpus
  only ever shows a foreign word inside a gloss, right after the native word.
- :func:`sentence_minimal_pairs`: pairs built from real sentences (the held-out documents of a
  corpus of real text, where MultiBLiMP is not at hand): ``adjacent_swap``, two neighbouring words
  trade places (in Chinese and Japanese, two neighbouring Han or kana characters), the sentence otherwise
  unchanged: the same tokens, in an order a writer of the language did not choose. The swapped
  sentence is ungrammatical far more often than not, not always (a swap of two adjectives or of
  free-order constituents can stay acceptable), so accuracy has a ceiling under 1; what is
  measured is when a model starts to prefer the order people wrote, per language.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from phasescope.data.controlled_corpus import ControlledCorpus
from phasescope.data.languages import HAN_OR_KANA, LANGUAGES, SPACELESS_LANGUAGES
from phasescope.data.templates import TEMPLATES, Template, capitalize_sentence
from phasescope.errors import PhasescopeError

MULTIBLIMP_CODES = {"eng": "en", "deu": "de", "fra": "fr", "spa": "es", "tur": "tr", "rus": "ru", "arb": "ar",
                    "ara": "ar", "cmn": "zh", "zho": "zh", "jpn": "ja"}  # ISO 639-3 -> the codes used here
PHENOMENA = ("word_order", "foreign_word")
SENTENCE_PHENOMENON = "adjacent_swap"
SENTENCE_WORDS = (5, 25)  # words of a sentence kept for a pair (characters 8 to 60 in Chinese and Japanese)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)|(?<=[。！？])|\n+")
_WORD = re.compile(r"^\w+$")
_HAN_OR_KANA = re.compile(f"[{HAN_OR_KANA}]")
_X, _Y = "\ue000", "\ue001"  # private-use placeholders (not alphanumeric): never in a template or a word
_X_WORD, _Y_WORD = "QXSLOTQ", "QYSLOTQ"  # placeholders that regular expressions count as a word
_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)


# ---- MultiBLiMP --------------------------------------------------------------------------------


def load_multiblimp(path: Path | str, languages: list[str] | None = None) -> pd.DataFrame:
    """MultiBLiMP pairs from a TSV file or a folder of them (searched recursively).

    The language is the file's ``lang``/``language`` column if it has one, else the first folder
    name on its path that is a language code (``eng/data.tsv``); ISO 639-3 codes of the nine
    built-in languages become their two-letter codes (``arb`` -> ``ar``), others stay as they are.

    Args:
        path: a ``.tsv`` file or a folder.
        languages: keep only these languages (two-letter codes for the built-in ones).

    Returns:
        Columns ``language, phenomenon, good, bad, source`` (the file).
    """
    path = Path(path)
    if not path.exists():
        raise PhasescopeError(f"MultiBLiMP path {path} does not exist (expected a .tsv file or a folder of them)")
    files = [path] if path.is_file() else sorted(path.rglob("*.tsv"))
    if not files:
        raise PhasescopeError(f"{path}: no .tsv files (MultiBLiMP has one data.tsv per language folder)")
    frames = []
    for file in files:
        try:
            table = pd.read_csv(file, sep="\t", dtype=str, keep_default_na=False, quoting=3)
        except (pd.errors.ParserError, UnicodeDecodeError) as error:
            raise PhasescopeError(f"{file}: not a tab-separated file ({' '.join(str(error).split())[:120]})") from None
        missing = [column for column in ("sen", "wrong_sen") if column not in table.columns]
        if missing:
            raise PhasescopeError(f"{file}: missing MultiBLiMP column(s) {', '.join(missing)}; it has "
                                  f"{', '.join(map(str, table.columns))}")
        language_column = next((c for c in ("lang", "language") if c in table.columns), None)
        if language_column is not None:
            codes = table[language_column].map(_language_code)
        else:
            codes = pd.Series([_language_of_path(file, path)] * len(table), dtype=object)
        phenomenon = table["phenomenon"] if "phenomenon" in table.columns else pd.Series(["unknown"] * len(table))
        frames.append(pd.DataFrame({"language": codes.to_numpy(), "phenomenon": phenomenon.to_numpy(),
                                    "good": table["sen"].to_numpy(), "bad": table["wrong_sen"].to_numpy(),
                                    "source": str(file)}))
    pairs = pd.concat(frames, ignore_index=True)
    if languages is not None:
        pairs = pairs[pairs["language"].isin(languages)]
        if pairs.empty:
            raise PhasescopeError(f"{path}: no MultiBLiMP pairs in language(s) {', '.join(languages)}")
    return pairs.reset_index(drop=True)


def _language_code(code: str) -> str:
    code = str(code).strip()
    return MULTIBLIMP_CODES.get(code.lower(), code)


def _language_of_path(file: Path, root: Path) -> str:
    folders = file.relative_to(root).parts[:-1] if file != root else (file.parent.name,)
    for part in reversed(folders):
        if part.lower() in MULTIBLIMP_CODES or part in LANGUAGES or re.fullmatch(r"[a-z]{3}", part):
            return _language_code(part)
    raise PhasescopeError(f"{file}: cannot tell the language (no lang column and no language folder on its path)")


# ---- pairs from the controlled corpus's templates ----------------------------------------------


def template_minimal_pairs(corpus: ControlledCorpus, pairs_per_template: int = 4, seed: int = 0,
                           phenomena: tuple[str, ...] = PHENOMENA) -> pd.DataFrame:
    """Minimal pairs from every template in every corpus language (see the module docstring).

    Args:
        corpus: its languages, concepts and words are used (canonical words, no glosses).
        pairs_per_template: concepts drawn (seeded) per template, language and phenomenon.
        seed: the draw of concepts and of the foreign language.
        phenomena: any of :data:`PHENOMENA`.

    Returns:
        Columns ``language, phenomenon, good, bad, template, concept``; ``good`` is a sentence the
        corpus generates, ``bad`` one it never does.
    """
    unknown = sorted(set(phenomena) - set(PHENOMENA))
    if unknown:
        raise PhasescopeError(f"unknown minimal-pair phenomena {unknown}; expected some of {', '.join(PHENOMENA)}")
    rng = np.random.default_rng(seed)
    by_category: dict[str, list[str]] = {}
    for concept in corpus.concepts:
        by_category.setdefault(corpus.category[concept], []).append(concept)
    rows = []
    for language in corpus.languages:
        for template in TEMPLATES:
            fitting = [c for category, concepts in by_category.items() if template.fits(category) for c in concepts]
            if not fitting:
                continue
            for phenomenon in phenomena:
                for index in rng.permutation(len(fitting))[:pairs_per_template]:
                    concept = fitting[int(index)]
                    x = corpus.lexicon.word(concept, language)
                    y = _second_word(corpus, template, concept, language, by_category)
                    good = _render(template.text[language], language, x, y)
                    if phenomenon == "word_order":
                        bad = _render(_swapped_order(template.text[language], language), language, x, y)
                    else:
                        bad = _render(template.text[language], language, _foreign(corpus, concept, language, rng), y)
                    if bad is None or bad == good:
                        continue
                    rows.append((language, phenomenon, good, bad, template.name, concept))
    return pd.DataFrame(rows, columns=["language", "phenomenon", "good", "bad", "template", "concept"])


def _second_word(corpus: ControlledCorpus, template: Template, concept: str, language: str,
                 by_category: dict[str, list[str]]) -> str | None:
    if template.second is None:
        return None
    same = by_category[corpus.category[concept]]
    other = same[(same.index(concept) + 1) % len(same)]  # "next" frames need the next; others accept any
    return corpus.lexicon.word(other, language)


def _render(pattern: str | None, language: str, x: str | None, y: str | None) -> str | None:
    if pattern is None or x is None:
        return None
    text = pattern.replace("{X}", _X).replace("{Y}", _Y).replace(_X, x)
    return capitalize_sentence(text.replace(_Y, y) if y is not None else text, language)


def _swapped_order(pattern: str, language: str) -> str | None:
    """The template with ``{X}`` and its neighbouring word (character in zh/ja) swapped."""
    text = pattern.replace("{X}", _X).replace("{Y}", _Y)
    if language in SPACELESS_LANGUAGES:
        slot = text.index(_X)
        before = [i for i in range(slot) if text[i].isalnum()]
        after = [i for i in range(slot + 1, len(text)) if text[i].isalnum()]
        if before:
            i = before[-1]
            text = text[:i] + _X + text[i + 1:slot] + text[i] + text[slot + 1:]
        elif after:
            i = after[0]
            text = text[:slot] + text[i] + text[slot + 1:i] + _X + text[i + 1:]
        else:
            return None
        return text.replace(_X, "{X}").replace(_Y, "{Y}")
    text = text.replace(_X, _X_WORD).replace(_Y, _Y_WORD)  # placeholders that count as word characters
    tokens = text.split(" ")
    parts = [list(_CORE.match(token).groups()) for token in tokens]
    slot = next(i for i, token in enumerate(tokens) if _X_WORD in token)
    neighbours = [i for i in range(slot - 1, -1, -1) if parts[i][1]] or \
        [i for i in range(slot + 1, len(parts)) if parts[i][1] and _Y_WORD not in parts[i][1]]
    if not neighbours:
        return None
    other = neighbours[0]
    moved = parts[other][1]
    if other == 0 and moved[:1].isupper() and language != "de":  # no sentence-initial capital mid-sentence
        moved = moved[0].lower() + moved[1:]
    parts[other][1], parts[slot][1] = parts[slot][1], moved
    return " ".join("".join(part) for part in parts).replace(_X_WORD, "{X}").replace(_Y_WORD, "{Y}")


def _foreign(corpus: ControlledCorpus, concept: str, language: str, rng: np.random.Generator) -> str | None:
    """The concept's word in a corpus language of another script (None when there is none)."""
    script = LANGUAGES[language].script
    others = [code for code in corpus.languages if LANGUAGES[code].script != script]
    if not others:
        return None
    return corpus.lexicon.word(concept, others[int(rng.integers(len(others)))])


# ---- pairs from real sentences -------------------------------------------------------------------


def split_sentences(text: str) -> list[str]:
    """The sentences of a text: split after ``.``, ``!``, ``?`` followed by space, after ``。！？``, and at
    line breaks; stripped, empty ones dropped."""
    return [sentence.strip() for sentence in _SENTENCE_END.split(text) if sentence and sentence.strip()]


def is_prose_sentence(sentence: str, language: str) -> bool:
    """A sentence worth a pair: it ends like a sentence (``.!?。！？``), opens with a capital letter (in the
    languages written with spaces), has 5 to 25 words (8 to 60 characters in Chinese and Japanese) and is
    mostly letters (not a command line, a table row or a list of options)."""
    if not sentence.endswith((".", "!", "?", "。", "！", "？")):
        return False
    if language not in SPACELESS_LANGUAGES and not sentence[0].isupper():
        return False
    letters = sum(character.isalpha() or character.isspace() for character in sentence)
    if letters < 0.85 * len(sentence):
        return False
    low, high = SENTENCE_WORDS
    if language in SPACELESS_LANGUAGES:
        return 8 <= len(sentence) <= 60
    return low <= len(sentence.split()) <= high


def sentence_minimal_pairs(documents: dict[str, list[str]], pairs_per_language: int | None = 100, seed: int = 0
                           ) -> pd.DataFrame:
    """``adjacent_swap`` pairs from the prose sentences of ``documents`` (language -> texts), see the module
    docstring: per language, up to ``pairs_per_language`` distinct sentences drawn with ``seed``, each with
    two neighbouring words (characters in Chinese and Japanese; letters only, never punctuation, never the
    capitalized first word) swapped at a drawn position where the swap changes the sentence.

    Returns:
        Columns ``language, phenomenon, good, bad, source`` (``heldout``); a language without prose
        sentences has no rows.
    """
    rows = []
    for language, texts in documents.items():
        rng = np.random.default_rng([seed, *language.encode()])  # a language's pairs do not depend on the others
        sentences = list(dict.fromkeys(sentence for text in texts for sentence in split_sentences(text)
                                       if is_prose_sentence(sentence, language)))
        made = 0
        for index in rng.permutation(len(sentences)):
            if made == pairs_per_language:
                break
            bad = _swap_neighbours(sentences[index], language, rng)
            if bad is not None:
                made += 1
                rows.append({"language": language, "phenomenon": SENTENCE_PHENOMENON, "good": sentences[index],
                             "bad": bad, "source": "heldout"})
    return pd.DataFrame(rows, columns=["language", "phenomenon", "good", "bad", "source"])


def _swap_neighbours(sentence: str, language: str, rng: np.random.Generator) -> str | None:
    if language in SPACELESS_LANGUAGES:
        units = list(sentence)
        # Han or kana, not the letters of a Latin word inside the sentence
        places = [i for i in range(len(units) - 1)
                  if _HAN_OR_KANA.match(units[i]) and _HAN_OR_KANA.match(units[i + 1]) and units[i] != units[i + 1]]
        joiner = ""
    else:
        units = sentence.split(" ")
        # not the first word: its capital letter would give the swap away by case alone
        places = [i for i in range(1, len(units) - 1) if _WORD.match(units[i]) and _WORD.match(units[i + 1])
                  and units[i].lower() != units[i + 1].lower()]
        joiner = " "
    if not places:
        return None
    i = int(rng.choice(places))
    units[i], units[i + 1] = units[i + 1], units[i]
    return joiner.join(units)
