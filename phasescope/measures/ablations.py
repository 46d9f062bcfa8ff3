"""Ablations of a causal LM, done in place and undone exactly: layer swaps between checkpoints,
scaling a parameter group, zeroing one attention head.

The reference ("Copy First, Translate Later", arXiv 2604.17633) dates when the translation
mechanisms form by placing the middle layers of one checkpoint into another and by scaling
parameter groups, and scores each edited model on word-level translation (WLT) and copying. Every
edit here is a context manager that touches only the parameters it edits, keeps a copy of just
those, and puts them back bit for bit on exit: no deep copy of the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from typing import Literal

import pandas as pd
import torch
from pydantic import Field
from torch import Tensor, nn

from phasescope.data.wlt import EncodedWLT
from phasescope.errors import PhasescopeError
from phasescope.measures.registry import Measure, MeasureContext, register_measure
from phasescope.measures.translation import wlt_scores
from phasescope.measures.wlt_inputs import WLTDataConfig, item_subsets, shared_wlt_encoding
from phasescope.models.adapters import get_adapter
from phasescope.progress import progress_bar
from phasescope.run.config import config_hash
from phasescope.run.weights import CheckpointWeights

Edit = Callable[[Tensor], None]  # edits a parameter in place (under no_grad)


# --- in-place edits, undone exactly --------------------------------------------------------------
def named_parameters_with_aliases(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every parameter by every name it has (a tied unembedding under both of its names)."""
    return dict(model.named_parameters(remove_duplicate=False))


@contextmanager
def edited_parameters(model: nn.Module, edits: Mapping[str, Edit], restore: CheckpointWeights | None = None):
    """Apply ``edits[name](parameter)`` in place inside the block; restore the originals bit for bit after.

    Only the edited parameters are copied (on their device); with ``restore`` (the model's own
    checkpoint, read lazily) nothing is copied and the edited parameters are read back from it on
    exit, so an edit of most of the model costs no memory. Tied parameters are one tensor: the
    edit of either name edits both, and it is applied once.
    """
    parameters = named_parameters_with_aliases(model)
    unknown = [name for name in edits if name not in parameters]
    if unknown:
        raise PhasescopeError(f"the model has no parameter {unknown[0]!r} (it has e.g. "
                              f"{', '.join(list(parameters)[:4])})")
    saved: dict[int, tuple[str, nn.Parameter, Tensor | None]] = {}
    try:
        with torch.no_grad():
            for name, edit in edits.items():
                parameter = parameters[name]
                if id(parameter) in saved:
                    continue
                saved[id(parameter)] = (name, parameter, None if restore is not None else parameter.detach().clone())
                edit(parameter)
        yield model
    finally:
        with torch.no_grad():
            for name, parameter, original in saved.values():
                parameter.copy_(original if original is not None else restore.read(name, parameter))


@contextmanager
def swapped_parameters(model: nn.Module, donor: Mapping[str, Tensor], names: Iterable[str],
                       restore: CheckpointWeights | None = None):
    """The parameters ``names`` taken from ``donor`` (another checkpoint's weights) inside the block
    (``restore``: see :func:`edited_parameters`)."""
    def take(name: str) -> Edit:
        def edit(parameter: Tensor) -> None:
            source = donor.read(name, parameter) if isinstance(donor, CheckpointWeights) else donor[name]
            if source.shape != parameter.shape:
                raise PhasescopeError(f"donor weight {name!r} has shape {tuple(source.shape)}, "
                                      f"the model {tuple(parameter.shape)}")
            parameter.copy_(source)
        return edit
    with edited_parameters(model, {name: take(name) for name in names}, restore) as edited:
        yield edited


@contextmanager
def scaled_parameters(model: nn.Module, names: Iterable[str], factor: float):
    """The parameters ``names`` multiplied by ``factor`` inside the block."""
    def scale(parameter: Tensor) -> None:
        parameter.mul_(factor)
    with edited_parameters(model, {name: scale for name in names}) as edited:
        yield edited


@contextmanager
def zeroed_input_slice(model: nn.Module, weight_name: str, start: int, stop: int, input_dim: int):
    """Columns ``start:stop`` of the input dimension of a projection weight set to zero inside the block.

    For an attention output projection whose input is the concatenation of the heads' outputs,
    zeroing head ``h``'s slice removes exactly that head's contribution to the residual stream.
    ``input_dim`` is 1 for ``nn.Linear`` (out, in) and 0 for GPT-2's ``Conv1D`` (in, out).
    """
    def zero(parameter: Tensor) -> None:
        if not 0 <= start < stop <= parameter.shape[input_dim]:
            raise PhasescopeError(f"input slice {start}:{stop} is outside {weight_name!r}'s input size "
                                  f"{parameter.shape[input_dim]}")
        parameter.narrow(input_dim, start, stop - start).zero_()
    with edited_parameters(model, {weight_name: zero}) as edited:
        yield edited


