"""A dense record of a training loop that phasescope does not run: checkpoints on a schedule, and cheap
measures inline, in the run-directory contract that ``phasescope measure`` and ``report`` read.

    recorder = phasescope.Recorder("runs/mine", schedule="log_linear", measures=["loss", "norms"],
                                   batch=(inputs, targets), loss_fn=loss_fn)
    for step in range(steps):
        ...                                   # the user's forward, backward, optimizer.step()
        recorder.step(model, optimizer, step=step + 1, tokens=tokens_seen)

A step is the number of optimizer updates done; ``step=0`` records the initialization. On a step
that no schedule names, :meth:`Recorder.step` compares two integers and returns: no copy, no
device synchronization, no file access. On a scheduled one it writes ``checkpoints/step_N/``
atomically (a directory of that name is always complete): the weights as a Hugging Face directory
when the model is a ``PreTrainedModel`` (with the tokenizer, if given), else ``model.safetensors``
of its ``state_dict``; the optimizer's state as ``optimizer.safetensors`` (tensors by parameter
name) with its hyper-parameters in ``state.json`` beside the step and tokens. Inline measures write
one metric shard each at their own schedule.

Restarted on the same directory (the user's run resumed from its own checkpoint), the recorder
keeps what is there: a step already recorded is not written again, and a shard that exists is
skipped, so nothing is duplicated or lost. Under ``torch.distributed`` only rank 0 writes; a model
wrapped in DDP is unwrapped, and an FSDP model's full state is gathered on every rank (a
collective, at scheduled steps only) and written by rank 0.

The record is not a replayable run: it has no data position or generator states, so path
attribution over it takes the straight chord between checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, TypeAdapter, ValidationError
from safetensors.torch import save_file
from torch import Tensor, nn

from phasescope.curvature.hessian import eval_mode
from phasescope.errors import PhasescopeError
from phasescope.models.norms import parameter_norms
from phasescope.run import MetricStore, RunDir, atomic_directory, config_hash
from phasescope.run.config import StrictModel
from phasescope.run.series import quiet_transformers
from phasescope.train.schedules import CheckpointSchedule, EverySteps, EveryTokens, ExplicitSteps, LogLinear

KIND = "recorded"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
InlineMeasure = Callable[[nn.Module], dict[str, float] | list[dict]]
BUILTIN_MEASURES = ("loss", "norms", "sharpness", "wlt")


class RecorderSchedule:
    """Whether a step is due under a checkpoint schedule, with no step budget: log-linear (Pythia's:
    0, 1, 2, 4, ..., ``log_until``, then every ``every`` steps), every N steps, every N tokens, or
    an explicit list of steps."""

    def __init__(self, schedule: Any) -> None:
        self.schedule = _parse_schedule(schedule)
        self._steps = set(self.schedule.steps) if isinstance(self.schedule, ExplicitSteps) else set()
        self._last_tokens: int | None = None

    def due(self, step: int, tokens: int | None = None) -> bool:
        schedule = self.schedule
        if isinstance(schedule, LogLinear):
            return step == 0 or (step <= schedule.log_until and step & (step - 1) == 0) or step % schedule.every == 0
        if isinstance(schedule, EverySteps):
            return step % schedule.every == 0 and (step > 0 or schedule.include_initial)
        if isinstance(schedule, ExplicitSteps):
            return step in self._steps
        if tokens is None:
            raise PhasescopeError("an every_tokens schedule needs the tokens seen: recorder.step(..., tokens=N)")
        previous, self._last_tokens = self._last_tokens, tokens
        if step == 0 or tokens == 0:
            return schedule.include_initial
        if previous is None:  # the first call after a restart: due if this step crossed a multiple
            return tokens % schedule.tokens == 0
        return tokens // schedule.tokens > previous // schedule.tokens

    def describe(self) -> dict:
        return self.schedule.model_dump(mode="json")


def _parse_schedule(schedule: Any):
    """A schedule model from: one, a dict, ``"log_linear"``, an int (every N steps) or a list of steps."""
    if isinstance(schedule, LogLinear | EverySteps | EveryTokens | ExplicitSteps):
        return schedule
    if schedule == "log_linear":
        return LogLinear()
    if isinstance(schedule, bool):
        raise PhasescopeError(f"schedule: expected a schedule, got {schedule!r}")
    if isinstance(schedule, int):
        schedule = {"schedule": "every_steps", "every": schedule}
    elif isinstance(schedule, list | tuple | range):
        schedule = {"schedule": "steps", "steps": list(schedule)}
    try:
        return TypeAdapter(CheckpointSchedule).validate_python(schedule)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise PhasescopeError(f"schedule{'.' + where if where else ''}: {problem['msg']} "
                              "(expected 'log_linear', every N steps as an int, a list of steps, or a dict such as "
                              "{'schedule': 'every_tokens', 'tokens': 1000000})") from None


class RecorderConfig(StrictModel):
    """What the recorder writes into ``config.yaml``: a run of kind ``recorded``."""

    kind: str = KIND
    source: str = "plain"  # plain, hf_trainer or lightning: who called the recorder
    model_format: str = "safetensors"  # hf (a Hugging Face directory) or safetensors (a state_dict)
    checkpoints: dict = Field(default_factory=dict)
    measures: list[str] = Field(default_factory=list)
    measure_schedule: dict | None = None  # None: at the checkpoints
    tokens_per_step: int | None = None


class Recorder:
    """Checkpoints and inline measures of any training loop (see the module docstring).

    Args:
        out: the run directory (created, or continued when it holds a record with the same settings).
        schedule: checkpoint schedule: ``"log_linear"`` (default), an int (every N steps), a list of
            steps, a dict (``{"schedule": "every_tokens", "tokens": N}``) or a schedule model of
            :mod:`phasescope.train.schedules`.
        measures: inline measures, by name or ``{name: callable(model) -> {metric: value} | rows}``:
            ``loss`` (the held batch's loss), ``norms`` (l1 and l2 of all parameters), ``sharpness``
            (top Hessian eigenvalue of the held batch's loss, warm-started from the previous one),
            ``wlt`` (word-level translation of a causal LM, needs ``tokenizer``).
        every: the measures' schedule (same forms as ``schedule``); None: at every checkpoint.
        batch: the held batch of ``loss`` and ``sharpness``: ``(inputs, targets)`` with ``loss_fn``,
            or a dict of model inputs with ``labels`` for a Hugging Face model (its own loss).
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch mean.
        tokenizer: saved into every Hugging Face checkpoint, and used by ``wlt``.
        tokens_per_step: tokens per optimizer step, for steps recorded without ``tokens=``.
        source: who drives the recorder (the callbacks set it).
    """

    def __init__(self, out: str | Path, schedule: Any = "log_linear",
                 measures: Sequence[str] | dict[str, InlineMeasure] = (), every: Any = None, *,
                 batch: Any = None, loss_fn: Callable[[Any, Any], Tensor] | None = None, tokenizer=None,
                 tokens_per_step: int | None = None, source: str = "plain") -> None:
        self.out = Path(out)
        self.schedule = RecorderSchedule(schedule)
        self.measure_schedule = RecorderSchedule(every) if every is not None else None
        named = dict(measures) if isinstance(measures, dict) else {name: None for name in measures}
        unknown = [name for name, function in named.items() if function is None and name not in BUILTIN_MEASURES]
        if unknown:
            raise PhasescopeError(f"measures: unknown inline measure {unknown[0]!r}; built in: "
                                  f"{', '.join(BUILTIN_MEASURES)}, or pass {{name: callable(model)}}")
        if any(name in named for name in ("loss", "sharpness")) and batch is None:
            raise PhasescopeError("the loss and sharpness measures need a held batch: Recorder(..., batch=...)")
        if "sharpness" in named and loss_fn is None:
            raise PhasescopeError("the sharpness measure needs loss_fn(outputs, targets) and batch=(inputs, targets)")
        if "wlt" in named and tokenizer is None:
            raise PhasescopeError("the wlt measure needs the model's tokenizer: Recorder(..., tokenizer=...)")
        self.measures = named
        self.batch, self.loss_fn, self.tokenizer = batch, loss_fn, tokenizer
        self.tokens_per_step, self.source = tokens_per_step, source
        self.run: RunDir | None = None
        self._recorded: set[int] = set()
        self._sharpness_start = None  # the previous sharpness result: the next one's warm start
        self._wlt_encoding = None

    # --- the one call per step ------------------------------------------------------------------
    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, step: int,
             tokens: int | None = None) -> bool:
        """Record ``step`` (optimizer updates done so far) if a schedule names it; True if anything was due.

        Nothing is read from ``model`` on a step that no schedule names.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise PhasescopeError(f"step must be a non-negative integer, got {step!r}")
        if tokens is None and self.tokens_per_step is not None:
            tokens = step * self.tokens_per_step
        checkpoint = self.schedule.due(step, tokens)
        measure = bool(self.measures) and (self.measure_schedule.due(step, tokens) if self.measure_schedule
                                           else checkpoint)
        if not (checkpoint or measure):
            return False
        model = _unwrapped(model)
        if _distributed() and measure and _is_fsdp(model):
            raise PhasescopeError("inline measures of an FSDP model are not supported: record checkpoints only "
                                  "and run `phasescope measure` on them")
        # under torch.distributed every rank gathers at a due checkpoint (collectives for FSDP); rank 0 writes
        gathered = _gathered(model, optimizer) if checkpoint and _distributed() else None
        if _rank() != 0:
            return True
        run = self._open(model)
        if checkpoint and step not in self._recorded:
            self._write_checkpoint(run, model, gathered or _gathered(model, optimizer), step, tokens)
        if measure:
            self._measure(run, model, step, tokens)
        return True

    # --- writing --------------------------------------------------------------------------------
    def _open(self, model: nn.Module) -> RunDir:
        if self.run is None:
            from phasescope.run import dump_config

            config = RecorderConfig(
                source=self.source, model_format="hf" if _is_pretrained(model) else "safetensors",
                checkpoints=self.schedule.describe(), measures=list(self.measures),
                measure_schedule=self.measure_schedule.describe() if self.measure_schedule else None,
                tokens_per_step=self.tokens_per_step)
            self.run = RunDir.create(self.out, dump_config(config), exist_ok=True)
            self._recorded = {info.step for info in self.run.list_checkpoints()}
        return self.run

    def _write_checkpoint(self, run: RunDir, model: nn.Module,
                          gathered: tuple[dict[str, Tensor], dict[str, Tensor], list[dict]], step: int,
                          tokens: int | None) -> None:
        state, optimizer_tensors, param_groups = gathered
        meta: dict[str, Any] = {"step": step, "tokens": tokens, "recorded_by": self.source}
        if param_groups:
            meta["optimizer_param_groups"] = param_groups
        with atomic_directory(run.checkpoint_dir(step)) as directory:
            if _is_pretrained(model):
                with quiet_transformers():  # no progress bar per checkpoint in the user's output
                    model.save_pretrained(directory, state_dict=state, safe_serialization=True)
                    if self.tokenizer is not None:
                        self.tokenizer.save_pretrained(directory)
            else:
                save_file(_distinct(state), str(directory / "model.safetensors"), metadata={"format": "pt"})
            if optimizer_tensors:
                save_file(optimizer_tensors, str(directory / OPTIMIZER_FILE), metadata={"format": "pt"})
            (directory / STATE_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        self._recorded.add(step)

    def _measure(self, run: RunDir, model: nn.Module, step: int, tokens: int | None) -> None:
        store = MetricStore(run)
        for name, function in self.measures.items():
            config = {"inline": name, "schedule": self.measure_schedule.describe() if self.measure_schedule
                      else "checkpoints"}
            if store.has_shard(step, name, config_hash(config)):  # recorded before a restart
                continue
            result = function(model) if function is not None else getattr(self, f"_{name}")(model)
            rows = [{"metric": metric, "value": float(value)} for metric, value in result.items()] \
                if isinstance(result, dict) else list(result)
            store.write_shard(step, name, config, rows, tokens=tokens)

    # --- the built-in inline measures ---------------------------------------------------------------
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

        result = sharpness(model, self.loss_fn, _to(self.batch, model), v0=self._sharpness_start)
        self._sharpness_start = result
        return {"sharpness": float(result.eigenvalues[0])}

    def _wlt(self, model: nn.Module) -> list[dict]:
        from phasescope.data.lexicon_sources import build_cldr_lexicon
        from phasescope.data.wlt import build_wlt_pairs, encode_wlt
        from phasescope.measures.translation import wlt_metric_rows, wlt_scores

        if self._wlt_encoding is None:
            pairs = build_wlt_pairs(build_cldr_lexicon(), shots=5, seed=0, max_concepts=8)
            self._wlt_encoding = encode_wlt(pairs, self.tokenizer)
        with eval_mode(model):
            return wlt_metric_rows(wlt_scores(model, self.tokenizer, self._wlt_encoding))


def _gathered(model: nn.Module, optimizer: torch.optim.Optimizer | None
             ) -> tuple[dict[str, Tensor], dict[str, Tensor], list[dict]]:
    """(full weights, optimizer tensors keyed ``<parameter name>.<entry>``, JSON param groups with the
    parameters by name), on the CPU of rank 0: ``torch.distributed.checkpoint``'s full state dicts,
    which gather an FSDP model's shards (a collective: under torch.distributed every rank calls)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = {name: tensor.detach() for name, tensor in get_model_state_dict(model, options=options).items()}
    if optimizer is None or not optimizer.state:
        # before the first step there is no state, and torch would make one by stepping the optimizer
        # with zero gradients (an Adam step count of 1): the recorder must not change the training
        return state, {}, []
    full = get_optimizer_state_dict(model, optimizer, options=options)
    tensors = {}
    for name, entries in full.get("state", {}).items():
        for entry, value in entries.items():
            value = value if isinstance(value, Tensor) else torch.tensor(value)
            tensors[f"{name}.{entry}"] = value.detach().to("cpu").contiguous()
    groups = [{key: (list(value) if isinstance(value, tuple) else value) for key, value in group.items()
               if _json_value(value)} for group in full.get("param_groups", [])]
    return state, tensors, groups


def _json_value(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _is_pretrained(model: nn.Module) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return False
    return isinstance(model, PreTrainedModel)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The model inside DDP (or ``torch.compile``)."""
    while isinstance(model, nn.parallel.DistributedDataParallel) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model._orig_mod
    return model


def _is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    fsdp2 = getattr(torch.distributed.fsdp, "FSDPModule", None)
    return any(isinstance(module, FullyShardedDataParallel) or (fsdp2 is not None and isinstance(module, fsdp2))
               for module in model.modules())


def _distinct(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Tensors that share storage (tied weights) once, as safetensors requires, each contiguous."""
    seen: dict[tuple, str] = {}
    out = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            continue
        seen[key] = name
        out[name] = tensor.contiguous()
    return out


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _rank() -> int:
    return torch.distributed.get_rank() if _distributed() else 0


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _to(batch: Any, model: nn.Module) -> Any:
    device = _device(model)
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: _to(value, model) for key, value in batch.items()}
    if isinstance(batch, Iterable) and not isinstance(batch, str):
        return type(batch)(_to(value, model) for value in batch)
    return batch
