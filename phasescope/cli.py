"""The ``phasescope`` command line: each command is a thin call into the package."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand

from phasescope.cli_data import corpus_app, lexicon_app
from phasescope.errors import PhasescopeError
from phasescope.files import check_config_file, check_output_path
from phasescope.progress import console, output, progress_bar
from phasescope.signals import Interrupted, received_signal, rerun_command, resumable, termination_handled

app = typer.Typer(help="phasescope: training dynamics, measured densely across checkpoints and learning rates. "
                  "New here? `phasescope demo` runs both studies end to end offline (--quick: a few minutes), "
                  "then open runs/demo/report/index.html.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
runs_app = typer.Typer(help="Inspect run directories.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(lexicon_app, name="lexicon")
app.add_typer(corpus_app, name="corpus")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells and schedulers read as "interrupted"


def _kept_checkpoints(out: Path) -> str:
    from phasescope.run import RunDir

    latest = RunDir(out).latest_checkpoint() if (out / "config.yaml").is_file() else None
    if latest is None:
        return f"no checkpoint was written yet in {out}; rerun to start again: {rerun_command()}"
    tokens = f" ({latest.tokens:,} tokens)" if latest.tokens is not None else ""
    return f"kept checkpoints up to step {latest.step}{tokens} in {out}; resume with: {rerun_command()}"


def _count_shards(metrics: Path) -> int:
    return sum(1 for _ in metrics.rglob("*.parquet")) if metrics.is_dir() else 0


def _kept_shards(metrics: Path, before: int) -> str:
    return (f"kept the {_count_shards(metrics) - before} metric shards written before the interrupt in {metrics}; "
            f"rerun to compute only the missing ones: {rerun_command()}")


class _MeasureCommand(TyperCommand):
    """``phasescope measure --help`` ends with the registered measures (imported only for the help)."""

    def format_help(self, ctx, formatter) -> None:
        from phasescope.measures.registry import available_measures

        listed = "\n\n".join(f"{name}: {measure.description}" for name, measure in sorted(available_measures().items()))
        self.epilog = f"Measures:\n\n{listed}"
        super().format_help(ctx, formatter)


@app.command()
def train(config: Path = typer.Argument(..., help="Run config (YAML), e.g. configs/digits-sharpness.yaml."),
          out: Path = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<config name>)."),
          ) -> None:
    """Train a run from a config (kind gd: full-batch GD; kind lm: LM pretraining, also under torchrun);
    rerun the same command to resume from its last checkpoint."""
    check_config_file(config)
    from phasescope.run import load_config
    from phasescope.train import GDRunConfig, train_gd
    from phasescope.train.lm import config_kind

    out = out or Path("runs") / config.stem
    check_output_path(out, folder=True)
    if config_kind(config) == "lm":
        with resumable(lambda: _kept_checkpoints(out)):
            _train_language_model(config, out)
        return
    run_config = load_config(config, GDRunConfig)
    with resumable(lambda: _kept_checkpoints(out)), progress_bar("GD steps", run_config.train.max_steps) as advance:
        outcome = train_gd(run_config, out, on_step=lambda step, loss: advance(info=f"loss {loss:.4g}"))
    console.print(f"{outcome.status} after {outcome.steps} steps, train loss {outcome.final_train_loss:.4g}")
    console.print(f"run written to {out}")


def _train_language_model(config: Path, out: Path) -> None:
    """``phasescope train`` of a ``kind: lm`` config; under torchrun only rank 0 shows progress."""
    import os

    from phasescope.run import load_config
    from phasescope.train.lm import LMRunConfig, train_lm, train_lm_with_progress

    run_config = load_config(config, LMRunConfig)
    if int(os.environ.get("RANK", "0")) != 0:
        train_lm(run_config, out)
        return
    outcome = train_lm_with_progress(run_config, out)
    loss = f", loss {outcome.final_loss:.4g}" if outcome.final_loss is not None else ""
    resumed = f" (resumed from step {outcome.resumed_from})" if outcome.resumed_from else ""
    console.print(f"trained to step {outcome.steps} ({outcome.tokens:,} tokens){loss}{resumed}")
    console.print(f"run written to {out}")


@app.command()
def sweep(config: Path = typer.Argument(..., help="Sweep config (YAML), e.g. configs/digits-mlp-mse.yaml."),
          out: Path = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<config name>)."),
          grid: list[str] = typer.Option(None, "--grid", help="An axis of a grid, AXIS=V1,V2,... (repeat): width, "
                                         "depth, epsilon, init_scale, parameterization (sp, mup). One sweep per "
                                         "combination, into OUT/<axis=value,...>; a rerun finishes the missing ones."),
          executor: str = typer.Option("local", "--executor", help="Grid only: local (in turn) or ray (one Ray task "
                                       "per combination)."),
          address: str = typer.Option(None, "--address", help="Ray cluster address (default: a local instance)."),
          ) -> None:
    """Full-batch GD at every learning rate of a grid (vectorized) and gradient flow, from one theta_0."""
    check_config_file(config)
    from phasescope.run import load_config
    from phasescope.train import SweepConfig, run_sweep
    from phasescope.train.lm import config_kind

    if config_kind(config) == "lm":
        raise PhasescopeError(f"{config}: a language-model config (kind: lm), not a learning-rate sweep; train it "
                              f"with: phasescope train {config}")
    sweep_config = load_config(config, SweepConfig)
    out = out or Path("runs") / config.stem
    check_output_path(out, folder=True)
    if grid:
        _sweep_grid(sweep_config, grid, out, executor, address)
        return
    if executor != "local":
        raise PhasescopeError("--executor applies to grids (--grid AXIS=...); a single sweep runs in this process")
    members = len(sweep_config.lrs.resolve()) * len(sweep_config.seeds)
    kept = (f"{out} holds an incomplete sweep (a sweep does not resume): delete it, then rerun: "
            f"{rerun_command()}")
    with resumable(lambda: kept), progress_bar("sweep", members) as advance:
        def on_progress(phase: str, count: int, info: str) -> None:
            advance(count if phase == "member" else 0, info=info)

        outcomes = run_sweep(sweep_config, out, on_progress=on_progress)
    table = Table("eta", "seed", "status", "steps", "final train loss")
    for o in outcomes:
        table.add_row(f"{o.lr:.4g}", str(o.seed), o.status, str(o.steps), f"{o.final_train_loss:.4g}")
    output.print(table)
    console.print(f"run written to {out}; draw its figures with: phasescope report {out}")


def _sweep_grid(sweep_config, grid: list[str], out: Path, executor: str, address: str | None) -> None:
    """``phasescope sweep CONFIG --grid ...``: every combination's sweep, then a one-line summary of each."""
    from phasescope.analysis.grid import grid_table
    from phasescope.execute.grid import run_grid
    from phasescope.train.grid import combinations, parse_axis

    axes: dict = {}
    for text in grid:
        name, values = parse_axis(text)
        if name in axes:
            raise PhasescopeError(f"--grid {name} is given twice; give all its values once: {name}=V1,V2,...")
        axes[name] = values
    total = len(combinations(sweep_config, axes))  # validates every combination before anything is written
    finished: list[str] = []

    def kept() -> str:
        if not finished:
            return f"no combination had finished in {out}; rerun to start again: {rerun_command()}"
        return (f"the {len(finished)} finished combinations are kept in {out}; rerun to train only the missing "
                f"ones: {rerun_command()}")

    def on_done(name: str, how: str) -> None:
        finished.append(name)
        advance(1, info=f"{name} {how}")

    with resumable(kept), progress_bar("grid", total) as advance:
        run_grid(sweep_config, axes, out, executor=executor, address=address, on_done=on_done,
                 on_progress=lambda info: advance(0, info=info))
    members, flows = grid_table(out)
    table = Table("combination", "eta_c", "flow aligned", "edge of stability", "diverged", "unresolved",
                  "best eta (test loss)")
    for name, rows in members.groupby("combination", sort=False):
        counts = rows.regime.value_counts()
        eta_c = ", ".join(f"{value:.4g}" for value in flows[flows.combination == name].eta_c)
        done = rows[rows.status != "diverged"]
        best = done.loc[done.test_loss.idxmin()] if len(done) else None
        table.add_row(name, eta_c, *(str(counts.get(regime, 0)) for regime in
                                     ("flow_aligned", "edge_of_stability", "diverged", "unresolved")),
                      "-" if best is None else f"{best.lr:.4g} ({best.test_loss:.4g})")
    output.print(table)
    console.print(f"grid written to {out}; draw its figures with: phasescope report {out}")


