"""Learning-rate grids trained as one vectorized computation vs a Python loop over runs.

Two grids of 16 learning rates, each trained side by side both ways in this one process:
1. the digits MLP of configs/digits-mlp-mse.yaml (vmap over stacked parameters vs a loop of
   per-member autograd steps);
2. a diagonal linear network (beta = w*w) with 1000 features on sparse regression (closed-form
   batched updates vs a loop of per-member autograd steps).
Both paths are checked to give the same parameters before anything is timed. Then the same grids
end to end through ``run_sweep`` (metrics, checkpoints and the final sharpness of every member).

    python benchmarks/lr_sweep.py [--steps 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
from timing import median_seconds  # benchmarks/timing.py, beside this script

from phasescope.data import load_supervised_data
from phasescope.models.losses import get_loss
from phasescope.run import load_config, validate_config
from phasescope.train import SweepConfig, run_sweep
from phasescope.train.functional import DiagonalObjective, StackedObjective, stack_parameters
from phasescope.train.sweep import initial_models

ROOT = Path(__file__).resolve().parent.parent


def mlp_config() -> SweepConfig:
    return load_config(ROOT / "configs" / "digits-mlp-mse.yaml", SweepConfig)


def diagonal_config() -> SweepConfig:
    return validate_config({
        "seeds": [0], "device": "cpu",
        "data": {"name": "sparse_regression", "n_train": 100, "n_test": 1000, "dim": 1000, "sparsity": 10},
        "model": {"arch": "diagonal", "parameterization": "ww", "alpha": 0.1},
        "lrs": {"min": 0.001, "max": 0.1, "num": 16}}, SweepConfig)


def gd_loop(objective, params: dict, lrs: torch.Tensor, steps: int) -> dict:
    """Plain full-batch GD on every member for ``steps`` steps (no stopping, no recording)."""
    for _ in range(steps):
        grads, _, _ = objective.gradient(params)
        with torch.no_grad():
            for name, p in params.items():
                params[name] = p - lrs.view((-1,) + (1,) * (p.ndim - 1)) * grads[name]
    return params


def core_objectives(config: SweepConfig):
    data = load_supervised_data(config.data, config.loss)
    model = initial_models(config, data, torch.device("cpu"))[config.seeds[0]]
    lrs = torch.tensor(config.lrs.resolve())
    params = stack_parameters([model] * len(lrs))
    loop = StackedObjective(model, get_loss(config.loss), data.train_inputs, data.train_targets, vectorized=False)
    if config.model.arch == "diagonal":
        fast = DiagonalObjective(config.model.parameterization, data.train_inputs, data.train_targets)
    else:
        fast = StackedObjective(model, get_loss(config.loss), data.train_inputs, data.train_targets)
    return fast, loop, params, lrs


def bench_core(name: str, config: SweepConfig, steps: int, repeats: int) -> list[tuple]:
    fast, loop, params, lrs = core_objectives(config)
    a = gd_loop(fast, dict(params), lrs, 20)
    b = gd_loop(loop, dict(params), lrs, 20)
    for k in a:  # members that blew up do so on both paths; the others agree to float tolerance
        finite = torch.isfinite(b[k])
        assert torch.equal(finite, torch.isfinite(a[k])), f"{name}: the two paths diverge differently"
        worst = float((a[k] - b[k])[finite].abs().max() / b[k][finite].abs().max().clamp_min(1e-12))
        assert worst < 1e-4, f"{name}: vectorized and sequential parameters differ by {worst:.2e}"
    vectorized = median_seconds(lambda: gd_loop(fast, dict(params), lrs, steps), repeats)
    sequential = median_seconds(lambda: gd_loop(loop, dict(params), lrs, steps), repeats)
    return [(name, f"GD loop, {steps} steps", sequential, vectorized)]


def bench_end_to_end(name: str, config: SweepConfig, steps: int) -> tuple:
    update = {"train": {**config.train.model_dump(), "max_steps": steps, "loss_threshold": 1e-12,
                        "sharpness_every": 0, "record_every": 50, "checkpoint_every": steps},
              "flow": {"enabled": False}, "device": "cpu"}
    seconds = {}
    for vectorized in (True, False):
        sweep = validate_config({**config.model_dump(mode="json"), **update, "vectorized": vectorized},
                                SweepConfig)
        directory = Path(tempfile.mkdtemp())
        start = time.perf_counter()
        run_sweep(sweep, directory / "run")
        seconds[vectorized] = time.perf_counter() - start
        shutil.rmtree(directory)
    return (name, f"run_sweep end to end, {steps} steps", seconds[False], seconds[True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    rows += bench_core("digits MLP, 16 rates", mlp_config(), args.steps, args.repeats)
    rows += bench_core("diagonal net d=1000, 16 rates", diagonal_config(), args.steps, args.repeats)
    rows.append(bench_end_to_end("digits MLP, 16 rates", mlp_config(), args.steps))
    rows.append(bench_end_to_end("diagonal net d=1000, 16 rates", diagonal_config(), args.steps))
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, Python {platform.python_version()}")
    print("| grid | what is timed | sequential loop (s) | phasescope vectorized (s) | speed-up |")
    print("|---|---|---:|---:|---:|")
    for name, what, sequential, vectorized in rows:
        print(f"| {name} | {what} | {sequential:.3f} | {vectorized:.3f} | {sequential / vectorized:.1f}x |")
    print("targets: >= 4x on the MLP grid, >= 50x on the diagonal grid (GD loop)")


if __name__ == "__main__":
    main()
