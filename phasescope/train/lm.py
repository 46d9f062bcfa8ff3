"""Causal language-model pretraining with fine-grained checkpoints (study B of DESIGN.md).

A Llama-style model (``phasescope.models.llama``) is trained from scratch on packed batches of a
multilingual corpus with AdamW, a warmup-stable-decay learning rate, weight decay on matrices only,
gradient clipping and bf16 autocast on CUDA (float32 on the CPU), and saved at the steps of a
checkpoint schedule as Hugging Face directories that also hold the exact resume state
(``lm_checkpoint.py``). Started again with the same config on the same run directory, a killed run
continues from its last complete checkpoint and ends with the same weights, bitwise on the CPU, as a
run that was never interrupted. Under ``torchrun`` the same code trains with DDP or FSDP2
(``distributed.py``).

Weight decay (0.01, the reference's) applies to every matrix, the embedding included, and not to the
RMSNorm gains (nor to biases, which Llama has none of): decaying a norm gain pulls a layer's output
scale towards zero without any regularizing benefit, the convention of GPT-3, nanoGPT and OLMo.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import torch
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError
from torch import Tensor, nn

from phasescope.data.controlled_corpus import ControlledCorpus, ControlledCorpusConfig
from phasescope.data.corpora import CorpusConfig, build_corpus
from phasescope.data.mixture import MixtureConfig, PackedStream
from phasescope.data.tokenizer import TokenizerConfig, build_tokenizer, load_tokenizer
from phasescope.device import DeviceName
from phasescope.errors import PhasescopeError
from phasescope.files import read_text_file
from phasescope.models.llama import LlamaModelConfig, build_llama
from phasescope.progress import format_tokens, progress_bar
from phasescope.run import (
    MetricStore,
    RunDir,
    StrictModel,
    atomic_directory,
    atomic_write_text,
    config_hash,
    dump_config,
    remove_stale_temporaries,
)
from phasescope.signals import interrupts_deferred
from phasescope.train.distributed import (
    DistributedConfig,
    DistributedContext,
    full_model_state,
    full_optimizer_state,
    init_distributed,
    load_full_states,
    unwrapped,
    wrap_model,
)
from phasescope.train.lm_checkpoint import read_lm_checkpoint, restore_rng_states, save_lm_checkpoint
from phasescope.train.schedules import (
    CheckpointSchedule,
    LogLinear,
    WSDSchedule,
    check_wsd_fits,
    checkpoint_steps,
    wsd_learning_rate,
)
from phasescope.train.step import build_optimizer, optimizer_step


class LMTrainConfig(StrictModel):
    """Optimization of a language-model run: budget, batch, AdamW, schedule, precision."""

    max_steps: int | None = Field(None, ge=1)  # the step budget; give this or max_tokens
    max_tokens: int | None = Field(None, ge=1)  # the token budget, rounded up to whole steps
    batch_size: int = Field(32, ge=1)  # sequences per optimizer step over all processes (the global batch)
    micro_batch_size: int | None = Field(None, ge=1)  # sequences per forward/backward in one process
    #                                                    (gradient accumulation); None: its whole share at once
    seq_len: int = Field(128, ge=2)  # tokens per packed sequence
    lr: float = Field(1e-3, gt=0)  # the peak learning rate of the WSD schedule
    lr_schedule: WSDSchedule = WSDSchedule()
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW's; 0.95 as in Llama/OLMo pretraining
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.01, ge=0)  # the reference's; on matrices and embeddings, not on norm gains
    grad_clip: float | None = Field(1.0, gt=0)  # max global gradient l2 norm; None: no clipping
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, float32 on the CPU
    compile: bool = False  # torch.compile the model (worth it on GPUs; minutes of compilation)
    optimizer_impl: Literal["fused", "foreach"] = "fused"  # torch's fused AdamW kernel (CPU and CUDA)
    log_every: int = Field(10, ge=1)  # steps between host syncs: progress bar and a tokens/s row;
    #                                   loss, lr and gradient norm are recorded at every step

    @model_validator(mode="after")
    def _one_budget(self) -> LMTrainConfig:
        if (self.max_steps is None) == (self.max_tokens is None):
            raise ValueError("give exactly one of max_steps and max_tokens")
        return self

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def total_steps(self) -> int:
        """The step budget (``max_tokens`` rounded up to whole steps)."""
        if self.max_steps is not None:
            return self.max_steps
        return -(-self.max_tokens // self.tokens_per_step)


class LMRunConfig(StrictModel):
    """A language-model pretraining run: data, tokenizer, model, optimization, checkpoints."""

    kind: Literal["lm"] = "lm"
    seed: int = 0  # the initialization and the data order
    device: DeviceName = "auto"
    data: CorpusConfig = ControlledCorpusConfig()  # `source:` controlled (built-in), local or huggingface
    mixture: MixtureConfig = MixtureConfig()  # how often each language's documents are drawn
    tokenizer: TokenizerConfig = TokenizerConfig()  # trained on the corpus at the start, unless `path:` names one
    model: LlamaModelConfig = LlamaModelConfig()
    train: LMTrainConfig
    checkpoints: CheckpointSchedule = LogLinear()
    distributed: DistributedConfig = DistributedConfig()

    @model_validator(mode="after")
    def _fits(self) -> LMRunConfig:
        max_position = self.model.resolved()["max_position_embeddings"]
        if self.train.seq_len > max_position:
            raise PydanticCustomError("too_long", "train.seq_len ({seq_len}) exceeds the model's "
                                      "max_position_embeddings ({max_position})",
                                      {"seq_len": self.train.seq_len, "max_position": max_position})
        problems = []  # the learning-rate and checkpoint schedules' problems together, in one line
        for check in (lambda: check_wsd_fits(self.train.lr_schedule, self.train.total_steps),
                      lambda: checkpoint_steps(self.checkpoints, self.train.total_steps, self.train.tokens_per_step)):
            try:
                check()
            except PhasescopeError as error:
                problems.append(str(error))
        if problems:
            raise PydanticCustomError("schedule", "; ".join(problems))
        return self


class BatchSource(Protocol):
    """What training draws from (``phasescope.data.mixture.PackedStream``): global batches, exactly resumable."""

    tokens_per_batch: int

    def next_batch(self) -> Tensor:  # (batch_size, seq_len) int64 token ids, the same on every process
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class LMOutcome:
    """How a call to :func:`train_lm` ended."""

    steps: int  # the final step (== the budget)
    tokens: int  # tokens seen at the end
    final_loss: float | None  # the last step's training loss (None if nothing was trained in this call)
    resumed_from: int | None  # the checkpoint step this call started from, if any
    checkpoints: list[int] = field(default_factory=list)  # steps checkpointed by this call


ProgressCallback = Callable[[int, int, dict], None]  # (step, total steps, {"loss", "tokens_per_second"})


@dataclass
class TrainingPlan:
    """The numbers a run needs from its config and the number of processes."""

    max_steps: int
    tokens_per_step: int
    checkpoint_steps: set[int]
    rows_per_process: int
    micro_batches: int

    @classmethod
    def of(cls, config: LMRunConfig, world_size: int) -> TrainingPlan:
        train = config.train
        if train.batch_size % world_size:
            raise PhasescopeError(f"train.batch_size ({train.batch_size}) must be a multiple of the number of "
                                  f"processes ({world_size})")
        rows = train.batch_size // world_size
        micro = train.micro_batch_size or rows
        if rows % micro:
            raise PhasescopeError(f"train.micro_batch_size ({micro}) must divide the rows of each process "
                                  f"(batch_size {train.batch_size} / {world_size} processes = {rows})")
        steps = checkpoint_steps(config.checkpoints, train.total_steps, train.tokens_per_step)
        return cls(train.total_steps, train.tokens_per_step, set(steps), rows, rows // micro)


def train_lm(config: LMRunConfig, run_path: Path | str, on_progress: ProgressCallback | None = None) -> LMOutcome:
    """Train (or resume) a language-model run into ``run_path``; the entry point of ``phasescope train``.

    Everything a user can get wrong is checked before training starts, each as a one-line
    :class:`PhasescopeError`: a run directory holding a different config, a batch that does not split
    over the processes, unknown languages or empty language folders (the corpus), a tokenizer that
    cannot encode a language's script. Under ``torchrun`` every process calls this; rank 0 trains the
    tokenizer and writes files.
    """
    run_path = Path(run_path)
    check_resumable(run_path, config)
    context = init_distributed(config.device, config.distributed)
    try:
        TrainingPlan.of(config, context.world_size)
        corpus = build_corpus(config.data)
        tokenizer, tokenizer_dir = _prepare_tokenizer(config, corpus, run_path, context)
        run = RunDir.open(run_path)
        stream = PackedStream(corpus, tokenizer, config.train.seq_len, config.train.batch_size, config.mixture,
                              config.seed)
        model = build_llama(config.model, len(tokenizer), config.seed, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        return run_training(config, run, model, stream, tokenizer_dir, context, on_progress)
    finally:
        context.close()


def train_lm_with_progress(config: LMRunConfig, run_path: Path | str,
                           at_log_points: Callable[[], None] = lambda: None) -> LMOutcome:
    """:func:`train_lm` with its progress on stderr (steps, tokens, loss, tokens/s, time left), calling
    ``at_log_points()`` at every log point (the demo frees cores there)."""
    with progress_bar("LM steps", config.train.total_steps) as advance:
        shown = [0]

        def on_progress(step: int, total: int, info: dict) -> None:
            at_log_points()
            text = (f"{format_tokens(step * config.train.tokens_per_step)} tokens  loss {info['loss']:.3f}  "
                    f"{info['tokens_per_second']:,.0f} tok/s" if info else "")
            advance(step - shown[0], info=text)
            shown[0] = step

        return train_lm(config, run_path, on_progress=on_progress)


def check_resumable(run_path: Path, config: LMRunConfig) -> None:
    """A run directory that exists must hold this very config (then it is resumed).

    Raises:
        PhasescopeError: naming the fields that differ, e.g. ``train.lr: 0.001 -> 0.002``.
    """
    run = RunDir(run_path)
    if not run.config_path.is_file():
        return
    saved = run.read_config_dict()
    current = config.model_dump(mode="json")
    if saved != current:
        changes = _differences(saved, current)
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise PhasescopeError(f"{run_path} holds a run with a different config ({shown}); expected the same "
                              "config to resume it, or a new run directory (--out)")


def _differences(saved: object, current: object, prefix: str = "") -> list[str]:
    """Dotted paths where two config dicts differ, as ``path: saved -> current``."""
    if isinstance(saved, dict) and isinstance(current, dict):
        changes = []
        for key in list(saved) + [k for k in current if k not in saved]:
            changes += _differences(saved.get(key, "(absent)"), current.get(key, "(absent)"), f"{prefix}{key}.")
        return changes
    if saved != current:
        return [f"{prefix.rstrip('.')}: {saved!r} -> {current!r}"]
    return []


def _prepare_tokenizer(config: LMRunConfig, corpus, run_path: Path, context: DistributedContext):
    """The run's tokenizer, saved in ``<run>/tokenizer/``: loaded from there when resuming, else built
    (trained on the corpus, or loaded from ``tokenizer.path``) and coverage-checked by rank 0, which
    then creates the run directory (``config.yaml``) and saves it atomically."""
    tokenizer_dir = run_path / "tokenizer"
    if context.is_main:
        if run_path.is_dir():
            remove_stale_temporaries(run_path)  # leftovers of a killed run: no writer is active now
        if not tokenizer_dir.is_dir():
            tokenizer = build_tokenizer(config.tokenizer, corpus)
            RunDir.create(run_path, dump_config(config), exist_ok=True)
            _save_corpus_vocabulary(corpus, run_path)
            with atomic_directory(tokenizer_dir) as directory:
                tokenizer.save_pretrained(directory)
    context.barrier()
    return load_tokenizer(tokenizer_dir), tokenizer_dir


def _save_corpus_vocabulary(corpus, run_path: Path) -> None:
    """For the controlled corpus: its lexicon (``data/lexicon.parquet``) and the concepts it holds out of
    every bilingual signal (``data/heldout_concepts.json``), which the translation measures read."""
    if not isinstance(corpus, ControlledCorpus):
        return
    corpus.lexicon.save(run_path / "data" / "lexicon.parquet")
    atomic_write_text(run_path / "data" / "heldout_concepts.json", json.dumps(list(corpus.heldout_concepts)) + "\n")


def config_kind(path: Path | str) -> str:
    """The ``kind:`` of a run config file (``gd`` when absent, as in GD configs); errors come later,
    from validating the whole file."""
    import yaml

    try:
        data = yaml.safe_load(read_text_file(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return "gd"  # load_config reports the problem with the file
    return str(data.get("kind", "gd")) if isinstance(data, dict) else "gd"


def run_training(config: LMRunConfig, run: RunDir, model: nn.Module, stream: BatchSource, tokenizer_dir: Path,
                 context: DistributedContext, on_progress: ProgressCallback | None = None) -> LMOutcome:
    """Train ``model`` on ``stream`` into ``run``, resuming from its last complete checkpoint if any.

    Args:
        config: the run's config (its ``train``, ``checkpoints`` and ``distributed`` sections are used).
        run: the run directory (created by the caller, with ``config.yaml``).
        model: a freshly built Hugging Face causal LM, float32 on the CPU (seeded initialization).
        stream: global batches ``(batch_size, seq_len)``, the same sequence on every process.
        tokenizer_dir: the run's saved tokenizer, copied into every checkpoint.
        context: this process's place in the launch (:func:`init_distributed`).
        on_progress: called on the main process as ``on_progress(step, total, info)`` at every log point.
    """
    plan = TrainingPlan.of(config, context.world_size)
    train = config.train
    if stream.tokens_per_batch != plan.tokens_per_step:
        raise PhasescopeError(f"the batch stream yields {stream.tokens_per_batch} tokens per batch; the config "
                              f"asks for batch_size x seq_len = {plan.tokens_per_step}")
    device = context.device
    model = model.to(device)
    if train.compile:
        model.compile()  # in place: parameter names (and so checkpoints) stay those of the plain model
    trained = wrap_model(model, context, config.distributed.strategy)
    optimizer = build_optimizer(trained, train)
    step, resumed_from = 0, None
    torch.manual_seed(config.seed)  # the generators' state is part of the run (restored below when resuming)
    latest = run.latest_checkpoint()
    if latest is not None:
        saved = read_lm_checkpoint(latest.path)
        if saved.meta.get("config_hash") != config_hash(config):
            raise PhasescopeError(f"{latest.path} was written by a different config; expected this run's "
                                  "config to resume (choose a new run directory)")
        load_full_states(trained, optimizer, saved.model_state, saved.optimizer_state, context)
        restore_rng_states(saved.rng_states)
        stream.load_state_dict(saved.meta["data"])
        step = resumed_from = saved.step
        del saved
    outcome = LMOutcome(steps=step, tokens=step * plan.tokens_per_step, final_loss=None, resumed_from=resumed_from)
    if context.is_main and on_progress is not None:
        on_progress(step, plan.max_steps, {})
    recorder = _TrainingLog(plan.tokens_per_step, context)
    if latest is None and 0 in plan.checkpoint_steps:
        _checkpoint(config, run, trained, optimizer, stream, tokenizer_dir, context, recorder, step, plan)
        outcome.checkpoints.append(step)
    rows_of_process = slice(context.rank * plan.rows_per_process, (context.rank + 1) * plan.rows_per_process)
    parameters = [p for p in trained.parameters() if p.requires_grad]
    recorder.start_timer(step)
    while step < plan.max_steps:
        lr = wsd_learning_rate(step, train.lr, plan.max_steps, train.lr_schedule)
        batch = stream.next_batch()[rows_of_process].to(device, non_blocking=True)
        loss, grad_norm = optimizer_step(trained, optimizer, parameters, batch, lr, plan.micro_batches, train)
        recorder.add(step, lr, loss, grad_norm)
        step += 1
        if step % train.log_every == 0 or step in plan.checkpoint_steps:
            info = recorder.flush(step)
            outcome.final_loss = info["loss"]
            if context.is_main and on_progress is not None:
                on_progress(step, plan.max_steps, info)
        if step in plan.checkpoint_steps:
            _checkpoint(config, run, trained, optimizer, stream, tokenizer_dir, context, recorder, step, plan)
            outcome.checkpoints.append(step)
            recorder.start_timer(step)  # tokens/s measures training, not checkpoint writing
    outcome.steps, outcome.tokens = step, step * plan.tokens_per_step
    return outcome


class _TrainingLog:
    """Per-step loss, lr and gradient norm kept as device tensors, synced to the host at log points."""

    def __init__(self, tokens_per_step: int, context: DistributedContext) -> None:
        self.tokens_per_step = tokens_per_step
        self.context = context
        self.pending: list[tuple[int, float, Tensor, Tensor]] = []
        self.rows: list[dict] = []  # rows since the last checkpoint: the next `train` shard
        self.last: dict = {}
        self._timer_step, self._timer_start = 0, time.perf_counter()

    def start_timer(self, step: int) -> None:
        self._timer_step, self._timer_start = step, time.perf_counter()

    def add(self, step: int, lr: float, loss: Tensor, grad_norm: Tensor) -> None:
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
            grad_norm = grad_norm.full_tensor()
        self.pending.append((step, lr, loss, grad_norm))

    def flush(self, step: int) -> dict:
        """Sync the pending steps (the loss averaged over processes), append their rows, time them."""
        losses = self.context.mean(torch.stack([loss for _, _, loss, _ in self.pending])).tolist()
        norms = torch.stack([norm for *_, norm in self.pending]).tolist()
        for (at, lr, _, _), loss, norm in zip(self.pending, losses, norms):
            tokens = at * self.tokens_per_step
            self.rows += [{"step": at, "tokens": tokens, "metric": "loss", "value": loss},
                          {"step": at, "tokens": tokens, "metric": "lr", "value": lr},
                          {"step": at, "tokens": tokens, "metric": "grad_norm", "value": norm}]
        elapsed = time.perf_counter() - self._timer_start
        throughput = (step - self._timer_step) * self.tokens_per_step / max(elapsed, 1e-9)
        self.rows.append({"step": step, "tokens": step * self.tokens_per_step, "metric": "tokens_per_second",
                          "value": throughput})
        self.last = {"loss": losses[-1], "lr": self.pending[-1][1], "grad_norm": norms[-1],
                     "tokens_per_second": throughput}
        self.pending.clear()
        self.start_timer(step)
        return self.last


def _checkpoint(config: LMRunConfig, run: RunDir, trained: nn.Module, optimizer: torch.optim.Optimizer,
                stream: BatchSource, tokenizer_dir: Path, context: DistributedContext, recorder: _TrainingLog,
                step: int, plan: TrainingPlan) -> None:
    """The `train` metric shard of the steps since the last checkpoint, then the checkpoint of ``step``.

    The shard goes first: killed between the two, the resumed run retrains those steps and finds
    their shard already there (the same values, as training is deterministic), so no row is lost.
    Every process takes part in gathering the states; rank 0 writes. A Ctrl-C or SIGTERM that arrives
    meanwhile is held until the checkpoint is published (see :mod:`phasescope.signals`).
    """
    with interrupts_deferred():
        _gather_and_write_checkpoint(config, run, trained, optimizer, stream, tokenizer_dir, context, recorder,
                                     step, plan)


def _gather_and_write_checkpoint(config: LMRunConfig, run: RunDir, trained: nn.Module,
                                 optimizer: torch.optim.Optimizer, stream: BatchSource, tokenizer_dir: Path,
                                 context: DistributedContext, recorder: _TrainingLog, step: int,
                                 plan: TrainingPlan) -> None:
    model_state = full_model_state(trained, context)
    optimizer_state = full_optimizer_state(trained, optimizer, context)
    if context.is_main:
        tokens = step * plan.tokens_per_step
        if recorder.rows:
            MetricStore(run).write_shard(step, "train", config.train, recorder.rows, tokens=tokens)
        next_lr = (wsd_learning_rate(step, config.train.lr, plan.max_steps, config.train.lr_schedule)
                   if step < plan.max_steps else None)
        meta = {"step": step, "tokens": tokens, "loss": recorder.last.get("loss"),
                "scheduler": {"name": "wsd", "step": step, "next_lr": next_lr},
                "data": stream.state_dict(), "config_hash": config_hash(config),
                "complete": step == plan.max_steps,
                "trained_on": {"device": context.device.type, "processes": context.world_size}}
        save_lm_checkpoint(run, unwrapped(trained), model_state, optimizer_state, tokenizer_dir, meta)
    recorder.rows.clear()
    context.barrier()
