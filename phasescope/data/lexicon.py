"""The concept lexicon: one word (and its valid variants) per concept and language.

It is shared by the controlled corpus (which words appear, and in which bilingual signals) and the
word-level translation measures (which words are prompted and which answers count as valid). One
row per (concept, language)::

    concept   category   language  word     variants
    dog_face  animal     de        Hund     [Hund, Hündchen]

``variants`` always contains ``word`` first. A lexicon is stored as one Parquet file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from phasescope.errors import PhasescopeError
from phasescope.run.atomic import atomic_write_bytes

LEXICON_SCHEMA = pa.schema([
    pa.field("concept", pa.string(), nullable=False),  # stable id shared across languages
    pa.field("category", pa.string(), nullable=False),  # e.g. animal, food, month, weekday, territory
    pa.field("language", pa.string(), nullable=False),  # ISO 639-1 code
    pa.field("word", pa.string(), nullable=False),  # the canonical form
    pa.field("variants", pa.list_(pa.string()), nullable=False),  # valid forms, ``word`` first
])
COLUMNS = tuple(LEXICON_SCHEMA.names)
REQUIRED = ("concept", "language", "word")  # category and variants are optional in a user's table
DEFAULT_CATEGORY = "concept"


class Lexicon:
    """A validated table of (concept, category, language, word, variants) rows.

    Build it from a DataFrame (or with the builders in :mod:`phasescope.data.lexicon_sources`),
    read it with :meth:`load`, write it with :meth:`save`.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = _validated(frame)
        self._index = {(row.concept, row.language): row for row in self.frame.itertuples(index=False)}

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return f"Lexicon({len(self.concepts)} concepts, languages {', '.join(self.languages)})"

    @property
    def languages(self) -> list[str]:
        """Language codes in first-seen order."""
        return list(dict.fromkeys(self.frame["language"]))

    @property
    def concepts(self) -> list[str]:
        """Concept ids in first-seen order."""
        return list(dict.fromkeys(self.frame["concept"]))

    def category(self, concept: str) -> str:
        """The category of a concept."""
        rows = self.frame[self.frame["concept"] == concept]
        if rows.empty:
            raise PhasescopeError(f"concept {concept!r} is not in the lexicon")
        return str(rows["category"].iloc[0])

    def word(self, concept: str, language: str) -> str:
        """The canonical word of ``concept`` in ``language``."""
        return self._row(concept, language).word

    def variants(self, concept: str, language: str) -> list[str]:
        """Every valid form of ``concept`` in ``language``, the canonical word first."""
        return list(self._row(concept, language).variants)

    def has(self, concept: str, language: str) -> bool:
        """Whether the lexicon has ``concept`` in ``language``."""
        return (concept, language) in self._index

    def complete_concepts(self, languages: Iterable[str] | None = None) -> list[str]:
        """Concepts that have a word in every one of ``languages`` (default: all of the lexicon's)."""
        wanted = list(languages) if languages is not None else self.languages
        missing = [code for code in wanted if code not in self.languages]
        if missing:
            raise PhasescopeError(f"the lexicon has no words in language(s) {', '.join(missing)}; "
                                  f"it has {', '.join(self.languages)}")
        return [c for c in self.concepts if all((c, code) in self._index for code in wanted)]

    def restrict(self, languages: Iterable[str] | None = None, concepts: Iterable[str] | None = None) -> Lexicon:
        """The sub-lexicon of these languages and concepts (in the order given)."""
        frame = self.frame
        if languages is not None:
            languages = list(languages)
            missing = [code for code in languages if code not in self.languages]
            if missing:
                raise PhasescopeError(f"the lexicon has no words in language(s) {', '.join(missing)}; "
                                      f"it has {', '.join(self.languages)}")
            frame = frame[frame["language"].isin(languages)]
        if concepts is not None:
            concepts = list(concepts)
            unknown = sorted(set(concepts) - set(self.concepts))
            if unknown:
                raise PhasescopeError(f"concept(s) not in the lexicon: {', '.join(unknown[:5])}")
            order = {concept: i for i, concept in enumerate(concepts)}
            frame = frame[frame["concept"].isin(order)]
            frame = frame.iloc[sorted(range(len(frame)), key=lambda i: order[frame["concept"].iloc[i]])]
        return Lexicon(frame.reset_index(drop=True))

    def save(self, path: Path | str) -> Path:
        """Write the lexicon as one Parquet file, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(self.frame, schema=LEXICON_SCHEMA, preserve_index=False)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
        return path

    @classmethod
    def load(cls, path: Path | str) -> Lexicon:
        """Read a lexicon: a Parquet file written by :meth:`save`, or a user's own table (Parquet, CSV or
        TSV) with at least the columns concept, language and word (category and variants optional;
        in a CSV, variants separated by ``|``)."""
        path = Path(path)
        if not path.is_file():
            raise PhasescopeError(f"lexicon file {path} does not exist (build one with `phasescope lexicon build`)")
        if path.suffix in (".csv", ".tsv"):
            try:
                frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
            except (pd.errors.ParserError, UnicodeDecodeError) as error:
                raise PhasescopeError(f"{path}: not a readable {path.suffix[1:].upper()} table "
                                      f"({' '.join(str(error).split())})") from None
            if "variants" in frame.columns:
                frame["variants"] = [[v for v in str(cell).split("|") if v.strip()] for cell in frame["variants"]]
            return cls(_named(frame, path))
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as error:
            raise PhasescopeError(f"{path}: not a lexicon Parquet file ({' '.join(str(error).split())})") from None
        return cls(_named(table.to_pandas(), path))

    def _row(self, concept: str, language: str):
        row = self._index.get((concept, language))
        if row is None:
            raise PhasescopeError(f"the lexicon has no word for concept {concept!r} in language {language!r}")
        return row


def _named(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``frame`` with the columns a lexicon needs, or an error naming the file and what it lacks."""
    missing = [name for name in REQUIRED if name not in frame.columns]
    if missing:
        raise PhasescopeError(f"{path}: lexicon is missing column(s) {', '.join(missing)}; expected at least "
                              f"{', '.join(REQUIRED)} (category and variants are optional)")
    return frame


