"""``phasescope demo``: both studies end to end on the built-in data, offline, on a laptop CPU.

Study B: a tiny Llama pretrained on the built-in nine-language controlled corpus with dense
checkpoints, then every registered study-B measure across them (the cheap ones at every
checkpoint, the mechanism ones at every few). Study A: the digits learning-rate sweep (eta_c and
the regimes) and a diagonal-linear-network sweep with the theory figure. Then the HTML report and
the headline numbers.

Everything goes into one demo directory (``runs/demo``, ``runs/demo-quick`` for ``--quick``)::

    runs/demo/config.yaml              kind: demo (which sub-runs hold which study)
    runs/demo/lm/                      the LM run: checkpoints, training log, measure shards
    runs/demo/digits-mlp-mse/          the digits sweep
    runs/demo/sparse-regression-diagonal/
    runs/demo/report/index.html        the page

Run again, it resumes: training from its last checkpoint, measures from the missing shards; finished
sweeps are kept.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from phasescope.device import resolve_device
from phasescope.errors import PhasescopeError
from phasescope.execute import UnitOutcome, plan_measures, run_measures
from phasescope.measures.registry import available_measures
from phasescope.progress import console, progress_bar
from phasescope.report.index import DemoConfig, ReportResult, write_report
from phasescope.run import RunDir, dump_config, merge_config, validate_config
from phasescope.run.series import open_series
from phasescope.train.lm import train_lm_with_progress

# configs/multilingual-tiny.yaml (a test keeps them equal): within its 2.7M tokens the tiny Llama first
# copies the WLT prompt's source word, then translates the seen concepts; the quick size trains a fraction.
LM_CONFIG = {
    "kind": "lm", "seed": 0, "device": "auto",
    "data": {"source": "controlled", "languages": ["en", "de", "fr", "es", "tr", "ru", "ar", "zh", "ja"],
             "concepts_per_category": 3, "repetition_rate": 0.8, "sentences_per_document": [4, 10],
             "code_switch_rate": 0.05, "glossary_rate": 0.5, "glossary_lines": [6, 12], "untranslated_rate": 0.6},
    "mixture": {},
    "tokenizer": {"vocab_size": 2048, "documents_per_language": 1000},
    "model": {"preset": "tiny"},  # 4 layers x 128, 4 heads, tied embeddings
    "train": {"max_steps": 1300, "batch_size": 16, "seq_len": 128, "lr": 0.003,
              "lr_schedule": {"warmup_steps": 50, "decay_fraction": 0.2, "min_lr_ratio": 0.1},
              "weight_decay": 0.01, "grad_clip": 1.0, "log_every": 10},
    "checkpoints": {"schedule": "log_linear", "log_until": 256, "every": 25},
}
# configs/digits-mlp-mse.yaml: an MLP on scikit-learn's digits, 16 rates around its eta_c
DIGITS_SWEEP = {
    "kind": "sweep", "seeds": [0], "device": "auto", "data": {"name": "digits", "train_size": 300},
    "model": {"arch": "mlp", "depth": 2, "width": 64, "activation": "tanh"}, "loss": "mse",
    "lrs": {"min": 0.025, "max": 0.6, "num": 16, "spacing": "log"},
    "train": {"max_steps": 5000, "loss_threshold": 0.1, "record_every": 50, "sharpness_every": 250,
              "sharpness_tol": 0.001, "checkpoint_every": 1000},
    "flow": {"sharpness_every": 1}, "vectorized": True,
}
# configs/sparse-regression-diagonal.yaml: beta = w * w on sparse regression, the theory figure
DIAGONAL_SWEEP = {
    "kind": "sweep", "seeds": [0], "device": "auto",
    "data": {"name": "sparse_regression", "n_train": 30, "n_test": 1000, "dim": 100, "sparsity": 5, "noise": 0.5,
             "positive": True},
    "model": {"arch": "diagonal", "parameterization": "ww", "alpha": 0.1}, "loss": "mse",
    "lrs": {"min": 0.05, "max": 0.9, "num": 16, "spacing": "log"},
    "train": {"max_steps": 20000, "loss_threshold": 0.0001, "record_every": 100, "sharpness_every": 1000,
              "sharpness_tol": 0.0001, "checkpoint_every": 5000},
    "flow": {"sharpness_every": 1}, "vectorized": True,
}
DIGITS_RUN, DIAGONAL_RUN, LM_RUN = "digits-mlp-mse", "sparse-regression-diagonal", "lm"


@dataclass(frozen=True)
class MeasureStage:
    """Measures run over a selection of the LM's checkpoints, with config overrides (``--set`` form)."""

    measures: tuple[str, ...]
    checkpoints: str  # a checkpoint selection: all, every:N, ...
    settings: tuple[str, ...] = ()
    concepts: int | None = None  # concepts per translation direction (max_concepts) where a measure has it