# --- the edits the reference uses, by architecture-neutral names --------------------------------
LAYER_RANGE = re.compile(r"^layers\.(\d+)(?:-(\d+))?(?:\.(attention|mlp|norms))?$")


def parse_layer_range(text: str, num_layers: int) -> tuple[int, int]:
    """``"I-J"`` or ``"I"`` (inclusive, 0-based) as (first, last), checked against the model's layers."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not match:
        raise PhasescopeError(f"layer range {text!r}: expected I or I-J (0-based, inclusive)")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    check_layer_range(first, last, num_layers)
    return first, last


def check_layer_range(first: int, last: int, num_layers: int) -> None:
    """One-line error unless ``0 <= first <= last < num_layers``."""
    if not 0 <= first <= last < num_layers:
        raise PhasescopeError(f"layers {first}-{last} out of range: the model has {num_layers} layers, "
                              f"valid indices 0..{num_layers - 1} (first <= last)")


def group_parameter_names(model: nn.Module, spec: str) -> list[str]:
    """Parameter names of a group given by name.

    ``spec`` is a group of :func:`~phasescope.models.adapters.parameter_groups` (``embedding``,
    ``layers.3.mlp``, ``final_norm``, ``unembedding``), a whole block or range of blocks
    (``layers.3``, ``layers.2-5``), or one kind of sub-group over a range (``layers.2-5.attention``).
    """
    adapter = get_adapter(model)
    groups = adapter.parameter_groups()
    if spec in groups:
        return list(groups[spec])
    match = LAYER_RANGE.match(spec)
    if not match:
        raise PhasescopeError(f"unknown parameter group {spec!r}; expected one of {', '.join(list(groups)[:3])}, ..., "
                              "layers.I, layers.I-J or layers.I-J.attention|mlp|norms")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    check_layer_range(first, last, adapter.num_layers)
    kinds = [match.group(3)] if match.group(3) else ["attention", "mlp", "norms"]
    return [name for layer in range(first, last + 1) for kind in kinds
            for name in groups.get(f"layers.{layer}.{kind}", [])]


@contextmanager
def swapped_layers(model: nn.Module, donor: Mapping[str, Tensor], first: int, last: int):
    """Blocks ``first..last`` (inclusive) of ``model`` replaced by the donor checkpoint's inside the block."""
    with swapped_parameters(model, donor, group_parameter_names(model, f"layers.{first}-{last}")) as edited:
        yield edited


@contextmanager
def scaled_group(model: nn.Module, spec: str, factor: float):
    """The parameters of group ``spec`` (see :func:`group_parameter_names`) times ``factor`` inside the block."""
    with scaled_parameters(model, group_parameter_names(model, spec), factor) as edited:
        yield edited


@contextmanager
def zeroed_head(model: nn.Module, layer: int, head: int):
    """Attention head ``head`` of block ``layer`` ablated inside the block: its slice of the input of the
    attention output projection is zeroed, so the head adds nothing to the residual stream while every
    other head's contribution and everything before that projection stay as they were."""
    adapter = get_adapter(model)
    check_layer_range(layer, layer, adapter.num_layers)
    if not 0 <= head < adapter.num_heads:
        raise PhasescopeError(f"head {head} out of range: the model has {adapter.num_heads} heads per layer, "
                              f"valid indices 0..{adapter.num_heads - 1}")
    weight_name = f"{adapter.layer_path(layer)}.{adapter.spec.attention_output}.weight"
    input_dim = 0 if adapter.spec.transposed_output else 1
    size = adapter.head_dim
    with zeroed_input_slice(model, weight_name, head * size, (head + 1) * size, input_dim) as edited:
        yield edited


# --- scoring an edited model on WLT ----------------------------------------------------------------
ABLATION_SCORES = {"p_target": "p_target", "top1_accuracy": "top1_correct", "p_source": "p_source",
                   "copy_top1": "copy_top1"}  # metric -> wlt_scores column, averaged over items


def checkpoint_wlt_scores(context: MeasureContext, config: WLTDataConfig, batch_size: int = 64) -> pd.DataFrame:
    """:func:`wlt_scores` of the (unedited) checkpoint, kept for the other measures of the same checkpoint.

    Kept in the context's per-checkpoint slot ``wlt_scores``, keyed by the WLT data fields of ``config``.
    """
    encoded = shared_wlt_encoding(context, config)
    data = WLTDataConfig.model_validate(config.model_dump(include=set(WLTDataConfig.model_fields)))
    return context.of_checkpoint("wlt_scores", config_hash(data),
                                 lambda: wlt_scores(context.model, context.tokenizer, encoded, batch_size=batch_size))