def is_lexicon_table(frame: pd.DataFrame) -> bool:
    """Whether a DataFrame has the lexicon's required columns (and so is a lexicon, not WLT pairs)."""
    return all(name in frame.columns for name in REQUIRED)


def _validated(frame: pd.DataFrame) -> pd.DataFrame:
    """Checks columns, types and uniqueness; fills an absent category (``concept``) and variants (the
    word alone); puts ``word`` first in ``variants`` without duplicates."""
    if not isinstance(frame, pd.DataFrame):
        raise PhasescopeError(f"a lexicon is built from a pandas DataFrame, got {type(frame).__name__}")
    missing = [name for name in REQUIRED if name not in frame.columns]
    if missing:
        raise PhasescopeError(f"lexicon rows are missing column(s) {', '.join(missing)}; expected at least "
                              f"{', '.join(REQUIRED)} (category and variants are optional)")
    frame = frame.copy()
    if "category" not in frame.columns:
        frame["category"] = DEFAULT_CATEGORY
    if "variants" not in frame.columns:
        frame["variants"] = [[] for _ in range(len(frame))]
    frame = frame[list(COLUMNS)].copy()
    for name in ("concept", "category", "language", "word"):
        bad = [value for value in frame[name] if not isinstance(value, str) or not value.strip()]
        if bad:
            raise PhasescopeError(f"lexicon column {name!r}: expected non-empty strings, got {bad[0]!r}")
    frame["variants"] = [_variants(word, variants) for word, variants in zip(frame["word"], frame["variants"])]
    duplicated = frame.duplicated(["concept", "language"])
    if duplicated.any():
        row = frame[duplicated].iloc[0]
        raise PhasescopeError(f"lexicon has two rows for concept {row.concept!r} in language {row.language!r}")
    return frame.reset_index(drop=True)


def _variants(word: str, variants) -> list[str]:
    if variants is None:
        variants = []
    if isinstance(variants, str):
        variants = [variants]
    forms = [word, *[str(v) for v in list(variants)]]
    return [form for form in dict.fromkeys(form.strip() for form in forms) if form]
