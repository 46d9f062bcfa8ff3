"""The ``path_attribution`` measure: the change of translation, copying or held-out loss since the previous
checkpoint, split over parameter groups (and, along the replayed path, over training data).

``path: replay`` follows the optimizer steps that training took between the two checkpoints
(ExPLAIND's decomposition, :mod:`phasescope.measures.replayed_attribution`), for a ``phasescope train``
run, whose checkpoints carry the resume state, with the parts summing to the change within a stated
tolerance; ``path: chord`` takes integrated gradients along the straight segment between them
(:mod:`phasescope.measures.attribution`), the only path a series without resume state (Hub revisions)
has; ``auto`` (the default) replays where the replay can be verified here (resume state, the device kind
the run trained on, one process) and otherwise takes the chord with the reason in the rows (``note``)
and one line. A replay runs on the device the run trained on, whatever the measurement's device. The
rows say which path they took (``path``), what completeness they reached and what it cost. f and its
gradients run without autocast on every device, in the ``precision`` asked for.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from phasescope.data.wlt import EncodedWLT
from phasescope.errors import PhasescopeError
from phasescope.measures.attribution import Objective, PathAttribution, chord_integrated_gradients
from phasescope.measures.lm_forward import autocast_for, full_precision, wlt_log_probs
from phasescope.measures.lm_quality import HeldoutDataConfig, shared_heldout_data
from phasescope.measures.quadrature import QuadratureRule
from phasescope.measures.registry import Measure, MeasureContext, register_measure
from phasescope.measures.replayed_attribution import ReplayAttribution, StepRule, check_budget, replay_attribution
from phasescope.measures.wlt_inputs import WLTDataConfig, item_subsets, shared_wlt_encoding
from phasescope.models.adapters import parameter_groups
from phasescope.models.losses import next_token_losses
from phasescope.progress import console, progress_bar
from phasescope.run.config import config_hash
from phasescope.run.weights import CheckpointWeights
from phasescope.train.data_split import DATA_DIMENSIONS, DataDimension
from phasescope.train.lm_checkpoint import has_resume_state
from phasescope.train.replay import replay_device


class PathAttributionConfig(WLTDataConfig):
    """Config of the ``path_attribution`` measure (previous checkpoint -> this one)."""

    # f: the summed log-probability mass on valid target first tokens ("wlt_target"), on the source
    # word's first tokens ("wlt_source", copying), or the mean held-out next-token loss ("heldout_loss")
    objective: Literal["wlt_target", "wlt_source", "heldout_loss"] = "wlt_target"
    # WLT items summed into f; no_overlap: pairs without shared first tokens, where translating is not copying
    subset: Literal["no_overlap", "overlap", "all", "heldout_no_overlap", "heldout_overlap"] = "no_overlap"
    # replay: the optimizer steps training took (needs the run's resume state); chord: the straight segment;
    # auto: replay where it can be verified here (resume state, the training device kind, one process), else chord
    path: Literal["auto", "replay", "chord"] = "auto"
    points: int = Field(32, ge=1)  # chord: quadrature points (forward + backward passes over the prompts each)
    rule: QuadratureRule = "midpoint"  # chord: the midpoint rule; "gauss_legendre" converges faster on smooth paths
    # replay: data dimensions the change is also split by (one more backward pass per label in a batch)
    data: list[DataDimension] = list(DATA_DIMENSIONS)
    # replay: adaptive meets |sum of parts - change| <= max(rtol |change|, atol); midpoint (ExPLAIND's rule) and
    # gauss_legendre take step_points gradients on every step whatever their error
    step_rule: StepRule = "adaptive"
    rtol: float = Field(1e-3, gt=0)  # replay: completeness relative to |f(B) - f(A)|
    # replay: the floor of the tolerance where f barely moves, in f's units (nats): float32's resolution of an f of
    # order 10, below which a float32 gap is rounding, not quadrature
    atol: float = Field(1e-6, gt=0)
    max_gradients: int | None = Field(None, ge=1)  # replay: objective gradients per interval (None: 8 per step)
    step_points: int = Field(10, ge=1)  # replay, fixed rules: gradients per step (10: ExPLAIND's default)
    replay_tolerance: float = Field(0.0, ge=0)  # replay: accepted |difference| from a saved checkpoint (0: bitwise)
    precision: Literal["float32", "float64"] = "float32"  # of f and its gradients (logits upcast, never autocast)
    batch_size: int = Field(32, ge=1)  # prompts (or held-out rows) per forward/backward pass
    heldout: HeldoutDataConfig = HeldoutDataConfig(sequences=4)  # the text of objective heldout_loss


def wlt_objective(encoded: EncodedWLT, indices: Tensor, answer: str, batch_size: int) -> Objective:
    """f = the summed log-probability mass on the answer's first tokens over the items ``indices``,
    in pieces of ``batch_size`` prompts of similar length."""
    order = indices[torch.argsort(encoded.lengths[indices], descending=True, stable=True)]

    def objective(model: nn.Module) -> Iterator[Tensor]:
        for batch in torch.split(order, batch_size):
            yield wlt_log_probs(model, encoded, batch_size=len(batch), answer=answer, indices=batch).sum()
    return objective


def heldout_loss_objective(batches: Mapping[str, Tensor], batch_size: int) -> Objective:
    """f = the mean next-token loss over every held-out row of every language, in pieces of ``batch_size`` rows."""
    rows = torch.cat(list(batches.values()))
    predicted = rows.shape[0] * (rows.shape[1] - 1)

    def objective(model: nn.Module) -> Iterator[Tensor]:
        device = next(model.parameters()).device
        for chunk in torch.split(rows, batch_size):
            chunk = chunk.to(device)
            with autocast_for(device):
                logits = model(input_ids=chunk).logits
            yield next_token_losses(logits, chunk).sum() / predicted
    return objective


def objective_label(config: PathAttributionConfig) -> str:
    """The rows' ``subset``: the WLT subset for translation, ``copy_<subset>`` for copying, ``heldout`` for the loss."""
    if config.objective == "heldout_loss":
        return "heldout"
    return config.subset if config.objective == "wlt_target" else f"copy_{config.subset}"