@app.command()
def report(run: Path = typer.Argument(
        ..., help="A sweep, an LM run, series or recorded run with metrics, or a demo directory.")) -> None:
    """The run's HTML page (report/index.html, figures embedded); a sweep's figures also as PNG and PDF."""
    from phasescope.report.index import write_report

    _print_report(write_report(run))


@app.command()
def compare(runs: list[Path] = typer.Argument(..., help="LM runs or series with WLT / minimal-pair metrics."),
            out: Path = typer.Option(..., "--out", "-o", help="The PNG figure to write."),
            label: list[str] = typer.Option(None, "--label", help="A panel title per run (default: folder names)."),
            ) -> None:
    """Study-B runs side by side: translation, copying and linguistic ability of each run in its own panel
    (a controlled-corpus run titled as the positive control), and each behaviour's onset per run."""
    from phasescope.report.compare import onset_rows, write_comparison

    check_output_path(out, folder=False)
    compared = write_comparison(runs, out, label or None)
    table = Table("behaviour", *[run.label for run in compared])
    for behaviour, texts in onset_rows(compared):
        table.add_row(behaviour, *texts)
    output.print(table)
    for run in compared:
        for note in run.notes:
            console.print(f"{run.label}: {note}")
    console.print(f"figure written to {out}")


def _print_report(result) -> None:
    """A report's numbers on stdout: each sweep's regime table, eta_c and best eta; study B's findings."""
    from phasescope.report.study_a import sweep_findings

    for name, sweep in result.sweeps.items():
        table = Table("eta", "seed", "regime (measured)", "eta >= eta_c predicts", "steps", "sharpness", "2/eta",
                      "l1", "l2", "test loss", title=name if len(result.sweeps) > 1 else None)
        for row in sweep.table.itertuples(index=False):
            table.add_row(f"{row.lr:.4g}", str(row.seed), row.regime, row.predicted_regime, str(row.steps),
                          f"{row.sharpness:.4g}", f"{row.two_over_eta:.4g}", f"{row.l1:.4g}", f"{row.l2:.4g}",
                          f"{row.test_loss:.4g}")
        output.print(table)
        for line in sweep_findings(sweep):
            output.print(f"- {line}", markup=False, highlight=False)
        for path in sweep.paths:
            output.print(str(path))
    if result.study_b is not None:
        for line in result.study_b.section.findings:
            output.print(f"- {line}", markup=False, highlight=False)
    output.print(f"report: {result.path}")


