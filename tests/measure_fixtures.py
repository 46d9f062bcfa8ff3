"""Measures registered by the executor tests: small real computations on the tiny LMs of lm_fixtures.

Importing this module registers them; subprocesses (``phasescope measure --import
tests.measure_fixtures``) and Ray workers import it by name.
"""

from __future__ import annotations

import torch
from pydantic import Field
from safetensors import safe_open

from phasescope.errors import PhasescopeError
from phasescope.measures.registry import (
    BUILTIN_MEASURE_MODULES,
    Measure,
    MeasureContext,
    available_measures,
    register_measure,
)
from phasescope.run.config import StrictModel

TEXTS = ["The cat sees the dog.", "Die Katze sieht den Hund.", "Кошка видит собаку."]


class TextLogprobConfig(StrictModel):
    texts: list[str] = Field(default_factory=lambda: list(TEXTS))
    repeats: int = Field(1, ge=1)  # forward passes per text: makes a checkpoint take longer (kill tests)


def mean_logprobs(model, tokenizer, texts: list[str], repeats: int = 1) -> list[float]:
    """Mean log-probability per predicted token of each text under ``model`` (teacher forcing)."""
    values = []
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text)])
        with torch.no_grad():
            for _ in range(repeats):
                logits = model(ids).logits[0, :-1].double()  # (T-1, vocab)
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])
        values.append(float(logprobs.mean()))
    return values


def text_logprob(context: MeasureContext, config: TextLogprobConfig):
    values = mean_logprobs(context.model, context.tokenizer, config.texts, config.repeats)
    rows = [{"metric": "mean_logprob", "value": v, "component": f"text{i}"} for i, v in enumerate(values)]
    return rows + [{"metric": "mean_logprob", "value": sum(values) / len(values)}]


class WeightDistanceConfig(StrictModel):
    pass


def read_weights(files) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                tensors[name] = handle.get_tensor(name)
    return tensors


def weight_distance(context: MeasureContext, config: WeightDistanceConfig):
    """l2 distance between this checkpoint's weights and the previous checkpoint's (pairwise)."""
    now = read_weights(context.series.weight_files(context.checkpoint))
    before = read_weights(context.series.weight_files(context.previous))
    squared = sum(float(((now[name].double() - before[name].double()) ** 2).sum()) for name in now)
    return [{"metric": "l2_distance", "value": squared ** 0.5}]


class FailAtConfig(StrictModel):
    fail_at_step: int = 10


def fail_at(context: MeasureContext, config: FailAtConfig):
    if context.checkpoint.step == config.fail_at_step:
        raise PhasescopeError(f"cannot measure step {config.fail_at_step}: it is the step this test fails at")
    return [{"metric": "step_squared", "value": float(context.checkpoint.step ** 2)}]


class ParameterCountConfig(StrictModel):
    pass


def parameter_count(context: MeasureContext, config: ParameterCountConfig):
    return [{"metric": "parameters", "value": float(sum(p.numel() for p in context.model.parameters()))}]


TEXT_LOGPROB = register_measure(Measure("test_text_logprob", TextLogprobConfig, text_logprob,
                                        "mean log-probability of fixed texts"))
WEIGHT_DISTANCE = register_measure(Measure("test_weight_distance", WeightDistanceConfig, weight_distance,
                                           "l2 distance of the weights from the previous checkpoint", pairwise=True))
FAIL_AT = register_measure(Measure("test_fail_at", FailAtConfig, fail_at, "fails at one step"))
PARAMETER_COUNT = register_measure(Measure("test_parameter_count", ParameterCountConfig, parameter_count,
                                           "number of parameters"))


def builtin_measures() -> set[str]:
    """The LM measures phasescope ships (other tests of this process register their own)."""
    return {name for name, measure in available_measures().items()
            if measure.compute.__module__ in BUILTIN_MEASURE_MODULES and "lm" in measure.run_kinds}