def attribution_rows(result: PathAttribution, groups: Mapping[str, list[str]], label: str) -> list[dict]:
    """``attribution`` per group (``component``; ``layer`` for a block's groups), ``delta_f``, ``f_start``,
    ``f_end``, ``completeness_gap``, ``completeness_gap_relative``, ``objective_gradients`` (the cost), and
    with a tolerance ``completeness_tolerance`` and ``tolerance_met`` (1 or 0), all with ``subset`` =
    ``label`` and ``path`` = ``replay`` or ``chord``; along a replay also ``replayed_steps``,
    ``gradients_per_step``, ``objective_forwards``, ``max_step_gap`` (the largest one-step |gap|),
    ``step_gap_sum`` (the steps' |gaps| summed: the gap had no two steps' errors offset each other),
    ``split_residual`` (the data split's rounding) and ``data_attribution`` per part of the data (``data``)."""
    path = "replay" if isinstance(result, ReplayAttribution) else "chord"
    rows = []
    for group, value in result.grouped(groups).items():
        match = re.match(r"^layers\.(\d+)\.", group)
        rows.append({"metric": "attribution", "value": value, "component": group,
                     "layer": int(match.group(1)) if match else None})
    summary = {"delta_f": result.delta_f, "f_start": result.f_start, "f_end": result.f_end,
               "completeness_gap": result.completeness_gap, "completeness_gap_relative": result.relative_gap,
               "objective_gradients": float(result.points)}
    if result.tolerance is not None:
        summary.update(completeness_tolerance=result.tolerance, tolerance_met=float(result.tolerance_met))
    if isinstance(result, ReplayAttribution):
        summary.update(replayed_steps=float(result.steps[1] - result.steps[0]),
                       gradients_per_step=result.gradients_per_step, objective_forwards=float(result.forwards),
                       max_step_gap=max(abs(gap) for gap in result.step_gaps), step_gap_sum=result.step_gap_sum,
                       split_residual=result.split_residual)
        rows += [{"metric": "data_attribution", "value": value, "data": part} for part, value in result.data.items()]
    rows += [{"metric": metric, "value": value} for metric, value in summary.items()]
    return [{**row, "subset": label, "path": path} for row in rows]