@dataclass(frozen=True)
class DemoSize:
    """How big each part of the demo is."""

    name: str
    lm: dict  # deep-merged into LM_CONFIG
    stages: tuple[MeasureStage, ...]
    digits: dict  # deep-merged into DIGITS_SWEEP
    diagonal: dict  # deep-merged into DIAGONAL_SWEEP


BEHAVIOUR = ("wlt", "logit_lens")  # one forward pass per prompt batch serves both
QUALITY = ("lm_quality", "minimal_pairs")
MECHANISMS = ("surface_similarity", "layer_swap")
ABLATIONS = ("scaling", "head_ablation", "lm_sharpness")
# path attribution along the chord (4 points) on a thin selection, and along the replayed training path
# (split by kind of document) on the intervals where translation starts (~0.82M tokens: step 400)
CHORD = ("path_attribution.path=chord", "path_attribution.points=4")
REPLAY = ("path_attribution.path=replay", "path_attribution.data=[kind]")

SIZES = {
    # 62 checkpoints: translation at every one, the rest on a thinner selection that still brackets the
    # transition (steps ~800-1000), within the 15-minute budget on 2 cores
    "full": DemoSize(
        "full", lm={},
        stages=(MeasureStage(BEHAVIOUR, "all"),
                MeasureStage(QUALITY, "every:2"),
                MeasureStage(MECHANISMS, "every:4", concepts=8),
                MeasureStage(("path_attribution",), "every:8,400,425", CHORD, concepts=4),
                MeasureStage(("path_attribution",), "400,425", REPLAY, concepts=4),
                MeasureStage(ABLATIONS, "first,800,1000,last", ("scaling.factors=[0.0]",), concepts=4)),
        digits={}, diagonal={},
    ),
    # 11 checkpoints of a 60-step run: every measure and figure, no translation yet
    "quick": DemoSize(
        "quick",
        lm={"tokenizer": {"documents_per_language": 200},
            "train": {"max_steps": 60, "lr_schedule": {"warmup_steps": 6}},
            "checkpoints": {"log_until": 16, "every": 10}},  # 0, 1, 2, 4, 8, 10, 16, 20, ..., 60: 12
        stages=(MeasureStage(BEHAVIOUR + QUALITY, "all", ("minimal_pairs.pairs_per_template=1",), concepts=4),
                MeasureStage(MECHANISMS + ("path_attribution",), "every:3", CHORD, concepts=4),
                MeasureStage(("path_attribution",), "last", REPLAY, concepts=4),
                MeasureStage(ABLATIONS, "last", ("scaling.factors=[0.0]", "head_ablation.layers=[1]"), concepts=4)),
        # without the flow's second, finer integration (the full demo checks s_GF with it)
        digits={"data": {"train_size": 150}, "lrs": {"num": 8}, "train": {"max_steps": 2000},
                "flow": {"refinement_check": False}},
        diagonal={"lrs": {"num": 8}, "train": {"max_steps": 6000}, "flow": {"refinement_check": False}},
    ),
}


@dataclass
class DemoResult:
    """The demo's report, the wall time of each stage and what went wrong along the way."""

    out: Path
    report: ReportResult
    seconds: dict[str, float] = field(default_factory=dict)
    failures: list[UnitOutcome] = field(default_factory=list)
    skipped_measures: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0  # study A runs beside study B: less than the sum of the stages


