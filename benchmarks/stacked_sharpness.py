"""Benchmark: the sharpness of every member of a 16-rate grid at one step, batched
(``phasescope.curvature.batched.stacked_sharpness``: one double backward for the whole stack per
Lanczos step, Lanczos vectorized over members) against a loop of ``phasescope.sharpness`` over the
members, cold (certified random starts) and warm (each member's previous eigenvector), on the demo's
digits MLP and on a narrower one where a single member's products are too small to fill the cores.

    python benchmarks/stacked_sharpness.py     # about a minute on 2 idle cores
"""

from __future__ import annotations

import platform

import torch
from timing import median_seconds  # benchmarks/timing.py, beside this script

import phasescope
from phasescope.curvature.batched import stacked_sharpness
from phasescope.data import DigitsConfig, load_digits_data
from phasescope.models import MLP
from phasescope.models.losses import mean_squared_error
from phasescope.train.functional import stack_parameters

MEMBERS, TOL, REPEATS = 16, 1e-4, 5


def measure(width: int, train_size: int) -> list[tuple]:
    """Rows (problem, start, loop seconds, batched seconds, speed-up, largest relative difference)."""
    data = load_digits_data(DigitsConfig(train_size=train_size), "mse")
    models = []
    for seed in range(MEMBERS):  # 16 initializations standing in for 16 rates' parameters
        torch.manual_seed(seed)
        models.append(MLP((64,), 10, depth=2, width=width))
    params, batch = stack_parameters(models), (data.train_inputs, data.train_targets)
    cold_stack = stacked_sharpness(models[0], mean_squared_error, params, batch, tol=TOL)
    cold_loop = [phasescope.sharpness(model, mean_squared_error, batch, tol=TOL) for model in models]
    error = max(abs(a - b.top) / b.top for a, b in zip(cold_stack.values.tolist(), cold_loop))

    def loop(warm: bool) -> None:
        for model, previous in zip(models, cold_loop):
            phasescope.sharpness(model, mean_squared_error, batch, tol=TOL, v0=previous if warm else None)

    def batched(warm: bool) -> None:
        stacked_sharpness(models[0], mean_squared_error, params, batch, tol=TOL,
                          v0=cold_stack.eigenvectors if warm else None)

    parameters = sum(p.numel() for p in models[0].parameters())
    rows = []
    for warm in (False, True):
        looped = median_seconds(lambda: loop(warm), REPEATS, warmup=1)  # noqa: B023 (timed here, in this iteration)
        stacked = median_seconds(lambda: batched(warm), REPEATS, warmup=1)  # noqa: B023
        rows.append((f"MLP 64-{width}-{width}-10 ({parameters} parameters), {train_size} examples",
                     "warm" if warm else "cold", looped, stacked, looped / stacked, error))
    return rows


def main() -> None:
    print("# Sharpness of a 16-member grid at one step: batched against a loop\n")
    print(f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    rows = measure(64, 300) + measure(16, 300)
    print(f"- {MEMBERS} members, tol {TOL:g} (residual criterion), median of {REPEATS} runs after one untimed run\n")
    print("| problem | start | loop seconds | batched seconds | speed-up | largest relative difference |")
    print("|---|---|---:|---:|---:|---:|")
    for problem, start, loop, batched, ratio, error in rows:
        print(f"| {problem} | {start} | {loop:.3f} | {batched:.3f} | {ratio:.2f}x | {error:.1e} |")
    met = [f"{row[0].split(' (')[0]} {row[1]}" for row in rows if row[4] >= 3]
    print(f"\nTarget (reported, not asserted): batched >= 3x faster than the loop: met in {len(met)} of {len(rows)} "
          f"rows ({', '.join(met) or 'none'}); NOT met in the others")


if __name__ == "__main__":
    main()
