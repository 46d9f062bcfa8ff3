"""Hugging Face datasets streamed per language as a corpus source (``source: huggingface``), e.g.
FineWeb-2's ``deu_Latn`` config; resumable with ``.skip(n)``, with held-out documents from a split or
a share (:mod:`phasescope.data.heldout`). Needs the ``datasets`` extra."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from typing import Literal

from pydantic import Field, field_validator

from phasescope.data.heldout import Split, heldout_fraction, raw_position_of_train, split_positions
from phasescope.data.languages import language_codes_field
from phasescope.errors import PhasescopeError
from phasescope.run.config import StrictModel


class HuggingFaceLanguage(StrictModel):
    """Where one language's documents are: a config of the dataset, or another dataset or files."""

    name: str | None = None  # the dataset config, e.g. "deu_Latn" for FineWeb-2
    path: str | None = None  # a different dataset (hub id, builder such as "parquet", or local folder)
    data_files: str | list[str] | dict[str, str | list[str]] | None = None  # for builders like "parquet"/"json"
    split: str | None = None  # overrides the corpus's split


class HuggingFaceCorpusConfig(StrictModel):
    """Hugging Face datasets streamed per language, e.g. ``path: HuggingFaceFW/fineweb-2`` with
    ``languages: {de: deu_Latn, fr: fra_Latn}`` (a string is the config name)."""

    source: Literal["huggingface"] = "huggingface"
    path: str  # hub dataset id, a builder ("parquet", "json", "text") with data_files, or a local dataset folder
    languages: dict[str, HuggingFaceLanguage | str]
    split: str = "train"
    heldout_split: str | None = None  # a split for held-out documents (e.g. "test"); None: a share of `split`
    heldout_share: float = Field(0.001, ge=0, lt=1)  # used when heldout_split is None
    text_field: str = "text"
    revision: str | None = None  # a commit, tag or branch of the dataset repo
    # documents or bytes per language for temperature sampling; None: the dataset's own split info
    size_hints: dict[str, float] | None = None

    @field_validator("languages")
    @classmethod
    def _known_codes(cls, value: dict) -> dict:
        language_codes_field(list(value))
        return value


class HuggingFaceCorpus:
    """Documents streamed with ``datasets.load_dataset(..., streaming=True)``; resume with ``.skip(n)``."""

    def __init__(self, config: HuggingFaceCorpusConfig) -> None:
        self.config = config
        self.languages = list(config.languages)
        self._specs = {code: spec if isinstance(spec, HuggingFaceLanguage) else HuggingFaceLanguage(name=spec)
                       for code, spec in config.languages.items()}
        self._share = heldout_fraction(config.heldout_share) if config.heldout_split is None else Fraction(0)

    def documents(self, language: str, split: Split = "train", start: int = 0) -> Iterator[str]:
        """Documents of ``language`` in ``split`` from index ``start`` on, streamed."""
        self._check(language)
        if split == "heldout" and self.config.heldout_split is not None:
            yield from self._texts(self._stream(language, self.config.heldout_split).skip(start), language)
            return
        if split == "train":
            raw_start = raw_position_of_train(start, self._share) if self._share else start
            stream = self._stream(language).skip(raw_start)
            yield from split_positions(enumerate(self._texts(stream, language), start=raw_start), split, self._share)
        else:
            held = split_positions(enumerate(self._texts(self._stream(language), language)), split, self._share)
            for _ in range(start):
                if next(held, None) is None:
                    return
            yield from held

    def size_hint(self, language: str) -> float | None:
        """``size_hints[language]``, else the split's example count (or bytes) from the dataset's info."""
        self._check(language)
        if self.config.size_hints is not None:
            return self.config.size_hints.get(language)
        info = self._stream(language).info
        split = self._specs[language].split or self.config.split
        splits = info.splits or {}
        if split in splits and splits[split].num_examples:
            return float(splits[split].num_examples)
        return float(info.dataset_size) if info.dataset_size else None

    def _check(self, language: str) -> None:
        if language not in self._specs:
            raise PhasescopeError(f"the Hugging Face corpus has no language {language!r}; "
                                  f"it has {', '.join(self.languages)}")

    def _stream(self, language: str, split: str | None = None):
        datasets = _import_datasets()
        spec = self._specs[language]
        path = spec.path or self.config.path
        split = split or spec.split or self.config.split
        try:
            return datasets.load_dataset(path, name=spec.name, data_files=spec.data_files, split=split,
                                         streaming=True, revision=self.config.revision)
        except Exception as error:  # datasets raises many types (FileNotFoundError, ValueError, hub errors)
            where = f"{path}" + (f" config {spec.name}" if spec.name else "") + f" split {split}"
            raise PhasescopeError(f"cannot stream {where} for language {language!r}: "
                                  f"{' '.join(str(error).split())[:200]}") from None

    def _texts(self, stream, language: str) -> Iterator[str]:
        field = self.config.text_field
        examples = iter(stream)
        while True:
            try:
                example = next(examples)
            except StopIteration:
                return
            except Exception as error:  # a broken file, a schema mismatch, a dropped connection
                raise PhasescopeError(f"while streaming {self.config.path} ({language}): "
                                      f"{' '.join(str(error).split())[:200]}") from None
            if field not in example:
                raise PhasescopeError(f"{self.config.path} ({language}): examples have no field {field!r} "
                                      f"(they have {', '.join(example)}); set text_field")
            text = example[field]
            yield "" if text is None else str(text)


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise PhasescopeError("the huggingface corpus source needs the datasets package: "
                              "pip install phasescope[datasets]") from None
    return datasets
