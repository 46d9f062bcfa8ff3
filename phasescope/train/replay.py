"""The training path between two checkpoints, replayed after the fact.

Every checkpoint of a ``phasescope train`` language-model run carries the exact resume state: AdamW's
moments, the generators' states and the data stream's position. :func:`replay_steps` starts from the
checkpoint at ``from_step`` and re-runs the optimizer steps up to ``to_step`` through the training
loop's own step (:func:`phasescope.train.step.optimizer_step`), yielding for each step the parameters
before and after it, its batch and where each of the batch's tokens came from. On the CPU the replayed
parameters equal the saved ones bitwise at every checkpoint the replay passes; a replay that does not
reach them (a changed corpus, another device, a run trained on several processes) is stopped with a
one-line error naming the run and the step.

Splitting a step by data (:mod:`phasescope.train.data_split`) gives each step's update as an exact
sum of parts: weight decay, the momentum carried in from before, and one part per data label.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn

from phasescope.data.corpora import build_corpus
from phasescope.data.mixture import PackedStream, Source
from phasescope.data.tokenizer import load_tokenizer
from phasescope.device import free_memory, resolve_device
from phasescope.errors import PhasescopeError
from phasescope.models.llama import build_llama
from phasescope.run import RunDir, config_hash, validate_config
from phasescope.run.checkpoint import STATE_META_FILE, STATE_TENSORS_FILE, read_json_object, read_safetensors
from phasescope.train.data_split import (
    BEFORE_PART,
    DATA_DIMENSIONS,
    WEIGHT_DECAY_PART,
    DataDimension,
    DataSplit,
    DocumentKinds,
    check_part,
    data_parts,
)
from phasescope.train.distributed import DistributedContext, load_full_states
from phasescope.train.lm import LMRunConfig, TrainingPlan
from phasescope.train.lm_checkpoint import has_resume_state, read_lm_checkpoint, restore_rng_states, rng_states
from phasescope.train.schedules import wsd_learning_rate
from phasescope.train.step import build_optimizer, clip_coefficient, optimizer_step


@dataclass
class ReplayStep:
    """One replayed optimizer step ``step -> step + 1``.

    Attributes:
        step: the step count before the update.
        lr: its learning rate.
        loss: the batch's mean training loss.
        batch: the (batch_size, seq_len) token ids.
        sources: where the batch's tokens came from, row-major, run-length by document.
        kinds: the kind of each source's document (``glossary``, ``parallel``, ... for the controlled
            corpus; ``text`` where a corpus does not tell kinds apart; ``unknown`` if not recorded).
        before, after: the parameters (by name, tied ones once) before and after the update; ``after``
            is the replay's live model state: read it, do not change it.
        update_parts: when the replay splits by data, the update as a sum of parts (label -> parameter
            name -> tensor): ``weight_decay``, ``before`` and ``<dimension>=<value>`` per dimension
            asked for (each dimension's labels, with the two others, sum to the update on their own).
    """

    step: int
    lr: float
    loss: float
    batch: Tensor
    sources: list[Source]
    kinds: list[str]
    before: dict[str, Tensor]
    after: dict[str, Tensor]
    update_parts: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    @property
    def update(self) -> dict[str, Tensor]:
        return {name: self.after[name] - self.before[name] for name in self.before}

    def split_residual(self, dimension: str) -> float:
        """max |update - sum of one dimension's parts| over all parameters (float rounding; 0 if not split)."""
        labels = [label for label in self.update_parts if label.startswith(f"{dimension}=")]
        if not labels:
            return 0.0
        worst = 0.0
        for name, before in self.before.items():
            total = self.update_parts[WEIGHT_DECAY_PART][name].double() + self.update_parts[BEFORE_PART][name].double()
            for label in labels:
                total = total + self.update_parts[label][name].double()
            worst = max(worst, float((self.after[name].double() - before.double() - total).abs().max()))
        return worst


@dataclass
class _ReplaySetup:
    config: LMRunConfig
    run: RunDir
    model: nn.Module
    optimizer: torch.optim.AdamW
    stream: PackedStream
    plan: TrainingPlan
    checkpoints: list[int]  # saved steps in (from_step, to_step]
    rng_states: dict[str, Tensor]


def replay_steps(run_path: Path | str, from_step: int, to_step: int, split_by: Sequence[DataDimension] = (),
                 device: str = "cpu", tolerance: float = 0.0,
                 leave_out: Sequence[tuple[DataDimension, str]] = ()) -> Iterator[ReplayStep]:
    """Re-run the optimizer steps of a language-model run from checkpoint ``from_step`` to ``to_step``.

    Args:
        run_path: a ``phasescope train`` run directory.
        from_step, to_step: two of its checkpoints, ``from_step < to_step``.
        split_by: data dimensions (``language``, ``kind``) to split each update by (see the module
            docstring); empty: no split, no extra work.
        device: where to replay; bitwise equality to the saved checkpoints holds on the CPU.
        tolerance: the largest |difference| from a saved checkpoint that the replay accepts (0:
            bitwise). A run trained on a GPU or several processes replays within a tolerance only.
        leave_out: ``(dimension, value)`` pairs, e.g. ``[("kind", "glossary")]``: the counterfactual replay,
            in which the tokens of those parts of the data are left out of every step's loss (weight 0, the
            loss still divided by all the batch's predicted tokens), all else as in training: the same
            batches in the same order, the same state at ``from_step``. A step whose batch predicts no
            such token is training's step, bitwise; once a step differs, checkpoints are not compared.

    Yields:
        A :class:`ReplayStep` per step, in order. Every checkpoint passed is compared with the replay.

    Raises:
        PhasescopeError: the run has no resume state, a checkpoint is missing, the config changed since
            training, or the replay misses a saved checkpoint (each naming the run and the step).
    """
    if split_by and leave_out:
        raise PhasescopeError("a replay either splits the update by data or leaves data out, not both")
    unknown = [dimension for dimension in split_by if dimension not in DATA_DIMENSIONS]
    if unknown:
        raise PhasescopeError(f"split_by: unknown data dimension {unknown[0]!r}; expected one of "
                              f"{', '.join(DATA_DIMENSIONS)}")
    setup = _prepare(Path(run_path), from_step, to_step, device)
    for dimension, value in leave_out:
        check_part(setup.stream.corpus, dimension, value)
    return _replay(setup, from_step, to_step, tuple(dict.fromkeys(split_by)), tolerance, leave_out)


def saved_weight_files(run_path: Path | str, step: int) -> list[Path]:
    """The weight file of a run's checkpoint (the optimizer state beside it is not weights)."""
    path = RunDir(Path(run_path)).checkpoint_dir(step) / "model.safetensors"
    if not path.is_file():
        raise PhasescopeError(f"{path}: no such checkpoint weights")
    return [path]


def _checked_config(run_path: Path, from_step: int, to_step: int) -> tuple[RunDir, LMRunConfig, list[int]]:
    hint = "; use path: chord"
    config_path = run_path / "config.yaml"
    if not config_path.is_file():
        raise PhasescopeError(f"{run_path}: not a phasescope training run (no config.yaml), so it has no resume "
                              f"state to replay{hint}")
    run = RunDir(run_path)
    data = run.read_config_dict()
    if data.get("kind") != "lm":
        raise PhasescopeError(f"{run_path}: replay needs a language-model run (kind: lm), got kind "
                              f"{data.get('kind', 'gd')!r}{hint}")
    if not 0 <= from_step < to_step:
        raise PhasescopeError(f"replay needs 0 <= from_step < to_step, got {from_step} and {to_step}")
    saved = [info.step for info in run.list_checkpoints()]
    for step in (from_step, to_step):
        if step not in saved:
            raise PhasescopeError(f"{run_path}: no checkpoint at step {step} (a gap in the checkpoint chain; it has "
                                  f"{_steps_text(saved)}){hint}")
    start = run.checkpoint_dir(from_step)
    if not has_resume_state(start):
        raise PhasescopeError(f"{start}: no resume state (optimizer, data position) to replay from{hint}")
    config = validate_config(data, LMRunConfig, source=str(config_path))
    return run, config, [step for step in saved if from_step < step <= to_step]


def trained_on(run_path: Path | str, step: int) -> tuple[str, int]:
    """(device type, processes) that trained a run up to checkpoint ``step``: from its ``state.json``, or
    for a checkpoint written before that was kept, ``cuda`` where it saved CUDA generator states."""
    path = RunDir(Path(run_path)).checkpoint_dir(step)
    recorded = read_json_object(path / STATE_META_FILE).get("trained_on")
    if isinstance(recorded, dict):
        return str(recorded.get("device", "cpu")), int(recorded.get("processes", 1))
    with safe_open(str(path / STATE_TENSORS_FILE), "pt") as handle:
        return ("cuda" if any(key.startswith("rng.cuda.") for key in handle.keys()) else "cpu"), 1


def replay_device(run_path: Path | str, from_step: int, to_step: int, tolerance: float = 0.0) -> str:
    """The device a replay of the interval runs on: the one the run trained on. Raises the one-line error
    (ending with the hint to take the chord) where the replay could not be verified here.

    A run trained on several processes (DDP or FSDP, each on its rows of the same batch) is replayed in
    one process over all the batch's micro-batches: the same mean gradient summed in another order, so
    equal to training within float rounding and not bitwise; it needs a ``tolerance`` > 0.
    """
    _checked_config(Path(run_path), from_step, to_step)
    device, processes = trained_on(run_path, from_step)
    if processes > 1 and tolerance == 0:
        raise PhasescopeError(f"{run_path}: trained on {processes} processes; its replay in one process sums the "
                              "same micro-batches in another order (equal within float rounding, not bitwise): set "
                              "replay_tolerance (e.g. 1e-5) to replay it, or use path: chord")
    if device == "cuda" and not torch.cuda.is_available():
        raise PhasescopeError(f"{run_path}: trained on a GPU, and this machine has none to replay it on; "
                              "use path: chord")
    return device


def replay_state_bytes(parameters, labels: int) -> int:
    """What a replay holds, in bytes: the weights, their gradients, AdamW's two moments and the step's
    starting point, and per data label a momentum and a gradient: ``(5 + 2 labels) x |theta|``."""
    return (5 + 2 * labels) * sum(p.numel() * p.element_size() for p in parameters)


def check_replay_memory(needed: int, device: torch.device, labels: int) -> None:
    """Refuse, in one line, a replay whose state will not fit in the device's free memory."""
    free = free_memory(device)
    if free is not None and needed > free:
        raise PhasescopeError(f"the replay needs {needed / 2**30:.2f} GiB ((5 + 2 x {labels} data labels) x the "
                              f"weights) and {device.type} has {free / 2**30:.2f} GiB free: split by fewer data "
                              "dimensions (data: [language] or [kind], or none), or replay on a larger machine")


def _steps_text(steps: list[int]) -> str:
    if not steps:
        return "none"
    return ", ".join(map(str, steps)) if len(steps) <= 6 else f"{steps[0]}, {steps[1]}, ..., {steps[-1]}"


def _prepare(run_path: Path, from_step: int, to_step: int, device_name: str) -> _ReplaySetup:
    run, config, checkpoints = _checked_config(run_path, from_step, to_step)
    saved = read_lm_checkpoint(run.checkpoint_dir(from_step))
    if saved.meta.get("config_hash") != config_hash(config):
        raise PhasescopeError(f"{run.checkpoint_dir(from_step)} was written by another config than {run_path}'s "
                              "config.yaml (the config changed since training); use path: chord")
    device = resolve_device(device_name)
    tokenizer = load_tokenizer(run_path / "tokenizer")
    stream = PackedStream(build_corpus(config.data), tokenizer, config.train.seq_len, config.train.batch_size,
                          config.mixture, config.seed)
    stream.load_state_dict(saved.meta["data"])
    model = build_llama(config.model, len(tokenizer), config.seed, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).to(device)
    optimizer = build_optimizer(model, config.train)
    context = DistributedContext(rank=0, world_size=1, local_rank=0, device=device)
    load_full_states(model, optimizer, saved.model_state, saved.optimizer_state, context)
    return _ReplaySetup(config, run, model, optimizer, stream, TrainingPlan.of(config, 1), checkpoints,
                        saved.rng_states)


def _replay(setup: _ReplaySetup, from_step: int, to_step: int, split_by: tuple[str, ...],
            tolerance: float, leave_out: Sequence[tuple[str, str]] = ()) -> Iterator[ReplayStep]:
    config, model, optimizer, stream = setup.config, setup.model, setup.optimizer, setup.stream
    train = config.train
    named = dict(model.named_parameters())  # tied parameters once
    parameters = [p for p in named.values() if p.requires_grad]
    kinds = DocumentKinds(setup.stream.corpus)
    labels = sum(len(data_parts(stream.corpus, dimension)) + 1 for dimension in split_by)  # + "unknown"
    check_replay_memory(replay_state_bytes(named.values(), labels), next(model.parameters()).device, labels)
    splitter = DataSplit(model, optimizer, named, kinds, split_by, train) if split_by else None
    labeller = DataSplit(model, optimizer, named, kinds, (), train) if leave_out else None
    deviated = False  # a step of the counterfactual replay left tokens out: the checkpoints are no longer reached
    caller_rng = rng_states()
    restore_rng_states(setup.rng_states)
    try:
        for step in range(from_step, to_step):
            lr = wsd_learning_rate(step, train.lr, setup.plan.max_steps, train.lr_schedule)
            batch = stream.next_batch().to(next(model.parameters()).device)
            sources = list(stream.last_sources)
            before = {name: p.detach().clone() for name, p in named.items()}
            if splitter:
                splitter.start_step(batch, sources, setup.plan.micro_batches)
            weights = labeller.kept_tokens(sources, batch.shape, leave_out) if labeller else None
            deviated = deviated or weights is not None
            loss, grad_norm = optimizer_step(model, optimizer, parameters, batch, lr, setup.plan.micro_batches, train,
                                             token_weights=weights, observer=splitter)
            parts = (splitter.update_parts(splitter.label_gradients, before, lr,
                                           clip_coefficient(float(grad_norm), train.grad_clip)) if splitter else {})
            after = {name: p.detach() for name, p in named.items()}
            if step + 1 in setup.checkpoints and not deviated:
                _check_against_checkpoint(setup.run, step + 1, after, tolerance)
            yield ReplayStep(step, lr, float(loss), batch, sources, [kinds(source) for source in sources], before,
                             after, parts)
    finally:
        restore_rng_states(caller_rng)


def _check_against_checkpoint(run: RunDir, step: int, parameters: dict[str, Tensor], tolerance: float) -> None:
    saved = read_safetensors(run.checkpoint_dir(step) / "model.safetensors")
    worst, where = 0.0, ""
    for name, value in parameters.items():
        if name not in saved:
            continue  # a tied parameter, saved under its other name
        difference = float((value.detach().cpu().double() - saved[name].double()).abs().max())
        if difference > worst:
            worst, where = difference, name
    if worst > tolerance:
        exact = "bitwise" if tolerance == 0 else f"within {tolerance:g}"
        raise PhasescopeError(f"{run.path}: the replay does not reach the saved checkpoint at step {step} {exact} "
                              f"(max |difference| {worst:.3g} in {where}): the corpus, device or process count "
                              "differ from training's; use path: chord")
