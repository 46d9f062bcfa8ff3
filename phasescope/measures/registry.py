"""The measure registry: named measures of one checkpoint of a series, returning tidy rows.

A measure is a function ``compute(context, config) -> rows`` with a typed config (its hash names
the metric shards). It reads the checkpoint through its :class:`MeasureContext` (the model and
tokenizer are loaded once per checkpoint and shared by every measure run on it) and never writes
files itself: the executor writes one shard per (checkpoint, measure, config hash).

Rows are dicts (or a DataFrame) with ``metric`` and ``value`` and optional dimensions ``src``,
``tgt``, ``layer``, ``component``, ``subset`` (see ``phasescope.run.metrics.METRIC_SCHEMA``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from phasescope.errors import PhasescopeError
from phasescope.run.config import StrictModel
from phasescope.run.series import CheckpointSeries, SeriesCheckpoint

Rows = list[dict[str, Any]] | pd.DataFrame

# Modules whose import registers the built-in measures (each calls register_measure at import).
BUILTIN_MEASURE_MODULES: list[str] = []
BUILTIN_MEASURE_MODULES += ["phasescope.measures.translation", "phasescope.measures.logit_lens"]
BUILTIN_MEASURE_MODULES += ["phasescope.measures.path_attribution", "phasescope.measures.ablations",
                            "phasescope.measures.lm_quality", "phasescope.measures.similarity",
                            "phasescope.measures.lm_curvature", "phasescope.measures.curvature"]


@dataclass
class MeasureContext:
    """One checkpoint as the measures see it.

    Attributes:
        series: the series the checkpoint belongs to (other checkpoints, weight files, optimizer state).
        checkpoint: the checkpoint measured.
        device: where the model runs.
        previous: the series' checkpoint before this one (pairwise measures such as path attribution).
        cache: resources shared across the checkpoints of one executor run (a tokenized prompt set,
            a held-out batch), filled through :meth:`shared`.
    """

    series: CheckpointSeries
    checkpoint: SeriesCheckpoint
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    previous: SeriesCheckpoint | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    _model: Any = None
    _tokenizer: Any = None

    @property
    def model(self):
        """The checkpoint's model in eval mode (loaded on first use, then kept for the other measures)."""
        if self._model is None:
            self._model = self.series.load_model(self.checkpoint, device=str(self.device))
        return self._model

    @property
    def tokenizer(self):
        """The series' tokenizer, after checking that this checkpoint's is the same."""
        if self._tokenizer is None:
            self._tokenizer = self.shared("series_tokenizer", self.series.load_tokenizer)
            if self.checkpoint is not self.series.checkpoints[-1]:
                self.series.check_tokenizer(self.checkpoint)
        return self._tokenizer

    def shared(self, key: str, factory: Callable[[], Any]) -> Any:
        """The resource ``key`` of this executor run, built once with ``factory()``."""
        if key not in self.cache:
            self.cache[key] = factory()
        return self.cache[key]

    def of_checkpoint(self, slot: str, key: Hashable, factory: Callable[[], Any]) -> Any:
        """A result about this checkpoint that several of its measures use (the WLT scores, the logit
        lens), built once with ``factory()``. One slot per name: only the latest checkpoint's result is
        kept, so memory does not grow with the series; ``key`` tells apart configs of one checkpoint."""
        kept = self.cache.get(f"{slot}:last")
        if kept is None or kept[0] != (self.checkpoint.name, key):
            kept = ((self.checkpoint.name, key), factory())
            self.cache[f"{slot}:last"] = kept
        return kept[1]

    def release(self) -> None:
        """Drop the model so that the next checkpoint's can take its memory."""
        self._model = None


@dataclass(frozen=True)
class Measure:
    """A named measure.

    Attributes:
        name: the metric-store name (lowercase, digits, underscores).
        config_cls: its typed config; ``config_cls()`` must be a valid default.
        compute: ``compute(context, config) -> rows``.
        description: one line for ``phasescope measure --help`` and the report.
        pairwise: it needs ``context.previous`` (it is skipped on the first checkpoint).
        run_kinds: the series it measures: ``lm`` (causal LMs: LM runs and Hub series) and/or ``gd``
            (runs of ``phasescope train`` of kind gd); on other series it is not applicable.
        prepare: ``prepare(series, config)``, checks that need the series (a parameter subset, a
            size), run once before any checkpoint so that a bad option is one error, not one a checkpoint.
    """

    name: str
    config_cls: type[StrictModel]
    compute: Callable[[MeasureContext, Any], Rows]
    description: str
    pairwise: bool = False
    run_kinds: tuple[str, ...] = ("lm",)
    prepare: Callable[[CheckpointSeries, Any], None] | None = None


_REGISTRY: dict[str, Measure] = {}


def register_measure(measure: Measure) -> Measure:
    """Add a measure to the registry (a second registration under the same name is an error)."""
    existing = _REGISTRY.get(measure.name)
    if existing is not None and existing is not measure and existing.compute is not measure.compute:
        raise PhasescopeError(f"a measure named {measure.name!r} is registered already")
    _REGISTRY[measure.name] = measure
    return measure


def _load_builtins() -> None:
    for module in BUILTIN_MEASURE_MODULES:
        importlib.import_module(module)


def available_measures() -> dict[str, Measure]:
    """Every registered measure by name (built-in ones included), sorted by name."""
    _load_builtins()
    return dict(sorted(_REGISTRY.items()))


def get_measure(name: str) -> Measure:
    """The measure called ``name``; an unknown name lists the available ones."""
    measures = available_measures()
    if name not in measures:
        raise PhasescopeError(f"unknown measure {name!r}; available: {', '.join(measures) or 'none'}")
    return measures[name]