def default_demo_dir(quick: bool = False) -> Path:
    return Path("runs") / ("demo-quick" if quick else "demo")


def demo_configs(size: DemoSize, device: str = "auto"):
    """The validated (LM, digits sweep, diagonal sweep) configs of a demo size."""
    from phasescope.train.lm import LMRunConfig
    from phasescope.train.sweep import SweepConfig

    lm = validate_config(merge_config(LM_CONFIG, {**size.lm, "device": device}), LMRunConfig,
                         source=f"demo {size.name} LM")
    digits = validate_config(merge_config(DIGITS_SWEEP, {**size.digits, "device": device}), SweepConfig,
                             source=f"demo {size.name} digits sweep")
    diagonal = validate_config(merge_config(DIAGONAL_SWEEP, {**size.diagonal, "device": device}), SweepConfig,
                               source=f"demo {size.name} diagonal sweep")
    return lm, digits, diagonal


def run_demo(out: Path | str | None = None, quick: bool = False, device: str = "auto",
             log: Callable[[str], None] = console.print) -> DemoResult:
    """Run the whole demo into ``out`` (default ``runs/demo`` or ``runs/demo-quick``) and write its report."""
    begun = time.perf_counter()
    size = SIZES["quick" if quick else "full"]
    out = Path(out) if out is not None else default_demo_dir(quick)
    resolve_device(device)  # no GPU for --device cuda: said before any process starts or folder is made
    lm_config, digits_config, diagonal_config = demo_configs(size, device)
    demo = RunDir.create(out, dump_config(DemoConfig(quick=quick, study_b=LM_RUN, study_a=[DIGITS_RUN, DIAGONAL_RUN])),
                         exist_ok=True)
    plans, skipped = _measure_plans(size)  # every name and value checked before any work
    seconds: dict[str, float] = {}
    failures: list[UnitOutcome] = []

    def stage(name: str, work: Callable[[], object]) -> None:
        log(f"[bold]demo[/bold]: {name}")
        started = time.perf_counter()
        work()
        seconds[name] = time.perf_counter() - started
        log(f"demo: {name} done in {seconds[name]:.0f} s")

    def measure() -> None:
        series = open_series(demo.path / LM_RUN)
        for stage_plan, selection in plans:
            take_freed_cores()
            report = run_measures(series, stage_plan, series.select(selection), device=device)
            failures.extend(report.failures)
            for failure in report.failures:
                log(f"[red]failed[/red]: {failure.measure} at {failure.checkpoint}: {failure.message}")

    # Study A's sweeps run in a second process beside study B, one torch thread each: small
    # tensors use both cores better this way than two threads on one computation, which also
    # stall whenever another process holds a core.
    cores = _cores()
    threads = torch.get_num_threads()

    def take_freed_cores() -> None:
        """Once study A is over, study B takes every core."""
        if torch.get_num_threads() < cores and study_a.done():
            torch.set_num_threads(cores)

    with StudyAProcess([(digits_config, demo.path / DIGITS_RUN), (diagonal_config, demo.path / DIAGONAL_RUN)]) \
            as study_a:
        log("[bold]demo[/bold]: study A (digits learning-rate sweep, diagonal-network sweep and theory) runs in a "
            "second process")
        torch.set_num_threads(max(1, cores - 1))
        try:
            stage("study B: pretraining the tiny multilingual LM",
                  lambda: train_lm_with_progress(lm_config, demo.path / LM_RUN, at_log_points=take_freed_cores))
            stage("study B: measures across the checkpoints", measure)
            started = time.perf_counter()
            sweep_seconds, messages = study_a.result()
        finally:
            torch.set_num_threads(threads)
    for message in messages:
        log(message)
    seconds.update({f"study A: {name} sweep": value for name, value in sweep_seconds.items()})
    log(f"demo: study A done ({', '.join(f'{name} {value:.0f} s' for name, value in sweep_seconds.items())}; "
        f"waited {time.perf_counter() - started:.0f} s for it)")
    reported: list[ReportResult] = []
    stage("report", lambda: reported.append(write_report(demo.path)))
    return DemoResult(out, reported[0], seconds, failures, skipped, time.perf_counter() - begun)


