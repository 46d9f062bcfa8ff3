"""Multilingual corpus sources behind one interface: documents per language and split, resumable.

Three sources, picked by a config's ``source:`` field (:data:`CorpusConfig`, :func:`build_corpus`):

- ``controlled``: the built-in templated corpus (:mod:`phasescope.data.controlled_corpus`), offline;
- ``local``: a folder per language code, ``root/en/*.txt|*.jsonl|*.parquet``;
- ``huggingface``: Hugging Face datasets in streaming mode, e.g. FineWeb-2's ``deu_Latn`` config.

Held-out documents of a source without a held-out split are a deterministic share of its
documents (:mod:`phasescope.data.heldout`), and ``documents(start=n)`` starts at the n-th *train*
document.

A source may yield empty documents (an empty Parquet cell or dataset row): they keep their index,
so that resuming at an index is exact, and consumers skip them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Literal, Protocol, runtime_checkable

from pydantic import Field, model_validator

from phasescope.data.controlled_corpus import ControlledCorpus, ControlledCorpusConfig
from phasescope.data.heldout import (
    Split,
    heldout_fraction,
    is_heldout_position,
    raw_position_of_train,
    split_positions,
)
from phasescope.data.hf_corpus import HuggingFaceCorpus, HuggingFaceCorpusConfig
from phasescope.data.languages import LANGUAGES, check_language_codes
from phasescope.errors import PhasescopeError
from phasescope.files import read_text_file, text_lines
from phasescope.run.config import StrictModel

LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")


@runtime_checkable
class CorpusSource(Protocol):
    """Documents (plain text) per language and split; ``start`` resumes at a document index."""

    languages: list[str]

    def documents(self, language: str, split: Split = "train", start: int = 0) -> Iterator[str]:
        """The documents of ``language`` in ``split`` from index ``start`` on."""
        ...

    def size_hint(self, language: str) -> float | None:
        """Documents or bytes available in ``language`` (relative sizes for temperature sampling), or None."""
        ...


DEFAULT_DOCUMENT_KIND = "text"  # the kind of a document of a corpus that does not tell kinds apart


def document_kind(corpus: CorpusSource, language: str, index: int) -> str:
    """The kind of training document ``index`` of ``language``, where the corpus tells kinds apart (a
    ``document_kind(language, index)`` method, as the controlled corpus has), else ``text``."""
    kind_of = getattr(corpus, "document_kind", None)
    return kind_of(language, index) if kind_of is not None else DEFAULT_DOCUMENT_KIND


def document_kinds(corpus: CorpusSource) -> tuple[str, ...]:
    """The kinds :func:`document_kind` can give a corpus's documents."""
    return tuple(getattr(corpus, "document_kinds", (DEFAULT_DOCUMENT_KIND,)))


# ---- local files -------------------------------------------------------------------------------


class LocalCorpusConfig(StrictModel):
    """A folder per language code: ``root/en/*.txt|*.jsonl|*.parquet`` (files read in name order)."""

    source: Literal["local"] = "local"
    root: Path
    languages: list[str] | None = None  # None: every language folder under root
    text_field: str = "text"  # the text field of jsonl records and the text column of parquet files
    txt_unit: Literal["file", "line", "paragraph"] = "file"  # one document per .txt file, line, or blank-line block
    heldout_share: float = Field(0.01, ge=0, lt=1)  # documents held out (evenly spread, deterministic)
    # the documents that root/parallel.jsonl lists as translations of one page (``phasescope corpus
    # build`` writes it): all kept (include); each page kept in one of its languages, drawn by a hash of
    # the page (one_per_page: the control without parallel text, most of every language's text kept);
    # every translated page left out (exclude); or each training page interleaved paragraph by paragraph
    # with its translation into a partner language (interleave: English, else the first other corpus
    # language the page has; translations side by side within a context window; txt_unit: file)
    parallel: Literal["include", "one_per_page", "exclude", "interleave"] = "include"

    @model_validator(mode="after")
    def _interleave_whole_files(self) -> LocalCorpusConfig:
        if self.parallel == "interleave" and self.txt_unit != "file":
            raise ValueError("parallel: interleave pairs whole pages: it needs txt_unit: file")
        return self