@app.command()
def sharpness(run: Path = typer.Argument(..., help="A run directory written by `phasescope train` (kind gd)."),
              step: list[int] = typer.Option(None, "--step", help="Checkpoint step(s); default: all."),
              k: int = typer.Option(1, help="Number of top Hessian eigenvalues."),
              tol: float = typer.Option(1e-4, help="Relative residual tolerance of each eigenpair."),
              params: list[str] = typer.Option(None, "--params", help="Restrict to these parameters/modules."),
              chunk_size: int = typer.Option(None, help="Rows per HVP chunk (memory only)."),
              cold: bool = typer.Option(False, help="Do not warm-start from the previous checkpoint."),
              ) -> None:
    """Top Hessian eigenvalues of the training loss at saved checkpoints, beside 2/eta: the sharpness
    measure run by the executor, as `phasescope measure RUN -m sharpness` would."""
    from phasescope.execute import run_measures
    from phasescope.execute.plan import PlannedMeasure
    from phasescope.measures.registry import get_measure
    from phasescope.run import MetricStore, validate_config
    from phasescope.run.series import open_series
    from phasescope.train import open_gd_run

    measure = get_measure("sharpness")
    config = validate_config({"k": k, "tol": tol, "params": params or None, "chunk_size": chunk_size,
                              "warm_start": not cold}, measure.config_cls, source="options")
    open_gd_run(run)  # a missing run or one of another kind is said before anything else
    series = open_series(run)
    chosen = series.select(",".join(map(str, step)) if step else None)
    before = _count_shards(series.run.metrics_dir)
    planned = PlannedMeasure(measure, config)
    with resumable(lambda: _kept_shards(series.run.metrics_dir, before)):
        result = run_measures(series, [planned], chosen)
    rows = MetricStore(series.run).read("sharpness")
    rows = rows[(rows.config_hash == planned.config_hash) & rows.step.isin([c.step for c in chosen])]
    table = Table("step", "sharpness", *[f"lambda_{i}" for i in range(2, k + 1)], "2/eta", "HVPs", "converged")
    for step_number, at in rows.groupby("step", sort=True):
        values = at.set_index("metric").value
        table.add_row(str(step_number), *[f"{values[name]:.5g}" for name in
                                          ["sharpness", *[f"eigenvalue_{i}" for i in range(2, k + 1)]]],
                      f"{values['gd_threshold']:.5g}", f"{values['hvps']:.0f}",
                      "yes" if values["converged"] else "NO")
    output.print(table)
    for failure in result.failures:
        _print_error(f"sharpness at {failure.checkpoint}: {failure.message}")
    if result.failures:
        sys.exit(1)


