"""Attribution along the replayed training path against its alternatives, on one checkpoint interval of
the demo's LM run: seconds and completeness gap, side by side.

Rows (f: the demo's path-attribution objective, WLT target mass on pairs without shared first tokens,
4 concepts per direction, float32):
- training: the interval's optimizer steps as training took them (from the run's own tokens/s log);
- replay: the same steps re-run from the checkpoint's resume state (no attribution), then with the
  per-step split of the update by document kind;
- replay attribution (Simpson per step, and the trapezoid), with the split by kind;
- re-training from scratch with per-step logging: the steps from 0 to the interval's start, then the
  same per-step attribution (what a tool without resume state must do to follow the path);
- the chord at 4 and 32 midpoints.

    python benchmarks/attribution.py --run runs/demo/lm --steps 400 425    # ~6 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from phasescope.measures.ablations import CheckpointWeights
from phasescope.measures.attribution import path_attribution
from phasescope.measures.path_attribution import attribution_objective
from phasescope.measures.registry import MeasureContext, get_measure
from phasescope.measures.replayed_attribution import replay_attribution
from phasescope.run import MetricStore, validate_config
from phasescope.run.series import open_series
from phasescope.train.replay import replay_steps


def timed(function):
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def logged_training_seconds(series, first: int, last: int) -> float:
    """The interval's training time from the run's log: its tokens over the logged tokens/s."""
    log = MetricStore(series.run).read("train")
    rates = log[(log.metric == "tokens_per_second") & (log.step > first) & (log.step <= last)].sort_values("step")
    tokens_per_step = int(log[log.metric == "loss"].tokens.diff().dropna().iloc[0])
    seconds, previous = 0.0, first
    for step, rate in zip(rates.step, rates.value):
        seconds += (step - previous) * tokens_per_step / rate
        previous = step
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo/lm")
    parser.add_argument("--steps", type=int, nargs=2, default=(400, 425), metavar=("FROM", "TO"))
    parser.add_argument("--concepts", type=int, default=4)
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    first, last = arguments.steps
    series = open_series(arguments.run)
    checkpoints = {checkpoint.step: checkpoint for checkpoint in series.checkpoints}
    measure = get_measure("path_attribution")
    config = validate_config({"max_concepts": arguments.concepts}, measure.config_cls)
    context = MeasureContext(series, checkpoints[last], previous=checkpoints[first])
    objective = attribution_objective(context, config)
    steps = last - first
    rows = [("training (the run's log)", logged_training_seconds(series, first, last), None)]

    seconds, _ = timed(lambda: sum(1 for _ in replay_steps(series.run.path, first, last)))
    rows.append(("replay, optimizer steps only", seconds, None))
    seconds, _ = timed(lambda: sum(1 for _ in replay_steps(series.run.path, first, last, split_by=("kind",))))
    rows.append(("replay, update split by kind", seconds, None))
    attributions = {}
    for rule in ("simpson", "trapezoid"):
        model = copy.deepcopy(context.model)
        seconds, result = timed(lambda rule=rule, model=model: replay_attribution(
            series.run.path, objective, first, last, model, split_by=("kind",), rule=rule))
        attributions[rule] = seconds
        rows.append((f"replay attribution ({rule}, split by kind)", seconds, result.relative_gap))
    seconds, _ = timed(lambda: sum(1 for _ in replay_steps(series.run.path, 0, first)))
    rows.append((f"re-train from scratch (steps 0-{first}) + per-step logging", seconds + attributions["simpson"],
                 None))
    start = CheckpointWeights(series.weight_files(checkpoints[first]), context.model)
    end = CheckpointWeights(series.weight_files(checkpoints[last]), context.model)
    for points in (4, 32):
        seconds, result = timed(lambda points=points: path_attribution(context.model, objective, start, end, points))
        rows.append((f"chord, {points} midpoints", seconds, result.relative_gap))

    training = rows[0][1]
    print(f"interval {first} -> {last} ({steps} AdamW steps) of {arguments.run}; f over "
          f"{arguments.concepts} concepts per direction\n")
    print(f"| {'method':58s} | seconds | x training | completeness gap (relative) |")
    print(f"|{'-' * 60}|--------:|-----------:|----------------------------:|")
    for name, seconds, gap in rows:
        gap_text = "" if gap is None else f"{gap:.1e}"
        print(f"| {name:58s} | {seconds:7.1f} | {seconds / training:10.1f} | {gap_text:>27s} |")


if __name__ == "__main__":
    main()
