"""A dense record of a training loop that phasescope does not run: checkpoints on a schedule, the
loop's own loss, learning rate and gradient norm, and cheap measures inline, in the run-directory
contract that ``phasescope measure`` and ``report`` read.

    recorder = phasescope.Recorder("runs/mine", schedule="log_linear", measures=["loss", "norms"],
                                   batch=(inputs, targets), loss_fn=loss_fn)
    recorder.step(model, optimizer, step=0)
    for step in range(steps):
        ...                                   # the user's forward, backward, optimizer.step()
        recorder.log_training(step + 1, loss=loss, lr=lr, grad_norm=norm)   # optional, every step, cheap
        recorder.step(model, optimizer, step=step + 1, tokens=tokens_seen)
    recorder.finish(model, optimizer, step=steps)   # the final weights, whatever the schedule

A step is the number of optimizer updates done; ``step=0`` records the initialization. On a step
that no schedule names, :meth:`Recorder.step` compares two integers and returns: no copy, no
device synchronization, no file access. On a scheduled one it writes ``checkpoints/step_N/``
atomically (a directory of that name is always complete): the weights as a Hugging Face directory
when the model is a ``PreTrainedModel`` (with the tokenizer, if given), else ``model.safetensors``
of its ``state_dict``; the optimizer's state in the format ``phasescope train`` writes
(``state.safetensors`` with ``optimizer.<parameter name>.<entry>`` tensors, the param groups in
``state.json`` beside the step and tokens), so every measure reads both alike. The training values
given to :meth:`Recorder.log_training` stay on their device until the next checkpoint, where they
become the ``train`` shard's rows (``loss``, ``lr``, ``grad_norm``, ...), as ``phasescope train``
writes them. Inline measures write one metric shard each at their own schedule; their values of
the last measured step are in :attr:`Recorder.last_measured` for a framework's own loggers.

Restarted on the same directory (the user's run resumed from its own checkpoint at step N, and the
first ``step`` call names N), the recorder moves every checkpoint and shard of a step after N into
``superseded/after_step_N/`` and says so in one line: the series then holds one trajectory, and
nothing is deleted. A step already recorded is not written again. Under ``torch.distributed`` only
rank 0 writes; a model wrapped in DDP or ``torch.compile`` is unwrapped, and an FSDP model's full
state is gathered on every rank (a collective, once per scheduled step) and written by rank 0.
DeepSpeed ZeRO-3 is refused.

The record is not a replayable run: it has no data position or generator states, so path
attribution over it takes the straight chord between checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, TypeAdapter, ValidationError
from safetensors.torch import save_file
from torch import Tensor, nn

from phasescope.errors import PhasescopeError
from phasescope.integrations.inline import BuiltinMeasures, InlineMeasure, parse_measures
from phasescope.progress import console
from phasescope.run import MetricStore, RunDir, atomic_directory, config_hash
from phasescope.run.checkpoint import STATE_META_FILE, STATE_TENSORS_FILE, flatten_optimizer_state
from phasescope.run.config import StrictModel
from phasescope.run.series import quiet_transformers
from phasescope.train.distributed import unwrapped
from phasescope.train.schedules import CheckpointSchedule, EverySteps, EveryTokens, ExplicitSteps, LogLinear, is_due

KIND = "recorded"
TRAINING_SHARD = "train"  # the measure name of the loop's own values, as phasescope train names it


class RecorderSchedule:
    """Whether a step is due under a checkpoint schedule, with no step budget (the rule of
    :func:`~phasescope.train.schedules.is_due`); for ``every_tokens`` it remembers the last tokens seen."""

    def __init__(self, schedule: Any, name: str = "schedule") -> None:
        self.schedule = _parse_schedule(schedule, name)
        self.last_tokens: int | None = None

    @property
    def needs_tokens(self) -> bool:
        return isinstance(self.schedule, EveryTokens)

    def due(self, step: int, tokens: int | None = None) -> bool:
        if self.needs_tokens and tokens is None:
            raise PhasescopeError("an every_tokens schedule needs the tokens seen: recorder.step(..., tokens=N), "
                                  "or Recorder(..., tokens_per_step=N)")
        previous = self.last_tokens
        if self.needs_tokens:
            self.last_tokens = tokens
        return is_due(self.schedule, step, tokens, previous)

    def describe(self) -> dict:
        return self.schedule.model_dump(mode="json")


def _parse_schedule(schedule: Any, name: str):
    """A schedule model from: one, a dict, ``"log_linear"``, an int (every N steps) or a list of steps;
    errors name the argument (``schedule`` or ``every``)."""
    if isinstance(schedule, LogLinear | EverySteps | EveryTokens | ExplicitSteps):
        return schedule
    if schedule == "log_linear":
        return LogLinear()
    if isinstance(schedule, bool):
        raise PhasescopeError(f"{name}: expected a schedule, got {schedule!r}")
    if isinstance(schedule, int):
        schedule = {"schedule": "every_steps", "every": schedule}
    elif isinstance(schedule, list | tuple | range):
        schedule = {"schedule": "steps", "steps": list(schedule)}
    try:
        return TypeAdapter(CheckpointSchedule).validate_python(schedule)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise PhasescopeError(f"{name}{'.' + where if where else ''}: {problem['msg']} "
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
    """Checkpoints, training values and inline measures of any training loop (see the module docstring).

    Args:
        out: the run directory (created, or continued when it holds a record with the same settings).
        schedule: checkpoint schedule: ``"log_linear"`` (default), an int (every N steps), a list of
            steps, a dict (``{"schedule": "every_tokens", "tokens": N}``) or a schedule model of
            :mod:`phasescope.train.schedules`.
        measures: inline measures: names of built-in ones, or a dict of name to a callable
            ``callable(model) -> {metric: value} | rows``, or to a built-in's settings (those of
            :mod:`phasescope.integrations.inline`, e.g. ``{"wlt": {"max_concepts": 16}}``), hashed into
            its shards' config. Built in: ``loss`` (the held batch's loss), ``norms`` (l1 and l2 of all
            parameters), ``sharpness`` (top Hessian eigenvalue of the held batch's loss, warm-started from
            the previous one), ``wlt`` (word-level translation of a causal LM, needs ``tokenizer``).
        every: the measures' schedule (same forms as ``schedule``); None: at every checkpoint.
        batch: the held batch of ``loss`` and ``sharpness``: ``(inputs, targets)`` with ``loss_fn``,
            or a dict of model inputs with ``labels`` for a Hugging Face model (its own loss).
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch mean.
        tokenizer: saved into every Hugging Face checkpoint, and used by ``wlt``.
        tokens_per_step: tokens per optimizer step, for steps recorded without ``tokens=``.
        source: who drives the recorder (the callbacks set it).
    """

    def __init__(self, out: str | Path, schedule: Any = "log_linear",
                 measures: Sequence[str] | dict[str, InlineMeasure | dict | None] = (), every: Any = None, *,
                 batch: Any = None, loss_fn: Callable[[Any, Any], Tensor] | None = None, tokenizer=None,
                 tokens_per_step: int | None = None, source: str = "plain") -> None:
        self.out = Path(out)
        self.schedule = RecorderSchedule(schedule)
        self.measure_schedule = RecorderSchedule(every, "every") if every is not None else None
        self.measures, self.settings = parse_measures(measures)
        self.builtin = BuiltinMeasures(batch, loss_fn, tokenizer, self.settings)
        if source == "plain":  # a framework's callback finds the tokenizer in its trainer, before the first step
            self.builtin.check()
        self.tokens_per_step, self.source = tokens_per_step, source
        self.run: RunDir | None = None
        self.last_measured: dict[str, float] = {}  # "measure/metric": value of the last measured step
        self._recorded: set[int] = set()
        self._last_step: int | None = None  # the step last handled on this rank (accumulation repeats it)
        self._first_step: int | None = None
        self._training: list[tuple[int, int | None, dict[str, Any]]] = []  # pending (step, tokens, values)

    @property
    def tokenizer(self):
        return self.builtin.tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer) -> None:
        self.builtin.tokenizer = tokenizer

    @property
    def needs_tokens(self) -> bool:
        """Whether a schedule counts tokens and no ``tokens_per_step`` stands in for them."""
        return self.tokens_per_step is None and (self.schedule.needs_tokens or bool(
            self.measure_schedule and self.measure_schedule.needs_tokens))

    # --- the calls of a training loop ------------------------------------------------------------
    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, step: int,
             tokens: int | None = None) -> bool:
        """Record ``step`` (optimizer updates done so far) if a schedule names it; True if anything was due.

        Nothing is read from ``model`` on a step that no schedule names, nor on a step this rank has
        just handled (a framework that calls once per micro-batch under gradient accumulation).
        """
        return self._record(model, optimizer, step, tokens, final=False)

    def finish(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, step: int,
               tokens: int | None = None) -> None:
        """Record the final ``step`` whatever the schedule (as ``phasescope train`` saves its last step),
        with the training values still pending."""
        self._last_step = None
        self._record(model, optimizer, step, tokens, final=True)

    def log_training(self, step: int, *, tokens: int | None = None, **values: float | Tensor) -> None:
        """Keep the loop's own values of ``step`` (``loss``, ``lr``, ``grad_norm``, any name): floats or
        0-d tensors, left on their device (no synchronization) until the next checkpoint writes them as
        the ``train`` shard's rows."""
        if tokens is None and self.tokens_per_step is not None:
            tokens = step * self.tokens_per_step
        self._training.append((step, tokens, values))

    # --- resume through the frameworks ------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue the schedules exactly (the tokens seen at the last call)
        and the sharpness warm start (None, or the eigenvector)."""
        start = self.builtin.sharpness_start
        if start is not None and not isinstance(start, Tensor):
            start = start.eigenvectors[:, 0]
        return {"last_tokens": self.schedule.last_tokens,
                "measure_last_tokens": self.measure_schedule.last_tokens if self.measure_schedule else None,
                "sharpness_start": None if start is None else start.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.last_tokens = state.get("last_tokens")
        if self.measure_schedule is not None:
            self.measure_schedule.last_tokens = state.get("measure_last_tokens")
        vector = state.get("sharpness_start")
        self.builtin.sharpness_start = None if vector is None else torch.as_tensor(vector)

    # --- recording ----------------------------------------------------------------------------------
    def _record(self, model: nn.Module, optimizer, step: int, tokens: int | None, final: bool) -> bool:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise PhasescopeError(f"step must be a non-negative integer, got {step!r}")
        if not isinstance(model, nn.Module):
            raise PhasescopeError(f"recorder.step(model, optimizer, step=...): model must be a torch.nn.Module, "
                                  f"got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise PhasescopeError(f"recorder.step(model, optimizer, step=...): optimizer must be a "
                                  f"torch.optim.Optimizer or None, got {type(optimizer).__name__}")
        if step == self._last_step:
            return False
        self._last_step = step
        if self._first_step is None:
            self._first_step = step  # where this (possibly resumed) run starts: later records are superseded
        if tokens is None and self.tokens_per_step is not None:
            tokens = step * self.tokens_per_step
        checkpoint = self.schedule.due(step, tokens) or final
        measure = bool(self.measures) and (self.measure_schedule.due(step, tokens) if self.measure_schedule
                                           else checkpoint)
        if not (checkpoint or measure):
            return False
        model = unwrapped(model)
        _refuse_zero3(model)
        if _distributed() and measure and _is_fsdp(model):
            raise PhasescopeError("inline measures of an FSDP model are not supported: record checkpoints only "
                                  "and run `phasescope measure` on them")
        # under torch.distributed every rank gathers at a due checkpoint (collectives for FSDP); rank 0 writes
        gathered = _gathered(model, optimizer) if checkpoint and _distributed() else None
        if _rank() != 0:
            return True
        run = self._open(model, self._first_step)
        if checkpoint and step not in self._recorded:
            self._write_checkpoint(run, model, gathered or _gathered(model, optimizer), step, tokens)
        if checkpoint:
            self._write_training(run)
        if measure:
            self._measure(run, model, step, tokens)
        return True

    def _open(self, model: nn.Module, first_step: int) -> RunDir:
        if self.run is None:
            from phasescope.run import dump_config

            config = RecorderConfig(
                source=self.source, model_format="hf" if _is_pretrained(model) else "safetensors",
                checkpoints=self.schedule.describe(), measures=list(self.measures),
                measure_schedule=self.measure_schedule.describe() if self.measure_schedule else None,
                tokens_per_step=self.tokens_per_step)
            self.run = RunDir.create(self.out, dump_config(config), exist_ok=True)
            folder, moved = self.run.supersede_after(first_step)
            if moved:
                console.print(f"recorder: resumed at step {first_step}; {moved} checkpoints and shards of later steps "
                              f"moved to {folder}", markup=False, highlight=False)
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
                save_file(optimizer_tensors, str(directory / STATE_TENSORS_FILE), metadata={"format": "pt"})
            (directory / STATE_META_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        self._recorded.add(step)

    def _write_training(self, run: RunDir) -> None:
        """The pending training values as one ``train`` shard at the last step they name (one sync)."""
        if not self._training:
            return
        last, tokens, _ = max(self._training, key=lambda entry: entry[0])
        rows = [{"step": at, "tokens": seen, "metric": name, "value": float(value)}
                for at, seen, values in self._training for name, value in values.items() if value is not None]
        MetricStore(run).write_shard(last, TRAINING_SHARD, {"inline": TRAINING_SHARD, "source": self.source},
                                     rows, tokens=tokens)
        self._training = []

    def _measure(self, run: RunDir, model: nn.Module, step: int, tokens: int | None) -> None:
        store = MetricStore(run)
        self.last_measured = {}
        for name, function in self.measures.items():
            config = {"inline": name, "schedule": self.measure_schedule.describe() if self.measure_schedule
                      else "checkpoints", **({"settings": self.settings[name]} if self.settings.get(name) else {})}
            if store.has_shard(step, name, config_hash(config)):  # recorded before a restart
                continue
            if function is None:
                self.builtin.check()
            result = function(model) if function is not None else self.builtin(name, model)
            rows = [{"metric": metric, "value": float(value)} for metric, value in result.items()] \
                if isinstance(result, dict) else list(result)
            store.write_shard(step, name, config, rows, tokens=tokens)
            self.last_measured.update(_flat(name, rows))


def _flat(name: str, rows: list[dict]) -> dict[str, float]:
    """``{"measure/metric": value}`` of rows that name no other dimension (a dashboard's scalars); rows
    with more (a language pair, a layer) are averaged per metric."""
    values: dict[str, list[float]] = {}
    for row in rows:
        values.setdefault(f"{name}/{row['metric']}", []).append(float(row["value"]))
    return {key: sum(group) / len(group) for key, group in values.items()}


def _refuse_zero3(model: nn.Module) -> None:
    if any(hasattr(parameter, "ds_id") for parameter in model.parameters()):
        raise PhasescopeError("DeepSpeed ZeRO-3 partitions the weights and the recorder does not gather them: "
                              "record with ZeRO stage 0-2 or FSDP, or save with the Trainer and load the series")


def _gathered(model: nn.Module, optimizer: torch.optim.Optimizer | None
             ) -> tuple[dict[str, Tensor], dict[str, Tensor], list[dict]]:
    """(full weights, optimizer tensors keyed ``optimizer.<parameter name>.<entry>``, JSON param groups with the
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
    tensors, groups = flatten_optimizer_state(get_optimizer_state_dict(model, optimizer, options=options))
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    return state, tensors, [{key: value for key, value in group.items() if _json_value(value)} for group in groups]


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
