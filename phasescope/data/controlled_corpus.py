"""The built-in controlled corpus: templated documents in nine languages with dosed bilingual signals.

Every document is generated from the concept lexicon (:mod:`phasescope.data.lexicon_sources`) and
the template bank (:mod:`phasescope.data.templates`), deterministically: document ``i`` of
language ``L`` for a seed is a pure function of ``(seed, split, L, i)``, so reading from document
``n`` on costs nothing and resumes exactly. Three kinds of documents:

- monolingual: a few sentences in ``L`` about concepts of the lexicon; a concept mentioned earlier
  is mentioned again with probability ``repetition_rate`` per sentence (what makes in-context
  copying pay off), and each mention of a non-held-out concept is glossed with its translation
  into another language, ``Hund (dog)``, with probability ``code_switch_rate``;
- parallel: a monolingual document followed, after a blank line, by the same document rendered
  in another language (the frames are shared across languages);
- glossary: a bilingual word list, like the dictionaries found in web text, one line per concept
  in exactly the surface form of the word-level translation prompt of DESIGN.md::

      English: "dog" - Deutsch: "Hund"

  where a share of the lines (``untranslated_rate``) leaves a word as it is, as web text does with
  rare words, names and code-switched words: ``Deutsch: "Zwiebel" - English: "Zwiebel"``, the word
  taken from a lexicon concept that the corpus does not otherwise use.

A seeded share of the concepts (``heldout_concept_share``, stratified by category) never appears
in any bilingual signal (glosses, parallel documents, glossaries), only in monolingual sentences:
translating them tests generalization rather than memorized pairs (:attr:`ControlledCorpus.heldout_concepts`).
``heldout_language_pairs`` likewise withholds every bilingual signal between two languages.

Why these defaults. The target is study B's order of events in a tiny Llama (1-2M parameters,
2.7M tokens, a few minutes of CPU): the few-shot WLT prompt is first answered by copying the
source word, and only later by its translation. Two signals decide that order, and the defaults
dose them; each finding below is one run of the demo's model (``configs/multilingual-tiny.yaml``,
2 CPU cores; the variants changed one or two knobs):

- Copying as such comes from untranslated glossary lines (``untranslated_rate``: 0.6 of the
  lines). Their ~380 words per language are too many to memorize, so the model learns to attend
  from the target slot to the source word and copy it, for any word: copy top-1 on pairs without
  shared first tokens leaves its start at 0.56M tokens and reaches 0.19 at 0.87M, while
  translation is at 0.05-0.10; translation starts at 0.82M and rises to 0.80 at the end, and
  concepts held out of every bilingual signal stay copied (0.86 top-1). Without these lines the
  prompt was never answered by copying (top-1 0.00 throughout); with pseudo-names in their place
  (``name_rate`` 0.3-0.5: a small set of syllable tokens) copy top-1 stayed under 0.04 before
  translation, and with the corpus's own words left untranslated (learned as pairs) it rose only
  with translation.
- Translation of a word pair comes from glossary lines that translate (the other 0.4), glossed
  mentions and parallel documents. A gloss sits next to its word (``Hund (dog)``), so it teaches
  the pair without any attention to a distant source word: at ``code_switch_rate`` 0.3 the pairs
  were mostly known when that attention formed, and translation followed copying within 0.15M
  tokens. At 0.05 the pairs are learned mostly through the glossary lines, after the attention.

The binding constraint on translation is how often each word is seen in a bilingual signal, so
the corpus has few concepts: 3 per category (``concepts_per_category``), 48 concepts, 38 seen, 10
held out (``heldout_concept_share`` 0.2) to measure generalization; raise it, and the token
budget, for larger models. Repetition within a document (0.8 of sentences mention an earlier
concept again) makes in-context copying pay off in monolingual text too. Documents are short
(4-10 sentences) so that sequences of 128 tokens hold several documents and their language switches.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from phasescope.data.languages import BUILTIN_LANGUAGES, endonym, language_codes_field
from phasescope.data.lexicon import Lexicon
from phasescope.data.templates import TEMPLATES, Template, gloss, join_sentences, render
from phasescope.errors import PhasescopeError
from phasescope.run.config import StrictModel

SPLIT_IDS = {"train": 0, "heldout": 1}
DocumentKind = Literal["monolingual", "parallel", "glossary"]


class ControlledCorpusConfig(StrictModel):
    """Knobs of the controlled corpus; every rate is a probability in [0, 1]."""

    source: Literal["controlled"] = "controlled"
    languages: list[str] = Field(default_factory=lambda: list(BUILTIN_LANGUAGES))
    # relative amount of text per language, reported as size_hint (temperature sampling reads it);
    # None: equal
    language_weights: dict[str, float] | None = None
    lexicon: Path | None = None  # a lexicon Parquet file; None: the built-in CLDR lexicon
    categories: list[str] | None = None  # lexicon categories to use; None: all
    # concepts drawn (seeded) per category; None: every concept. 3 gives ~48 concepts, few enough
    # for a tiny model to memorize their translations in ~2M tokens (see the module docstring)
    concepts_per_category: int | None = Field(3, ge=2)
    seed: int = 0  # concept selection, held-out concepts and every document
    sentences_per_document: tuple[int, int] = (4, 10)  # (min, max) sentences of a monolingual document
    # a sentence mentions an earlier concept of the document again: in-context copying pays off
    repetition_rate: float = Field(0.8, ge=0, le=1)
    # a mention is glossed with its translation, "Hund (dog)". Kept low: a gloss next to its word
    # teaches the word pair without any attention to the prompt's source word, and with 0.3 the
    # pairs were known before that attention formed, so copying and translation appeared together
    code_switch_rate: float = Field(0.05, ge=0, le=1)
    parallel_rate: float = Field(0.1, ge=0, le=1)  # a document is followed by its translation into another language
    # a document is a bilingual word list in the prompt's form, English: "dog" - Deutsch: "Hund"
    glossary_rate: float = Field(0.5, ge=0, le=1)
    glossary_lines: tuple[int, int] = (6, 12)  # (min, max) lines of a glossary document
    # a glossary line lists a name instead of a concept: a pseudo-word written the same in both
    # languages, as names, numbers and many loanwords are in web text, so copying is right there
    name_rate: float = Field(0.0, ge=0, le=1)
    # a glossary line leaves a word untranslated, Deutsch: "Zwiebel" - English: "Zwiebel", as rare
    # words, names and code-switched words are in web text. The word comes from a lexicon concept
    # outside the corpus's concepts: thousands of real words in every script, too many to memorize,
    # so what the line rewards is copying as such (which then applies to every word of the prompt)
    untranslated_rate: float = Field(0.6, ge=0, le=1)
    # share of concepts (per category, seeded) that never appear in a bilingual signal
    heldout_concept_share: float = Field(0.2, ge=0, lt=1)
    heldout_language_pairs: list[str] = Field(default_factory=list)  # "de-fr": no bilingual signal between them
    documents_per_language: int | None = Field(None, ge=1)  # train documents per language; None: unlimited
    heldout_documents_per_language: int = Field(2000, ge=1)  # held-out documents (monolingual, no glosses)

    @field_validator("sentences_per_document", "glossary_lines")
    @classmethod
    def _range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= value[0] <= value[1]:
            raise ValueError(f"expected (min, max) with 1 <= min <= max, got {tuple(value)}")
        return value

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: list[str]) -> list[str]:
        return language_codes_field(value)

    @model_validator(mode="after")
    def _consistent(self) -> ControlledCorpusConfig:
        if self.glossary_rate + self.parallel_rate > 1:
            raise ValueError(f"glossary_rate + parallel_rate must be <= 1, got "
                             f"{self.glossary_rate} + {self.parallel_rate}")
        if self.language_weights is not None:
            unknown = sorted(set(self.language_weights) - set(self.languages))
            missing = sorted(set(self.languages) - set(self.language_weights))
            if unknown or missing or any(w <= 0 for w in self.language_weights.values()):
                raise ValueError(f"language_weights: expected a positive weight for each of {', '.join(self.languages)}"
                                 f" (unknown: {unknown or 'none'}, missing: {missing or 'none'})")
        for pair in self.heldout_language_pairs:
            parts = pair.split("-")
            if len(parts) != 2 or any(part not in self.languages for part in parts) or parts[0] == parts[1]:
                raise ValueError(f"heldout_language_pairs: expected 'xx-yy' with two of {', '.join(self.languages)}, "
                                 f"got {pair!r}")
        return self


@dataclass(frozen=True)
class Mention:
    """One mention of a concept in a document: its language and, if glossed, the gloss language."""

    concept: str
    language: str
    gloss_language: str | None = None
    bilingual: bool = False  # inside a parallel document or a glossary line
    sentence: int = 0  # the sentence (or glossary line) it is in
    slot: str = "X"  # "X", or "Y" for a template's second concept


@dataclass
class GeneratedDocument:
    """A document with what generated it (for tests and analyses); ``text`` is what training sees."""

    language: str
    index: int
    split: str
    kind: DocumentKind
    text: str
    partner: str | None = None  # the other language of a parallel or glossary document
    mentions: list[Mention] = field(default_factory=list)


@functools.lru_cache(maxsize=4)
def _builtin_lexicon(languages: tuple[str, ...]) -> Lexicon:
    from phasescope.data.lexicon_sources import build_cldr_lexicon

    return build_cldr_lexicon(languages)


class ControlledCorpus:
    """A :class:`~phasescope.data.corpora.CorpusSource` of templated documents (see the module docstring)."""

    def __init__(self, config: ControlledCorpusConfig | None = None, lexicon: Lexicon | None = None) -> None:
        self.config = config = config or ControlledCorpusConfig()
        self.languages = list(config.languages)
        if lexicon is None:
            lexicon = Lexicon.load(config.lexicon) if config.lexicon else _builtin_lexicon(tuple(self.languages))
        complete = lexicon.complete_concepts(self.languages)
        lexicon = lexicon.restrict(self.languages, complete)
        category_of = dict(zip(lexicon.frame["concept"], lexicon.frame["category"]))
        self.concepts = _select_concepts(lexicon.concepts, category_of, config)
        if len(self.concepts) < 2:
            raise PhasescopeError(f"the lexicon has {len(self.concepts)} concept(s) with a word in every one of "
                                  f"{', '.join(self.languages)}; the controlled corpus needs at least 2")
        self.lexicon = lexicon.restrict(self.languages, self.concepts)
        # words for untranslated lines, only when the knob is on (the overlap check reads every word pair)
        self._untranslated = (_untranslated_words(lexicon, complete, self.concepts, self.languages)
                              if config.untranslated_rate else {})
        if config.untranslated_rate and not all(self._untranslated.values()):
            raise PhasescopeError("untranslated_rate needs lexicon concepts outside the corpus's own (lower "
                                  "concepts_per_category or pass a larger lexicon); every concept is in use")
        self.category = {concept: category_of[concept] for concept in self.concepts}
        self.heldout_concepts = _heldout_concepts(self.concepts, self.category, config)
        held = set(self.heldout_concepts)
        self.seen_concepts = [concept for concept in self.concepts if concept not in held]
        self._words = {(c, lang): self.lexicon.word(c, lang) for c in self.concepts for lang in self.languages}
        self._by_category: dict[str, list[str]] = {}
        for concept in self.concepts:
            self._by_category.setdefault(self.category[concept], []).append(concept)
        # "next" frames (January -> February) only when the corpus has the category's whole cycle
        whole = {category: sum(value == category for value in category_of.values()) for category in self._by_category}
        self._templates = {category: [t for t in TEMPLATES if t.fits(category)
                                      and (t.second != "next" or len(members) == whole[category])]
                           for category, members in self._by_category.items()}
        blocked = {frozenset(pair.split("-")) for pair in config.heldout_language_pairs}
        self._partners = {lang: [other for other in self.languages
                                 if other != lang and frozenset((lang, other)) not in blocked]
                          for lang in self.languages}
        weights = config.language_weights or {lang: 1.0 for lang in self.languages}
        self._weights = {lang: float(weights[lang]) for lang in self.languages}

    # ---- the CorpusSource interface
    def documents(self, language: str, split: Literal["train", "heldout"] = "train", start: int = 0) -> Iterator[str]:
        """The documents of ``language`` from index ``start`` on (unlimited unless the config caps them)."""
        self._check(language, split)
        limit = self._limit(split)
        index = start
        while limit is None or index < limit:
            yield self.generate(language, index, split).text
            index += 1

    def size_hint(self, language: str) -> float:
        """Documents available, times the language's weight (unlimited corpora: 1e6 nominal documents)."""
        self._check(language, "train")
        return self._weights[language] * float(self.config.documents_per_language or 1_000_000)

    # ---- generation
    def document(self, language: str, index: int, split: Literal["train", "heldout"] = "train") -> str:
        """The text of document ``index`` of ``language``."""
        return self.generate(language, index, split).text

    def generate(self, language: str, index: int, split: Literal["train", "heldout"] = "train") -> GeneratedDocument:
        """Document ``index`` of ``language`` with its kind, partner language and mentions."""
        self._check(language, split)
        rng = np.random.default_rng([self.config.seed, SPLIT_IDS[split], _language_key(language), index])
        config = self.config
        if split == "heldout":  # held-out text is plain monolingual text: per-language loss
            return self._monolingual(rng, language, index, split, self.concepts, code_switch=False)
        draw = rng.random()
        partners = self._partners[language]
        if partners and draw < config.glossary_rate:
            return self._glossary(rng, language, index, split, partners)
        if partners and draw < config.glossary_rate + config.parallel_rate:
            return self._parallel(rng, language, index, split, partners)
        return self._monolingual(rng, language, index, split, self.concepts, code_switch=True)

    document_kinds = ("glossary", "parallel", "code_switched", "monolingual")  # what document_kind returns

    def document_kind(self, language: str, index: int) -> str:
        """The kind of training document ``index`` of ``language``: ``glossary``, ``parallel``,
        ``code_switched`` (monolingual with at least one glossed mention) or ``monolingual``."""
        document = self.generate(language, index, "train")
        if document.kind == "monolingual" and any(m.gloss_language for m in document.mentions):
            return "code_switched"
        return document.kind

    def allows_bilingual(self, first: str, second: str) -> bool:
        """Whether bilingual signals may pair these two languages."""
        return second in self._partners.get(first, [])

    def _plan(self, rng: np.random.Generator, pool: list[str],
              seen_only: bool) -> list[tuple[Template, str, str | None]]:
        """Sentences as (template, concept X, concept Y or None); ``seen_only`` keeps held-out concepts out."""
        low, high = self.config.sentences_per_document
        mentioned: list[str] = []
        plan = []
        for _ in range(int(rng.integers(low, high + 1))):
            if mentioned and rng.random() < self.config.repetition_rate:
                x = mentioned[int(rng.integers(len(mentioned)))]
            else:
                x = pool[int(rng.integers(len(pool)))]
            template, y = self._template_and_second(rng, x, seen_only)
            plan.append((template, x, y))
            mentioned += [c for c in (x, y) if c is not None]
        return plan

    def _template_and_second(self, rng: np.random.Generator, x: str, seen_only: bool) -> tuple[Template, str | None]:
        candidates = self._templates[self.category[x]]
        held = set(self.heldout_concepts) if seen_only else set()
        for _ in range(8):  # a frame whose second concept would be held out is redrawn
            template = candidates[int(rng.integers(len(candidates)))]
            if template.second is None:
                return template, None
            same = self._by_category[self.category[x]]
            if template.second == "next":
                y = same[(same.index(x) + 1) % len(same)]
            else:
                others = [c for c in same if c != x and c not in held]
                y = others[int(rng.integers(len(others)))] if others else None
            if y is not None and y not in held and y != x:
                return template, y
        return next(t for t in candidates if t.second is None), None

    def _render(self, rng: np.random.Generator, plan, language: str, code_switch: bool, bilingual: bool,
                mentions: list[Mention]) -> str:
        sentences = []
        held = set(self.heldout_concepts)
        partners = self._partners[language]
        for number, (template, x, y) in enumerate(plan):
            words = []
            for slot, concept in (("X", x), ("Y", y)):
                if concept is None:
                    words.append(None)
                    continue
                word, gloss_language = self._words[(concept, language)], None
                if (code_switch and partners and concept not in held
                        and rng.random() < self.config.code_switch_rate):
                    gloss_language = partners[int(rng.integers(len(partners)))]
                    word = gloss(word, self._words[(concept, gloss_language)], language)
                mentions.append(Mention(concept, language, gloss_language, bilingual, number, slot))
                words.append(word)
            sentences.append(render(template, language, words[0], words[1]))
        return join_sentences(sentences, language)

    def _monolingual(self, rng, language, index, split, pool, code_switch: bool) -> GeneratedDocument:
        mentions: list[Mention] = []
        text = self._render(rng, self._plan(rng, pool, seen_only=False), language, code_switch, False, mentions)
        return GeneratedDocument(language, index, split, "monolingual", text, None, mentions)

    def _parallel(self, rng, language, index, split, partners) -> GeneratedDocument:
        partner = partners[int(rng.integers(len(partners)))]
        plan = self._plan(rng, self.seen_concepts, seen_only=True)
        mentions: list[Mention] = []
        first = self._render(rng, plan, language, True, True, mentions)
        second = self._render(rng, plan, partner, True, True, mentions)
        return GeneratedDocument(language, index, split, "parallel", f"{first}\n\n{second}", partner, mentions)

    def _glossary(self, rng, language, index, split, partners) -> GeneratedDocument:
        partner = partners[int(rng.integers(len(partners)))]
        low, high = self.config.glossary_lines
        count = min(int(rng.integers(low, high + 1)), len(self.seen_concepts))
        chosen = rng.choice(len(self.seen_concepts), size=count, replace=False)
        source_name, target_name = endonym(language), endonym(partner)
        lines, mentions = [], []
        for number, position in enumerate(chosen):
            if self.config.name_rate and rng.random() < self.config.name_rate:  # no draw when off: same documents
                name = pseudo_name(rng)
                lines.append(f'{source_name}: "{name}" - {target_name}: "{name}"')
                continue
            if self.config.untranslated_rate and rng.random() < self.config.untranslated_rate:  # no draw when off
                pool = self._untranslated[language]
                word = pool[int(rng.integers(len(pool)))]
                lines.append(f'{source_name}: "{word}" - {target_name}: "{word}"')
                continue
            concept = self.seen_concepts[int(position)]
            lines.append(f'{source_name}: "{self._words[(concept, language)]}" - '
                         f'{target_name}: "{self._words[(concept, partner)]}"')
            mentions += [Mention(concept, language, None, True, number), Mention(concept, partner, None, True, number)]
        return GeneratedDocument(language, index, split, "glossary", "\n".join(lines), partner, mentions)

    def _limit(self, split: str) -> int | None:
        return self.config.documents_per_language if split == "train" else self.config.heldout_documents_per_language

    def _check(self, language: str, split: str) -> None:
        if language not in self._weights:
            raise PhasescopeError(f"the controlled corpus has no language {language!r}; "
                                  f"it has {', '.join(self.languages)}")
        if split not in SPLIT_IDS:
            raise PhasescopeError(f"unknown split {split!r}; expected 'train' or 'heldout'")


