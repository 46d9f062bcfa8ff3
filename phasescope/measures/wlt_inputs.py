"""Which WLT prompts a measure scores: its config, the lexicon and held-out concepts of a series,
the subsets items are reported in, and one tokenization of the prompts per executor run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from pydantic import Field, field_validator

from phasescope.data.languages import language_codes_field
from phasescope.data.lexicon import Lexicon
from phasescope.data.wlt import (
    DEFAULT_TEMPLATE,
    EncodedWLT,
    ExemplarSampling,
    build_wlt_pairs,
    check_template,
    encode_wlt,
)
from phasescope.errors import PhasescopeError
from phasescope.files import read_text_file
from phasescope.measures.registry import MeasureContext
from phasescope.run.config import StrictModel, config_hash
from phasescope.run.series import CheckpointSeries


class WLTDataConfig(StrictModel):
    """Which WLT prompts: shared by the ``wlt`` and ``logit_lens`` measures (equal fields, one tokenization)."""

    languages: list[str] | None = None  # None: every language of the lexicon
    # a Parquet file, or "cldr" (the built-in CLDR lexicon); None: the run's data/lexicon.parquet, else "cldr"
    lexicon: str | None = None
    shots: int = Field(5, ge=0)  # exemplar lines per prompt, as in the shared-concept-space studies
    seed: int = 0  # draws the exemplars (and the concepts kept by max_concepts)
    max_concepts: int | None = Field(None, ge=1)  # per direction; None keeps every shared concept
    template: str = DEFAULT_TEMPLATE  # line format; {tgt_word} last
    # per_direction: one exemplar set per direction (its shared lines run once per batch); per_item: a draw per item
    exemplars: ExemplarSampling = "per_direction"

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value):
        if value is None:
            return value
        return language_codes_field(value)

    @field_validator("lexicon")
    @classmethod
    def _lexicon_file(cls, value):  # checked once when the measures are planned, not at every checkpoint
        if value is not None and value != "cldr" and not Path(value).is_file():
            raise ValueError(f"no lexicon file {value!r} (a Parquet file from `phasescope lexicon build`, or cldr)")
        return value

    @field_validator("template")
    @classmethod
    def _valid_template(cls, value):
        try:
            return check_template(value)
        except PhasescopeError as error:
            raise ValueError(str(error)) from None


def resolve_lexicon(series: CheckpointSeries, path: str | None) -> Lexicon:
    """The lexicon file given (``cldr``: the built-in CLDR lexicon), else the run's ``data/lexicon.parquet``,
    else the built-in CLDR lexicon."""
    own = series.run.path / "data" / "lexicon.parquet"
    return named_lexicon(path if path is not None else (str(own) if own.is_file() else "cldr"))


def named_lexicon(path: str) -> Lexicon:
    """A lexicon Parquet file, or ``cldr``: the built-in CLDR lexicon."""
    from phasescope.data.lexicon_sources import build_cldr_lexicon

    return build_cldr_lexicon() if path == "cldr" else Lexicon.load(path)


def wlt_pairs(lexicon: Lexicon, data: WLTDataConfig, heldout: Sequence[str] = ()) -> pd.DataFrame:
    """The WLT items ``data`` names from ``lexicon`` (held-out concepts as the run kept them)."""
    held = [concept for concept in heldout if concept in set(lexicon.concepts)]
    return build_wlt_pairs(lexicon, data.languages, shots=data.shots, seed=data.seed, max_concepts=data.max_concepts,
                           template=data.template, heldout_concepts=held, exemplars=data.exemplars)


def heldout_concepts(series: CheckpointSeries) -> list[str]:
    """The concepts the run held out of every bilingual signal (``data/heldout_concepts.json``), or none."""
    path = series.run.path / "data" / "heldout_concepts.json"
    if not path.is_file():
        return []
    try:
        concepts = json.loads(read_text_file(path))
    except (OSError, json.JSONDecodeError) as error:
        raise PhasescopeError(f"{path}: expected a JSON list of concept ids ({error})") from None
    if not isinstance(concepts, list) or not all(isinstance(c, str) for c in concepts):
        raise PhasescopeError(f"{path}: expected a JSON list of concept ids, got {type(concepts).__name__}")
    return concepts


def shared_wlt_encoding(context: MeasureContext, config: WLTDataConfig) -> EncodedWLT:
    """The tokenized WLT prompts of ``config``, built once per executor run and reused for every checkpoint."""
    tokenizer = context.tokenizer  # checks this checkpoint's tokenizer against the series' every time
    data = WLTDataConfig.model_validate(config.model_dump(include=set(WLTDataConfig.model_fields)))

    def build() -> EncodedWLT:
        lexicon = resolve_lexicon(context.series, data.lexicon)
        return encode_wlt(wlt_pairs(lexicon, data, heldout_concepts(context.series)), tokenizer)

    return context.shared(f"wlt_encoding:{config_hash(data)}", build)


def item_subsets(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """Boolean masks of the reporting subsets: all, overlap, no_overlap, and the held-out ones when any."""
    overlap = frame["shared_first_token"].astype(bool)
    subsets = {"all": pd.Series(True, index=frame.index), "overlap": overlap, "no_overlap": ~overlap}
    if "heldout" in frame.columns and frame["heldout"].any():
        heldout = frame["heldout"].astype(bool)
        subsets |= {"heldout_overlap": heldout & overlap, "heldout_no_overlap": heldout & ~overlap}
    return subsets
