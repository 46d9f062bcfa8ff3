"""The recorder's built-in inline measures: cheap functions of the model at a recorded step, each with
settings that are part of its shard's config hash (as every ``phasescope measure`` measure's are).

- ``loss``: the held batch's loss,
- ``norms``: l1 and l2 of all parameters,
- ``sharpness``: the top Hessian eigenvalue of the held batch's loss (Lanczos, warm-started from the
  previous measurement's eigenvector),
- ``wlt``: word-level translation of a causal LM (settings: those of the ``wlt`` measure's prompts; by
  default the CLDR lexicon, 5 shots and 8 concepts per direction, small enough to run at every checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from pydantic import Field, ValidationError
from torch import Tensor, nn

from phasescope.curvature.hessian import eval_mode
from phasescope.errors import PhasescopeError
from phasescope.models.norms import parameter_norms
from phasescope.run.config import StrictModel

InlineMeasure = Callable[[nn.Module], dict[str, float] | list[dict]]
BUILTIN_MEASURES = ("loss", "norms", "sharpness", "wlt")


class InlineWLTConfig(StrictModel):
    """The inline ``wlt`` measure's prompts (fields and meaning as the ``wlt`` measure's)."""

    lexicon: str = "cldr"  # a lexicon Parquet file, or the built-in CLDR lexicon
    languages: list[str] | None = None
    shots: int = Field(5, ge=0)
    seed: int = 0
    max_concepts: int | None = Field(8, ge=1)  # per direction: small, as it runs at every recorded step


SETTINGS = {"wlt": InlineWLTConfig}


def parse_measures(measures: Iterable[str] | dict[str, Any]) -> tuple[dict[str, InlineMeasure | None],
                                                                     dict[str, dict]]:
    """({name: callable or None for a built-in}, {name: validated settings of a built-in}) from the forms
    :class:`~phasescope.integrations.Recorder` accepts: names; or a dict of name to a callable, to None,
    or to a built-in's settings."""
    named = dict(measures) if isinstance(measures, dict) else {name: None for name in measures}
    functions, settings = {}, {}
    for name, value in named.items():
        if callable(value):
            functions[name] = value
            continue
        if name not in BUILTIN_MEASURES:
            raise PhasescopeError(f"measures: unknown inline measure {name!r}; built in: "
                                  f"{', '.join(BUILTIN_MEASURES)}, or pass {{name: callable(model)}}")
        if value is not None and not isinstance(value, dict):
            raise PhasescopeError(f"measures.{name}: expected a callable, None or a dict of settings, "
                                  f"got {type(value).__name__}")
        functions[name] = None
        model = SETTINGS.get(name)
        if model is None:
            if value:
                raise PhasescopeError(f"measures.{name}: the built-in {name} measure has no settings")
            settings[name] = {}
            continue
        try:
            settings[name] = model.model_validate(value or {}).model_dump(mode="json")
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise PhasescopeError(f"measures.{name}.{where}: {problem['msg']}") from None
    return functions, settings


class BuiltinMeasures:
    """The built-in measures, with what they hold between calls (the held batch, the warm start, the
    tokenized WLT prompts)."""

    def __init__(self, batch: Any, loss_fn: Callable[[Any, Any], Tensor] | None, tokenizer,
                 settings: dict[str, dict]) -> None:
        if any(name in settings for name in ("loss", "sharpness")) and batch is None:
            raise PhasescopeError("the loss and sharpness measures need a held batch: Recorder(..., batch=...)")
        if "sharpness" in settings and loss_fn is None:
            raise PhasescopeError("the sharpness measure needs loss_fn(outputs, targets) and batch=(inputs, targets)")
        if batch is not None and not isinstance(batch, dict) and not (isinstance(batch, tuple | list)
                                                                      and len(batch) == 2):
            raise PhasescopeError(f"batch: expected (inputs, targets) or a dict of model inputs with labels, "
                                  f"got {type(batch).__name__}")
        self.batch, self.loss_fn, self.tokenizer, self.settings = batch, loss_fn, tokenizer, settings
        self.sharpness_start = None  # the previous sharpness result: the next one's warm start
        self._wlt_encoding = None

    def check(self) -> None:
        """The wlt measure needs a tokenizer (a callback finds it in its framework before the first step)."""
        if "wlt" in self.settings and self.tokenizer is None:
            raise PhasescopeError("the wlt measure needs the model's tokenizer: Recorder(..., tokenizer=...)")

    def __call__(self, name: str, model: nn.Module) -> dict[str, float] | list[dict]:
        return getattr(self, f"_{name}")(model)

    @torch.no_grad()
    def _loss(self, model: nn.Module) -> dict[str, float]:
        with eval_mode(model):
            if isinstance(self.batch, dict):
                return {"loss": float(model(**_to(self.batch, model)).loss)}
            inputs, targets = _to(self.batch, model)
            if self.loss_fn is None:
                raise PhasescopeError("the loss measure of a (inputs, targets) batch needs loss_fn")
            return {"loss": float(self.loss_fn(model(inputs), targets))}

    @staticmethod
    def _norms(model: nn.Module) -> dict[str, float]:
        return parameter_norms(model)

    def _sharpness(self, model: nn.Module) -> dict[str, float]:
        from phasescope.curvature import sharpness

        result = sharpness(model, self.loss_fn, _to(self.batch, model), v0=self.sharpness_start)
        self.sharpness_start = result
        return {"sharpness": float(result.eigenvalues[0])}

    def _wlt(self, model: nn.Module) -> list[dict]:
        from phasescope.data.wlt import encode_wlt
        from phasescope.measures.translation import wlt_metric_rows, wlt_scores
        from phasescope.measures.wlt_inputs import WLTDataConfig, named_lexicon, wlt_pairs

        if self._wlt_encoding is None:
            settings = dict(self.settings["wlt"])
            lexicon = named_lexicon(settings.pop("lexicon"))
            self._wlt_encoding = encode_wlt(wlt_pairs(lexicon, WLTDataConfig(**settings)), self.tokenizer)
        with eval_mode(model):
            return wlt_metric_rows(wlt_scores(model, self.tokenizer, self._wlt_encoding))


def _to(batch: Any, model: nn.Module) -> Any:
    device = next(model.parameters()).device
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: _to(value, model) for key, value in batch.items()}
    if isinstance(batch, Iterable) and not isinstance(batch, str):
        return type(batch)(_to(value, model) for value in batch)
    return batch