@app.command(cls=_MeasureCommand)
def measure(series: str = typer.Argument(..., help="A run directory with checkpoints, or a Hub repo id."),
            measures: str = typer.Option(..., "--measures", "-m", help="'all' or a comma list, e.g. wlt,logit_lens."),
            checkpoints: str = typer.Option(None, "--checkpoints", "-c",
                                            help="Selection: all, first, last, STEP, START..END, every:N (commas)."),
            executor: str = typer.Option("local", "--executor", help="local (this process) or ray."),
            address: str = typer.Option(None, "--address", help="Ray cluster address (default: a local instance)."),
            device: str = typer.Option("auto", "--device", help="auto (a GPU when there is one), cpu or cuda."),
            config: Path = typer.Option(None, "--config", help="YAML mapping measure names to config fields."),
            settings: list[str] = typer.Option(None, "--set", help="Config override measure.field=value (repeat)."),
            out: Path = typer.Option(None, "--out", "-o", help="Hub repo: run directory for its metrics."),
            revisions: str = typer.Option(None, "--revisions", help="Hub repo: comma list of revisions."),
            tokens_per_step: int = typer.Option(None, "--tokens-per-step", help="Hub repo: tokens per step."),
            cache_dir: str = typer.Option(None, "--cache-dir", help="Hugging Face cache directory."),
            offline: bool = typer.Option(False, "--offline", help="Never touch the network (use the HF cache)."),
            trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run code shipped in a repo."),
            imports: list[str] = typer.Option(None, "--import", help="Python module registering more measures."),
            ) -> None:
    """Run measures over the checkpoints of a series, writing metric shards; a rerun computes only missing ones."""
    import importlib

    from phasescope.execute import EXECUTORS, plan_measures, run_measures
    from phasescope.run.series import open_series

    if executor not in EXECUTORS:
        raise PhasescopeError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    for module in imports or []:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise PhasescopeError(f"--import {module}: cannot import it ({error})") from None
    if executor == "ray":
        from phasescope.execute.ray_executor import import_ray

        import_ray()  # a missing extra is reported before any work
    if out is not None:
        check_output_path(out, folder=True)
    plan = plan_measures(measures, config_file=config, settings=settings or [])
    opened = open_series(series, out=out, revisions=revisions.split(",") if revisions else None,
                         tokens_per_step=tokens_per_step, cache_dir=cache_dir, trust_remote_code=trust_remote_code,
                         offline=True if offline else None)
    chosen = opened.select(checkpoints)
    before = _count_shards(opened.run.metrics_dir)
    with resumable(lambda: _kept_shards(opened.run.metrics_dir, before)):
        result = run_measures(opened, plan, chosen, device=device, executor=executor, address=address)
    table = Table("measure", "computed", "already there", "failed", "not applicable")
    counts = result.by_measure()
    for planned in plan:
        count = counts.get(planned.name, {})
        table.add_row(planned.name, *[str(count.get(status, 0))
                                      for status in ("computed", "skipped", "failed", "not_applicable")])
    output.print(table)
    for failure in result.failures:
        _print_error(f"{failure.measure} at {failure.checkpoint}: {failure.message}")
        if failure.detail:  # an unexpected error: a bug in the measure, its traceback helps
            console.print(failure.detail, style="dim", markup=False, highlight=False)
    console.print(f"metrics in {opened.run.metrics_dir} ({result.seconds:.1f} s)")
    if result.failures:
        sys.exit(1)  # the other checkpoints and measures ran; the failed ones are listed above