PARALLEL_INDEX = "parallel.jsonl"


class LocalCorpus:
    """Documents from local files; see :class:`LocalCorpusConfig`."""

    def __init__(self, config: LocalCorpusConfig) -> None:
        self.config = config
        root = Path(config.root).expanduser()
        if not root.is_dir():
            raise PhasescopeError(f"corpus root {root} is not a folder (expected one folder per language code)")
        if config.languages is None:
            found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            unknown = [name for name in found if name not in LANGUAGES]
            if unknown:
                raise PhasescopeError(f"{root}: folder(s) {', '.join(unknown)} are not supported language codes "
                                      f"({', '.join(LANGUAGES)}); list the corpus languages under `languages:`")
            if not found:
                raise PhasescopeError(f"{root}: no language folders (expected e.g. {root}/en/*.txt)")
            languages = found
        else:
            languages = check_language_codes(config.languages, "corpus languages")
        self.languages = languages
        self.root = root
        self._share = heldout_fraction(config.heldout_share)
        groups = _parallel_groups(root)
        if config.parallel != "include" and groups is None:
            raise PhasescopeError(f"{root}: parallel: {config.parallel} needs the parallel index "
                                  f"{root / PARALLEL_INDEX} (written by `phasescope corpus build`)")
        self._parallel = {path for group in groups for path in group.values()} if groups is not None else None
        self._dropped = _dropped_translations(groups, config.parallel, languages) if groups is not None else set()
        self._files = {language: self._language_files(language) for language in languages}
        self._partners = self._interleave_partners(groups) if config.parallel == "interleave" else {}
        for language in languages:  # an empty corpus fails here, before any training
            if next(self._raw_documents(language, 0), None) is None:
                raise PhasescopeError(f"{root / language}: the files hold no documents")

    def _language_files(self, language: str) -> list[Path]:
        folder = self.root / language
        if not folder.is_dir():
            raise PhasescopeError(f"{folder}: no folder for language {language!r} "
                                  f"(expected {folder}/*.txt|*.jsonl|*.parquet)")
        entries = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        files = [p for p in entries if p.suffix in LOCAL_SUFFIXES]
        if self._dropped:
            kept = [p for p in files if f"{language}/{p.name}" not in self._dropped]
            if files and not kept:
                raise PhasescopeError(f"{folder}: every document has a translation in the parallel index, so "
                                      f"parallel: {self.config.parallel} leaves nothing; leave the language out "
                                      "(`languages:`)")
            files = kept
        if not files:
            other = ", ".join(p.name for p in entries[:3]) or "nothing"
            raise PhasescopeError(f"{folder}: no *.txt, *.jsonl or *.parquet files (found {other})")
        return files

    def _interleave_partners(self, groups: list[dict[str, str]]) -> dict[str, Path]:
        """``<language>/<file>`` -> the file of its page in the partner language (English, else the first other
        corpus language of the page), for the training documents whose partner is a training document too
        (a held-out page's text never enters training)."""
        other = next((path for files in self._files.values() for path in files if path.suffix != ".txt"), None)
        if other is not None:
            raise PhasescopeError(f"{other}: parallel: interleave pairs whole .txt pages; this corpus has other files")
        training = {f"{language}/{path.name}" for language, files in self._files.items()
                    for position, path in enumerate(files)
                    if not (self._share and is_heldout_position(position, self._share))}
        partners = {}
        for group in groups:
            present = [language for language in self.languages if group.get(language) in training]
            for language in present:
                others = [other for other in present if other != language]
                if others:
                    partner = "en" if "en" in others else others[0]
                    partners[group[language]] = self.root / group[partner]
        return partners

    def documents(self, language: str, split: Split = "train", start: int = 0) -> Iterator[str]:
        """Documents of ``language`` in ``split`` from index ``start`` on (raw order: files by name)."""
        self._check(language)
        if split == "train":
            raw_start = raw_position_of_train(start, self._share) if self._share else start
            raw = self._raw_documents(language, raw_start)
            if self._partners:
                raw = ((position, self._interleaved(language, position, text)) for position, text in raw)
            yield from split_positions(raw, split, self._share)
        else:
            held = split_positions(self._raw_documents(language, 0), split, self._share)
            for _ in range(start):
                if next(held, None) is None:
                    return
            yield from held

    def _interleaved(self, language: str, position: int, text: str) -> str:
        """The page at raw ``position`` interleaved with its partner's translation: paragraph i of the page, then
        paragraph i of the translation, ...; when the two have different numbers of paragraphs, the page and
        then the translation. Documents without a partner are returned as they are."""
        files = self._files[language]
        partner = self._partners.get(f"{language}/{files[position].name}") if position < len(files) else None
        if partner is None:
            return text
        own = [block.strip() for block in text.split("\n\n") if block.strip()]
        other = [block.strip() for block in read_text_file(partner).split("\n\n") if block.strip()]
        if len(own) != len(other):
            return "\n\n".join(own + other)
        return "\n\n".join(block for pair in zip(own, other) for block in pair)

    document_kinds = ("parallel", "interleaved", "monolingual", DEFAULT_DOCUMENT_KIND)  # what document_kind returns

    def document_kind(self, language: str, index: int) -> str:
        """``parallel`` for a training document the parallel index lists (a page with a translation),
        ``interleaved`` for one interleaved with its translation, ``monolingual`` for the others; ``text``
        without an index, or where documents are not whole ``.txt`` files."""
        self._check(language)
        files = self._files[language]
        if self._parallel is None or self.config.txt_unit != "file" or any(p.suffix != ".txt" for p in files):
            return DEFAULT_DOCUMENT_KIND
        raw = raw_position_of_train(index, self._share) if self._share else index
        if raw >= len(files):
            return DEFAULT_DOCUMENT_KIND
        path = f"{language}/{files[raw].name}"
        if path in self._partners:
            return "interleaved"
        return "parallel" if path in self._parallel and self.config.parallel == "include" else "monolingual"

    def size_hint(self, language: str) -> float:
        """Bytes of the language's files."""
        self._check(language)
        return float(sum(path.stat().st_size for path in self._files[language]))

    def _check(self, language: str) -> None:
        if language not in self._files:
            raise PhasescopeError(f"the local corpus has no language {language!r}; it has {', '.join(self.languages)}")

    def _raw_documents(self, language: str, start: int) -> Iterator[tuple[int, str]]:
        """(raw position, text) from raw position ``start`` on; skipped documents are not parsed."""
        position = 0
        for path in self._files[language]:
            if path.suffix == ".parquet":
                rows = _parquet_rows(path)
                if position + rows <= start:
                    position += rows
                    continue
                skip = max(start - position, 0)
                for offset, text in enumerate(_parquet_texts(path, self.config.text_field, skip)):
                    yield position + skip + offset, text
                position += rows
                continue
            for raw in self._file_units(path):
                if position >= start:
                    yield position, self._text_of(raw, path) if path.suffix == ".jsonl" else raw
                position += 1

    def _file_units(self, path: Path) -> Iterator[str]:
        """The raw document strings of one txt or jsonl file (jsonl: the undecoded line)."""
        if path.suffix == ".jsonl":
            yield from (line for line in text_lines(path) if line.strip())
            return
        text = read_text_file(path)
        if self.config.txt_unit == "file":
            if text.strip():
                yield text
        elif self.config.txt_unit == "line":
            yield from (line for line in text.splitlines() if line.strip())
        else:
            yield from (block.strip() for block in text.split("\n\n") if block.strip())

    def _text_of(self, line: str, path: Path) -> str:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PhasescopeError(f"{path}: a line is not JSON ({error.msg}): {line[:60]!r}") from None
        if not isinstance(record, dict) or self.config.text_field not in record:
            fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise PhasescopeError(f"{path}: a record has no field {self.config.text_field!r} (it has {fields}); "
                                  f"set text_field")
        return str(record[self.config.text_field])