class StudyAProcess:
    """Study A's sweeps in a second (spawned) process that never outlives the demo.

    Leaving the ``with`` block any way but through :meth:`result` (an error, Ctrl-C, SIGTERM)
    terminates the child; and the child watches its parent, exiting within a second of it if the
    demo is killed outright (SIGKILL runs no handler), so no orphan is left blocked on a dead pipe.
    """

    def __init__(self, sweeps: list) -> None:
        context = multiprocessing.get_context("spawn")
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_study_a_child, args=(sweeps, send, os.getpid()),
                                        name="phasescope-study-a", daemon=True)
        self._process.start()
        send.close()  # the child holds the only write end: its death ends the pipe

    def done(self) -> bool:
        return self._receive.poll()

    def result(self) -> tuple[dict[str, float], list[str]]:
        """Wait for the sweeps: (seconds per sweep, messages for the log); the child's error, re-raised."""
        try:
            outcome, value = self._receive.recv()
        except EOFError:
            raise PhasescopeError(f"study A's process ended without a result (exit code "
                                  f"{self._process.exitcode}); rerun the demo to train the missing sweeps") from None
        self._process.join()
        if outcome == "error":
            raise PhasescopeError(value) if isinstance(value, str) else value
        return value

    def __enter__(self) -> StudyAProcess:
        return self

    def __exit__(self, *exc) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._receive.close()


def _study_a_child(sweeps: list, send, parent: int) -> None:
    """Entry point of study A's process: watch the parent, run the sweeps, send the outcome back."""
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    try:
        send.send(("ok", _run_study_a(sweeps)))
    except PhasescopeError as error:
        send.send(("error", str(error)))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent reports it
        pass
    except Exception as error:  # noqa: BLE001  a bug: shown by the parent with its traceback
        send.send(("error", RuntimeError(f"study A failed: {type(error).__name__}: {error}\n"
                                         f"{traceback.format_exc()}")))
    finally:
        send.close()


def _exit_with_parent(parent: int, every: float = 0.5) -> None:
    """Exit this process as soon as ``parent`` is gone (it is re-parented, so getppid changes)."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_study_a(sweeps: list) -> tuple[dict[str, float], list[str]]:
    """Every sweep in turn, in the study-A process: (seconds per sweep, messages for the log)."""
    torch.set_num_threads(1)
    seconds, messages = {}, []
    for config, path in sweeps:
        started = time.perf_counter()
        _sweep(config, Path(path), messages.append, show_progress=False)
        seconds[Path(path).name] = time.perf_counter() - started
    return seconds, messages


def _measure_plans(size: DemoSize):
    """Each stage's plan (the registered measures among its names) and the names not registered."""
    registered = available_measures()
    plans, skipped = [], []
    for measure_stage in size.stages:
        names = [name for name in measure_stage.measures if name in registered]
        skipped += [name for name in measure_stage.measures if name not in registered]
        if not names:
            continue
        settings = list(measure_stage.settings)
        if measure_stage.concepts is not None:
            settings += [f"{name}.max_concepts={measure_stage.concepts}" for name in names
                         if "max_concepts" in registered[name].config_cls.model_fields]
        settings = [s for s in settings if s.split(".", 1)[0] in names]
        plans.append((plan_measures(names, settings=settings), measure_stage.checkpoints))
    return plans, skipped


def _sweep(config, path: Path, log: Callable[[str], None], show_progress: bool = True) -> None:
    from phasescope.train.sweep import run_sweep, sweep_finished

    members = len(config.lrs.resolve()) * len(config.seeds)
    if (path / "config.yaml").is_file():
        if sweep_finished(path, members):
            log(f"demo: {path} is complete, kept")
            return
        log(f"demo: {path} was interrupted, trained again")
        shutil.rmtree(path)  # a sweep does not resume; this one is the demo's own
    if not show_progress:
        run_sweep(config, path)
        return
    with progress_bar("sweep", members) as advance:
        run_sweep(config, path, on_progress=lambda phase, count, info: advance(count if phase == "member" else 0,
                                                                                 info=info))