def wlt_summary(model: nn.Module, tokenizer, encoded: EncodedWLT, batch_size: int,
                scores: pd.DataFrame | None = None) -> dict[str, dict[str, float]]:
    """Mean WLT scores per subset (``all``, ``overlap``, ``no_overlap``, held-out ones): {subset: {metric: value}}.

    ``scores``: the model's :func:`wlt_scores` when they are at hand (then nothing is run).
    """
    if scores is None:
        scores = wlt_scores(model, tokenizer, encoded, batch_size=batch_size)
    summary = {}
    for subset, mask in item_subsets(scores).items():
        if mask.any():
            summary[subset] = {metric: float(scores.loc[mask, column].astype(float).mean())
                               for metric, column in ABLATION_SCORES.items()}
    return summary


def ablation_rows(edited: dict[str, dict[str, float]], base: dict[str, dict[str, float]], component: str,
                  layer: int | None) -> list[dict]:
    """The edited model's scores per subset and ``benefit`` = edited minus base ``p_target``."""
    rows = []
    for subset, scores in edited.items():
        rows += [{"metric": metric, "value": value, "component": component, "layer": layer, "subset": subset}
                 for metric, value in scores.items()]
        rows.append({"metric": "benefit", "value": scores["p_target"] - base[subset]["p_target"],
                     "component": component, "layer": layer, "subset": subset})
    return rows


def base_rows(base: dict[str, dict[str, float]]) -> list[dict]:
    """The unedited model's scores (``component`` = "base")."""
    return [{"metric": metric, "value": value, "component": "base", "subset": subset}
            for subset, scores in base.items() for metric, value in scores.items()]


class AblationConfig(WLTDataConfig):
    """WLT prompts (see ``wlt``) and the batch size: shared by the ablation measures."""

    batch_size: int = Field(64, ge=1)  # prompts per forward pass


# --- layer swap ------------------------------------------------------------------------------------
class LayerSwapConfig(AblationConfig):
    """Config of ``layer_swap``: blocks of one checkpoint placed into another, scored on WLT."""

    reference: str = "last"  # the other checkpoint: first, last or a step (a checkpoint selection)
    # reference_into_checkpoint: the reference's blocks placed into each checkpoint (the reference's
    # question: when does a checkpoint lack what the final model's middle layers do?);
    # checkpoint_into_reference: each checkpoint's blocks placed into the reference
    direction: Literal["reference_into_checkpoint", "checkpoint_into_reference"] = "reference_into_checkpoint"
    ranges: list[str] | None = None  # explicit inclusive ranges "I-J" or "I"; None: sliding windows
    window: int | None = Field(None, ge=1)  # blocks per sliding window; None: a quarter of the blocks (>= 1)
    stride: int | None = Field(None, ge=1)  # None: half a window (>= 1)