def attribution_objective(context: MeasureContext, config: PathAttributionConfig) -> Objective:
    """The measure's f: WLT target or source mass over the config's subset, or the held-out loss."""
    if config.objective == "heldout_loss":
        return heldout_loss_objective(shared_heldout_data(context, config.heldout), config.batch_size)
    encoded = shared_wlt_encoding(context, config)
    mask = item_subsets(encoded.pairs).get(config.subset)
    if mask is None or not mask.any():
        raise PhasescopeError(f"the WLT set has no item in subset {config.subset!r}")
    indices = torch.as_tensor(mask.to_numpy().nonzero()[0], dtype=torch.long)
    return wlt_objective(encoded, indices, config.objective.removeprefix("wlt_"), config.batch_size)


def compute_path_attribution(context: MeasureContext, config: PathAttributionConfig) -> list[dict]:
    if context.previous is None:
        raise PhasescopeError(f"path attribution of {context.checkpoint.name} needs the checkpoint before it")
    device, note = _replay_device(context, config)
    replay = device is not None
    objective = attribution_objective(context, config)
    model = context.model
    series = context.series
    end = CheckpointWeights(series.weight_files(context.checkpoint), model)
    on = model if config.precision == "float32" else copy.deepcopy(model).to(torch.float64)
    interval = f"{context.previous.name} -> {context.checkpoint.name}"
    if replay:
        steps = context.checkpoint.step - context.previous.step
        check_budget(steps, config.max_gradients, config.step_rule, config.step_points)
        # the previous interval's end point (f and its gradient at A), where the replay reaches A bitwise
        shared = f"path_attribution_end:{config_hash(config)}:{context.series.run.path}"
        cached = context.cache.pop(shared, None)
        start = cached[1] if cached is not None and cached[0] == context.previous.step else None
        with progress_bar(f"replayed attribution {interval}", steps, transient=True) as advance, full_precision():
            try:
                result = replay_attribution(series.run.path, objective, context.previous.step, context.checkpoint.step,
                                            on, split_by=config.data, rule=config.step_rule, rtol=config.rtol,
                                            atol=config.atol, max_gradients=config.max_gradients,
                                            points=config.step_points, device=device,
                                            tolerance=config.replay_tolerance, progress=advance, start=start)
                if config.replay_tolerance == 0 and result.end_point is not None:
                    context.cache[shared] = (context.checkpoint.step, result.end_point)
            finally:
                if on is model:  # the replay left the model at the replayed end point: put the saved one back
                    with torch.no_grad():
                        for name, parameter in model.named_parameters():
                            parameter.copy_(end.read(name, parameter))
    else:
        start = CheckpointWeights(series.weight_files(context.previous), model)
        with progress_bar(f"integrated gradients on the chord {interval}", config.points,
                          transient=True) as advance, full_precision():
            result = chord_integrated_gradients(on, objective, start, end, config.points, config.rule,
                                                progress=advance)
    if not result.tolerance_met:
        console.print(f"path_attribution {interval}: completeness {result.completeness_gap:.3g} missed the tolerance "
                      f"{result.tolerance:.3g} within {result.points} objective gradients (rows written with the gap "
                      "reached; raise max_gradients)")
    rows = attribution_rows(result, parameter_groups(on), objective_label(config))
    return [{**row, "note": note} for row in rows] if note else rows


def _replay_device(context: MeasureContext, config: PathAttributionConfig) -> tuple[str | None, str | None]:
    """(the device to replay the interval on: the one the run trained on, None) where ``path`` asks for the
    replay and it can be verified here; else (None, why not) for the chord, said in one line where the
    interval has resume state (``path: replay`` raises instead)."""
    if config.path == "chord":
        return None, None
    try:
        if context.previous.path is None:
            raise PhasescopeError(f"{context.series.source}: a Hub series has no resume state to replay")
        return replay_device(context.series.run.path, context.previous.step, context.checkpoint.step,
                             config.replay_tolerance), None
    except PhasescopeError as error:
        if config.path == "replay":
            raise
        reason = str(error).removesuffix("; use path: chord")
        if context.previous.path is not None and has_resume_state(context.previous.path):
            console.print(f"path_attribution {context.previous.name} -> {context.checkpoint.name}: integrated "
                          f"gradients on the chord, not the replay: {reason}", markup=False, highlight=False)
        return None, reason


PATH_ATTRIBUTION_MEASURE = register_measure(Measure(
    name="path_attribution", config_cls=PathAttributionConfig, compute=compute_path_attribution,
    description="attribution of the change since the previous checkpoint to parameter groups and training data "
                "along the replayed training path (ExPLAIND), complete to a tolerance; or integrated gradients "
                "on the chord",
    pairwise=True,
))