def _parallel_groups(root: Path) -> list[dict[str, str]] | None:
    """The corpus's parallel index: per page, language -> ``<language>/<file>``; None without an index."""
    path = root / PARALLEL_INDEX
    if not path.is_file():
        return None
    groups = []
    for number, line in enumerate(read_text_file(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            files = json.loads(line)["files"]
            groups.append({str(language): str(member) for language, member in files.items()})
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise PhasescopeError(f"{path}:{number}: expected a JSON object with a 'files' mapping "
                                  "(language -> path)") from None
    return groups


def _dropped_translations(groups: list[dict[str, str]], mode: str, languages: list[str]) -> set[str]:
    """The documents a ``parallel`` setting leaves out: none (include), every member of every page
    (exclude), or all but one language's version of each page, the language drawn by a hash of the
    page's files (one_per_page: deterministic, and spread evenly over the languages); none for interleave."""
    if mode in ("include", "interleave"):
        return set()
    dropped = set()
    for group in groups:
        present = sorted(language for language in group if language in languages)
        if mode == "exclude":
            dropped.update(group.values())
            continue
        if len(present) < 2:
            continue
        digest = hashlib.sha256("|".join(sorted(group.values())).encode()).digest()
        keep = present[int.from_bytes(digest[:8], "big") % len(present)]
        dropped.update(group[language] for language in present if language != keep)
    return dropped


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as error:  # pyarrow raises several types for a broken file
        raise PhasescopeError(f"{path}: not a Parquet file ({' '.join(str(error).split())[:100]})") from None


def _parquet_texts(path: Path, column: str, skip: int) -> Iterator[str]:
    """The column's values from row ``skip`` on, reading only the row groups needed."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    if column not in file.schema_arrow.names:
        raise PhasescopeError(f"{path}: no column {column!r} (it has {', '.join(file.schema_arrow.names)}); "
                              f"set text_field")
    for group in range(file.num_row_groups):
        rows = file.metadata.row_group(group).num_rows
        if skip >= rows:
            skip -= rows
            continue
        values = file.read_row_group(group, columns=[column]).column(0).to_pylist()
        for value in values[skip:]:
            yield "" if value is None else str(value)
        skip = 0


# ---- one config, one builder -------------------------------------------------------------------

# A config's ``source`` field picks the corpus, e.g. ``corpus: {source: local, root: ~/corpus}``.
CorpusConfig = Annotated[ControlledCorpusConfig | LocalCorpusConfig | HuggingFaceCorpusConfig,
                         Field(discriminator="source")]


def build_corpus(config: ControlledCorpusConfig | LocalCorpusConfig | HuggingFaceCorpusConfig) -> CorpusSource:
    """The corpus a config describes; local folders are checked (languages, files) right away."""
    if isinstance(config, ControlledCorpusConfig):
        return ControlledCorpus(config)
    if isinstance(config, LocalCorpusConfig):
        return LocalCorpus(config)
    if isinstance(config, HuggingFaceCorpusConfig):
        return HuggingFaceCorpus(config)
    raise PhasescopeError(f"unknown corpus config {type(config).__name__}; expected source controlled, local or "
                          f"huggingface")


def sample_documents(corpus: CorpusSource, documents_per_language: int, split: Split = "train",
                     languages: Iterable[str] | None = None) -> dict[str, list[str]]:
    """The first ``documents_per_language`` documents of each language (fewer if a language has fewer)."""
    sample = {}
    for language in list(languages) if languages is not None else corpus.languages:
        documents = []
        for text in corpus.documents(language, split):
            documents.append(text)
            if len(documents) >= documents_per_language:
                break
        sample[language] = documents
    return sample