NAME_ONSETS = ("b", "d", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
NAME_VOWELS = ("a", "e", "i", "o", "u")


def pseudo_name(rng: np.random.Generator) -> str:
    """A capitalized pseudo-word of two or three consonant-vowel syllables (``Moraki``): a name no
    language translates, so that its only continuation in a glossary line is a copy."""
    syllables = int(rng.integers(2, 4))
    onsets = rng.integers(len(NAME_ONSETS), size=syllables)
    vowels = rng.integers(len(NAME_VOWELS), size=syllables)
    return "".join(NAME_ONSETS[o] + NAME_VOWELS[v] for o, v in zip(onsets, vowels)).capitalize()


def _untranslated_words(lexicon: Lexicon, complete: list[str], concepts: list[str],
                        languages: list[str]) -> dict[str, list[str]]:
    """Per language, the words of the lexicon's concepts outside the corpus, for untranslated lines.

    A word that contains a corpus word or is contained in one, in any language and case (``鳄梨``,
    avocado, holds ``梨``, pear), is left out: a held-out concept must not reach a bilingual line even
    as part of another word.
    """
    chosen = set(concepts)
    corpus_words = {lexicon.word(c, lang).casefold() for c in concepts for lang in languages}
    words = {}
    for language in languages:
        candidates = (lexicon.word(c, language) for c in complete if c not in chosen)
        words[language] = [word for word in candidates if not _overlaps(word.casefold(), corpus_words)]
    return words


def _overlaps(word: str, others: set[str]) -> bool:
    """Whether ``word`` contains one of ``others`` or is contained in one."""
    return any(other in word or word in other for other in others)


def _language_key(code: str) -> int:
    """A stable integer per language code (seeds must not depend on the order of the language list)."""
    return int.from_bytes(code.encode("utf-8"), "big")


def _select_concepts(concepts: list[str], category_of: dict[str, str], config: ControlledCorpusConfig) -> list[str]:
    """The corpus's concepts in lexicon order: ``concepts_per_category`` per category, seeded."""
    by_category: dict[str, list[str]] = {}
    for concept in concepts:
        by_category.setdefault(category_of[concept], []).append(concept)
    if config.categories is not None:
        unknown = sorted(set(config.categories) - set(by_category))
        if unknown:
            raise PhasescopeError(f"categories: {', '.join(unknown)} not in the lexicon; it has "
                                  f"{', '.join(sorted(by_category))}")
        by_category = {category: by_category[category] for category in config.categories}
    rng = np.random.default_rng([config.seed, 7])
    chosen: set[str] = set()
    for category in sorted(by_category):
        members = by_category[category]
        cap = config.concepts_per_category
        if cap is None or len(members) <= cap:
            chosen.update(members)
        else:
            chosen.update(members[int(i)] for i in rng.permutation(len(members))[:cap])
    return [concept for concept in concepts if concept in chosen]


def _heldout_concepts(concepts: list[str], category: dict[str, str], config: ControlledCorpusConfig) -> list[str]:
    """``heldout_concept_share`` of the concepts (rounded, seeded), in corpus order.

    Drawn over all concepts, except that every category keeps at least one seen concept.
    """
    rng = np.random.default_rng([config.seed, 11])
    count = int(round(config.heldout_concept_share * len(concepts)))
    seen_left = {name: sum(category[c] == name for c in concepts) for name in set(category.values())}
    held: set[str] = set()
    for index in rng.permutation(len(concepts)):
        if len(held) == count:
            break
        concept = concepts[int(index)]
        if seen_left[category[concept]] > 1:
            held.add(concept)
            seen_left[category[concept]] -= 1
    return [concept for concept in concepts if concept in held]