@app.command()
def demo(quick: bool = typer.Option(False, "--quick", help="The CI-sized variant: a 60-step LM and 8-rate sweeps."),
         out: Path = typer.Option(None, "--out", "-o", help="Demo directory (default: runs/demo, runs/demo-quick)."),
         device: str = typer.Option("auto", "--device", help="auto (a GPU when there is one), cpu or cuda."),
         ) -> None:
    """Both studies end to end on the built-in data, offline: tiny multilingual LM + every study-B measure,
    the digits learning-rate sweep and the diagonal-network theory, then the HTML report."""
    from phasescope.demo import default_demo_dir, run_demo

    out = out or default_demo_dir(quick)
    check_output_path(out, folder=True)
    kept = (f"kept what was finished in {out} (checkpoints, metric shards, complete sweeps); resume with: "
            f"{rerun_command()}")
    with resumable(lambda: kept):
        result = run_demo(out, quick=quick, device=device)
    output.rule("headline findings")
    for line in result.report.headline:
        output.print(f"- {line}", markup=False, highlight=False)
    if result.skipped_measures:
        output.print(f"not run (not registered): {', '.join(result.skipped_measures)}")
    timings = ", ".join(f"{name.split(': ')[-1]} {seconds:.0f} s" for name, seconds in result.seconds.items())
    output.print(f"time: {result.wall_seconds:.0f} s ({timings})")
    output.print(f"report: {result.report.path}")
    if result.failures:
        _print_error(f"{len(result.failures)} measure(s) failed at some checkpoints (listed above); "
                     "the report shows the rest")
        sys.exit(1)


@runs_app.command("show")
def runs_show(run: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Print a run's config, its checkpoints (step, tokens) and a summary of its metrics."""
    from phasescope.run import MetricStore, RunDir

    run_dir = RunDir.open(run)
    output.rule(f"run {run_dir.name}")
    output.print(run_dir.config_path.read_text(encoding="utf-8").rstrip(), markup=False, highlight=False)
    checkpoints = run_dir.list_checkpoints()
    output.rule(f"{len(checkpoints)} checkpoints")
    table = Table("step", "tokens", "path")
    for checkpoint in checkpoints:
        table.add_row(str(checkpoint.step), "-" if checkpoint.tokens is None else f"{checkpoint.tokens:,}",
                      str(checkpoint.path))
    output.print(table)
    summary = MetricStore(run_dir).summary()
    output.rule(f"metrics: {len(summary)} series")
    table = Table(*summary.columns)
    for row in summary.itertuples(index=False):
        table.add_row(*[f"{v:.5g}" if isinstance(v, float) else str(v) for v in row])
    output.print(table)


def _path_problem(error: OSError) -> str:
    """One line naming the path an OSError is about and what is wrong with it."""
    problem = {FileExistsError: "a file is there where a folder is needed",
               NotADirectoryError: "a file is there where a folder is needed",
               IsADirectoryError: "a folder is there where a file is needed",
               PermissionError: "permission denied"}.get(type(error), error.strerror)
    return f"{error.filename}: {problem}"


def _print_error(message: str) -> None:
    console.print(Text("error: ", style="red") + Text(" ".join(message.split())), soft_wrap=True)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback;
    Ctrl-C and SIGTERM one line saying what was kept, and exit code 130."""
    try:
        with termination_handled():
            code = app(standalone_mode=False)  # typer returns 130 for an interrupt outside _resumable
    except PhasescopeError as error:
        _print_error(str(error))
        sys.exit(2)
    except ModuleNotFoundError as error:  # an optional extra that is not installed: name it
        from phasescope.extras import missing_extra

        message = missing_extra(error)
        if message is None:
            raise
        _print_error(message)
        sys.exit(2)
    except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as error:
        _print_error(_path_problem(error))  # an output path that cannot be written (nothing was half-written)
        sys.exit(2)
    except Interrupted as interrupt:
        console.print(Text(f"interrupted ({received_signal()}): ", style="yellow") + Text(str(interrupt)),
                      soft_wrap=True)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Abort:
        console.print("aborted")
        sys.exit(EXIT_INTERRUPTED)
    except typer.TyperException as error:  # usage errors: bad or missing arguments and options
        if error.format_message():  # empty when the help was shown for a bare command
            _print_error(error.format_message())
        sys.exit(getattr(error, "exit_code", 2))
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        console.print(f"interrupted ({received_signal()})")
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