def layer_windows(num_layers: int, window: int | None = None, stride: int | None = None) -> list[tuple[int, int]]:
    """Inclusive (first, last) sliding windows over ``num_layers`` blocks, the last one ending at the top."""
    window = window or max(1, round(num_layers / 4))
    if window > num_layers:
        raise PhasescopeError(f"window of {window} layers is wider than the model's {num_layers} layers")
    stride = stride or max(1, window // 2)
    starts = list(range(0, num_layers - window + 1, stride))
    if starts[-1] != num_layers - window:
        starts.append(num_layers - window)
    return [(start, start + window - 1) for start in starts]


def swap_ranges(config: LayerSwapConfig, num_layers: int) -> list[tuple[int, int]]:
    if config.ranges is not None:
        return [parse_layer_range(text, num_layers) for text in config.ranges]
    return layer_windows(num_layers, config.window, config.stride)


def reference_checkpoint(series, text: str):
    chosen = series.select(text)
    if len(chosen) != 1:
        raise PhasescopeError(f"reference {text!r} names {len(chosen)} checkpoints; expected one "
                              "(first, last or a step)")
    return chosen[0]


def compute_layer_swap(context: MeasureContext, config: LayerSwapConfig) -> list[dict]:
    model, tokenizer, series = context.model, context.tokenizer, context.series
    adapter = get_adapter(model)
    ranges = swap_ranges(config, adapter.num_layers)  # checked before any work
    reference = reference_checkpoint(series, config.reference)
    encoded = shared_wlt_encoding(context, config)
    series.check_tokenizer(reference)
    own = CheckpointWeights(series.weight_files(context.checkpoint), model)
    other = CheckpointWeights(series.weight_files(reference), model)
    everything = [name for names in adapter.parameter_groups().values() for name in names]
    if config.direction == "reference_into_checkpoint":
        base = wlt_summary(model, tokenizer, encoded, config.batch_size,
                           checkpoint_wlt_scores(context, config, config.batch_size))
    else:  # the reference's own scores: this model with every parameter taken from the reference
        def reference_scores():
            with swapped_parameters(model, other, everything, restore=own):
                return wlt_summary(model, tokenizer, encoded, config.batch_size)
        base = context.shared(f"layer_swap_reference:{reference.name}:{config_hash(config)}", reference_scores)
    rows = base_rows(base)
    with progress_bar(f"layer swap {context.checkpoint.name}", len(ranges), transient=True) as advance:
        for first, last in ranges:
            inside = set(group_parameter_names(model, f"layers.{first}-{last}"))
            if config.direction == "reference_into_checkpoint":
                edit = swapped_parameters(model, other, sorted(inside))
            else:  # the checkpoint's blocks in the reference = the reference's everything else in the checkpoint
                edit = swapped_parameters(model, other, [n for n in everything if n not in inside], restore=own)
            with edit:
                swapped = wlt_summary(model, tokenizer, encoded, config.batch_size)
            rows += ablation_rows(swapped, base, f"layers.{first}-{last}", first)
            advance()
    return rows


# --- scaling ---------------------------------------------------------------------------------------
class ScalingConfig(AblationConfig):
    """Config of ``scaling``: one parameter group at a time multiplied by each factor, scored on WLT."""

    groups: list[str] | None = None  # group specs (see group_parameter_names); None: each block "layers.I"
    factors: list[float] = Field(default_factory=lambda: [0.0, 0.5, 2.0], min_length=1)  # 0 knocks a group out


def compute_scaling(context: MeasureContext, config: ScalingConfig) -> list[dict]:
    model, tokenizer = context.model, context.tokenizer
    groups = config.groups or [f"layers.{i}" for i in range(get_adapter(model).num_layers)]
    for spec in groups:
        group_parameter_names(model, spec)  # every spec checked before any work
    encoded = shared_wlt_encoding(context, config)
    base = wlt_summary(model, tokenizer, encoded, config.batch_size,
                       checkpoint_wlt_scores(context, config, config.batch_size))
    rows = base_rows(base)
    with progress_bar(f"scaling {context.checkpoint.name}", len(groups) * len(config.factors),
                      transient=True) as advance:
        for spec in groups:
            match = LAYER_RANGE.match(spec)
            for factor in config.factors:
                with scaled_group(model, spec, factor):
                    scaled = wlt_summary(model, tokenizer, encoded, config.batch_size)
                rows += ablation_rows(scaled, base, f"{spec} x{factor:g}", int(match.group(1)) if match else None)
                advance()
    return rows


# --- head ablation ---------------------------------------------------------------------------------
class HeadAblationConfig(AblationConfig):
    """Config of ``head_ablation``: one attention head at a time zeroed, scored on WLT."""

    layers: list[int] | None = None  # blocks whose heads are ablated; None: all
    heads: list[int] | None = None  # head indices; None: all


def compute_head_ablation(context: MeasureContext, config: HeadAblationConfig) -> list[dict]:
    model, tokenizer = context.model, context.tokenizer
    adapter = get_adapter(model)
    layers = config.layers if config.layers is not None else list(range(adapter.num_layers))
    heads = config.heads if config.heads is not None else list(range(adapter.num_heads))
    for layer in layers:
        check_layer_range(layer, layer, adapter.num_layers)
    for head in heads:
        if not 0 <= head < adapter.num_heads:
            raise PhasescopeError(f"head {head} out of range: the model has {adapter.num_heads} heads per layer, "
                                  f"valid indices 0..{adapter.num_heads - 1}")
    encoded = shared_wlt_encoding(context, config)
    base = wlt_summary(model, tokenizer, encoded, config.batch_size,
                       checkpoint_wlt_scores(context, config, config.batch_size))
    rows = base_rows(base)
    with progress_bar(f"head ablation {context.checkpoint.name}", len(layers) * len(heads), transient=True) as advance:
        for layer in layers:
            for head in heads:
                with zeroed_head(model, layer, head):
                    ablated = wlt_summary(model, tokenizer, encoded, config.batch_size)
                rows += ablation_rows(ablated, base, f"layers.{layer}.head.{head}", layer)
                advance()
    return rows


LAYER_SWAP_MEASURE = register_measure(Measure(
    name="layer_swap", config_cls=LayerSwapConfig, compute=compute_layer_swap,
    description="WLT with blocks swapped between this checkpoint and a reference one (when mechanisms form)",
))
SCALING_MEASURE = register_measure(Measure(
    name="scaling", config_cls=ScalingConfig, compute=compute_scaling,
    description="WLT with one parameter group scaled by a factor",
))
HEAD_ABLATION_MEASURE = register_measure(Measure(
    name="head_ablation", config_cls=HeadAblationConfig, compute=compute_head_ablation,
    description="WLT with one attention head zeroed",
))
