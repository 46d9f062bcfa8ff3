"""Attribution along the replayed training path: phasescope's adaptive rule against ExPLAIND's rule, side by
side on intervals of the demo's LM run, with where the time goes and its floor.

ExPLAIND (arXiv 2505.20076) takes the midpoint rule with 10 points on every optimizer step. Its own code
(mainlp/explaind) must train inside its own wrappers and store every step; it is not run here: its rule is
re-implemented over phasescope's replay (``replay_attribution(rule="midpoint", points=10)``), so that both
rules follow the same path, on the same objective, in the same process.

Rows per interval (f: the path_attribution measure's default objective, WLT target mass of the pairs
without shared first tokens, 4 concepts per direction, in the measure's default float32; the update split
by kind of document):
- training: the interval's optimizer steps as training took them (from the run's own tokens/s log);
- replay: the same steps re-run from the checkpoint's resume state, alone, then with the split by kind;
- one gradient of f (one forward and backward over its prompts), and one training step;
- ExPLAIND's rule (midpoint, 10 gradients per step);
- adaptive at ExPLAIND's completeness (rtol = the gap ExPLAIND's rule reached): equal completeness;
- adaptive at the default rtol 1e-3;
- integrated gradients on the chord, 32 midpoints (another path, for scale).
Then the projected ratio at the paper's shape from the measured costs per token.

    python benchmarks/attribution.py --run runs/demo/lm --intervals 375:400 400:425    # ~15 minutes on 2 cores
"""

from __future__ import annotations

import copy
import time
from collections import Counter

import torch
from intervals import interval_parser  # benchmarks/intervals.py, beside this script

from phasescope.measures.attribution import GradientAt, chord_integrated_gradients
from phasescope.measures.path_attribution import PathAttributionConfig, attribution_objective
from phasescope.measures.registry import MeasureContext
from phasescope.measures.replayed_attribution import replay_attribution
from phasescope.measures.wlt_inputs import item_subsets, shared_wlt_encoding
from phasescope.run import MetricStore, validate_config
from phasescope.run.series import open_series
from phasescope.run.weights import CheckpointWeights
from phasescope.train.replay import replay_steps

PAPER_TOKENS_PER_STEP = 1_048_576  # the paper's shape: a 1M-token batch (1.7B parameters; the ratio is per token)


def timed(function):
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def logged_training_seconds(series, first: int, last: int) -> tuple[float, int]:
    """The interval's training time from the run's log (its tokens over the logged tokens/s), and tokens per step."""
    log = MetricStore(series.run).read("train")
    rates = log[(log.metric == "tokens_per_second") & (log.step > first)].sort_values("step")
    tokens_per_step = int(log[log.metric == "loss"].tokens.diff().dropna().iloc[0])
    seconds, previous = 0.0, first
    for step, rate in zip(rates.step, rates.value):
        covered = min(step, last) - previous
        seconds += covered * tokens_per_step / rate
        previous = min(step, last)
        if previous >= last:
            break
    return seconds, tokens_per_step


def measure_interval(series, checkpoints, config, first: int, last: int, explaind_points: int,
                     costs_only: bool = False, training_from: str = "log") -> tuple:
    """Print the interval's rows; return its costs (training s/step, tokens/step, replay s/step, s per gradient
    of f, prompt tokens of f, gradients per step at the default rtol)."""
    steps = last - first
    context = MeasureContext(series, checkpoints[last], previous=checkpoints[first])
    objective = attribution_objective(context, config)
    training, tokens_per_step = logged_training_seconds(series, first, last)
    rows = [("training (the run's log)", None, training, None)]
    seconds, _ = timed(lambda: sum(1 for _ in replay_steps(series.run.path, first, last)))
    rows.append(("replay, optimizer steps only", None, seconds, None))
    if training_from == "replay":  # training's own step function, timed here (a log taken on a busy machine lies)
        training = seconds
        rows[0] = ("training (its steps replayed here)", None, training, None)
    replay_seconds, _ = timed(lambda: sum(1 for _ in replay_steps(series.run.path, first, last,
                                                                  split_by=("kind",))))
    rows.append(("replay, update split by kind", None, replay_seconds, None))
    gradient_at = GradientAt(copy.deepcopy(context.model), objective)
    weights = {name: p.detach().clone() for name, p in gradient_at.named.items()}
    gradient_at(weights)  # warm up
    gradient_seconds, _ = timed(lambda: gradient_at(weights))
    rows.append(("one gradient of f", None, gradient_seconds, None))
    results = {}
    methods = () if costs_only else (("ExPLAIND's rule (midpoint, 10 per step)",
                                      {"rule": "midpoint", "points": explaind_points}),
                                     ("adaptive, rtol = ExPLAIND's completeness", None),
                                     ("adaptive, rtol 1e-3 (default)", {"rtol": 1e-3}))
    for name, options in methods:
        if options is None:
            options = {"rtol": max(results["explaind"][1].relative_gap, 1e-12)}
        model = copy.deepcopy(context.model)
        seconds, result = timed(lambda model=model, options=options: replay_attribution(
            series.run.path, objective, first, last, model, split_by=("kind",), **options))
        results.setdefault("explaind", (seconds, result))
        rows.append((name, result, seconds, result.relative_gap))
    if not costs_only:
        start = CheckpointWeights(series.weight_files(checkpoints[first]), context.model)
        end = CheckpointWeights(series.weight_files(checkpoints[last]), context.model)
        seconds, result = timed(lambda: chord_integrated_gradients(copy.deepcopy(context.model), objective, start,
                                                                   end, 32))
        rows.append(("integrated gradients on the chord, 32 midpoints", None, seconds, result.relative_gap))
    explaind_seconds, explaind = results.get("explaind", (None, None))
    for name, result, seconds, gap in rows:
        per_step = "" if result is None else f"{result.gradients_per_step:.2f}"
        gap_text = "" if gap is None else f"{gap:.1e}"
        versus = ("", "") if result is None or result is explaind else (
            f"{explaind.points / result.points:.1f}x fewer", f"{explaind_seconds / seconds:.1f}x less")
        print(f"| {first}-{last} | {name} | {per_step} | {seconds:.1f} | {seconds / training:.1f} | {gap_text} "
              f"| {versus[0]} | {versus[1]} |")
    for name, result, _, _ in rows:
        if result is not None and name.startswith("adaptive"):  # where the rule's cost goes, step by step
            spent = sorted(Counter(result.step_gradients).items())
            print(f"  {first}-{last} {name}: steps by objective gradients spent (its end point included): "
                  + ", ".join(f"{count} steps at {gradients}" for gradients, count in spent))
    encoded = shared_wlt_encoding(context, config)
    in_f = torch.as_tensor(item_subsets(encoded.pairs)[config.subset].to_numpy().copy())
    return (training / steps, tokens_per_step, replay_seconds / steps, gradient_seconds,
            int(encoded.lengths[in_f].sum()), None if costs_only else rows[-2][1].gradients_per_step)


def main() -> None:
    parser = interval_parser(__doc__.splitlines()[0])
    parser.add_argument("--explaind-points", type=int, default=10, help="ExPLAIND's midpoints per step")
    parser.add_argument("--costs-only", type=float, nargs="*", default=None, metavar="GRADIENTS_PER_STEP",
                        help="only where the time goes (training, replay, one gradient of f) and the cost at these "
                             "measured gradients per step (e.g. from attribution_counterfactual.py's run)")
    parser.add_argument("--training-from", choices=("log", "replay"), default="log",
                        help="training's time: the run's log, or its optimizer steps replayed here (the same step "
                             "function; for a run whose log was taken on a busy machine)")
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    series = open_series(arguments.run)
    checkpoints = {checkpoint.step: checkpoint for checkpoint in series.checkpoints}
    config = validate_config({"max_concepts": arguments.concepts}, PathAttributionConfig)
    print(f"{arguments.run}; f: WLT target mass without shared first tokens, {arguments.concepts} concepts per "
          f"direction, float32; update split by kind of document\n")
    print("| interval | method | objective gradients per step | seconds | x training | completeness (relative) "
          "| vs ExPLAIND: gradients | vs ExPLAIND: time |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    costs_only = arguments.costs_only is not None
    costs = [measure_interval(series, checkpoints, config, first, last, arguments.explaind_points, costs_only,
                              arguments.training_from) for first, last in arguments.intervals]
    print("\nWhere the time goes, per replayed step (mean over the intervals), and the projection:")
    step_seconds = sum(cost[0] for cost in costs) / len(costs)
    replay_step = sum(cost[2] for cost in costs) / len(costs)
    gradient = sum(cost[3] for cost in costs) / len(costs)
    measured = arguments.costs_only if costs_only else [cost[5] for cost in costs]
    per_step = sum(measured) / len(measured) if measured else 1.0
    tokens_per_step, prompt_tokens = costs[0][1], costs[0][4]
    print(f"- a training step: {step_seconds:.3f} s for {tokens_per_step} tokens")
    print(f"- the replayed step with its split by kind: {replay_step:.3f} s ({replay_step / step_seconds:.1f}x)")
    print(f"- one gradient of f: {gradient:.3f} s ({gradient / step_seconds:.1f} training steps; its prompts hold "
          f"{prompt_tokens} tokens, before their shared heads are run once)")
    floor = (replay_step + gradient) / step_seconds
    print(f"- floor of the adaptive rule (one gradient of f per step, the trapezoid everywhere): {floor:.1f}x "
          f"training; measured at rtol 1e-3: {per_step:.2f} gradients per step")
    for gradients in measured:
        print(f"  at {gradients:.2f} gradients per step: {(replay_step + gradients * gradient) / step_seconds:.1f}x "
              "training")
    # at the paper's shape, a training step and f's gradient scale with their tokens (same model, same passes)
    seconds_per_train_token = step_seconds / tokens_per_step
    seconds_per_f_token = gradient / prompt_tokens
    projected_gradient = seconds_per_f_token * prompt_tokens / (seconds_per_train_token * PAPER_TOKENS_PER_STEP)
    split = replay_step / step_seconds
    print(f"- projected at the paper's shape ({PAPER_TOKENS_PER_STEP:,} tokens per step, the same f): replay and "
          f"split {split:.1f}x + {per_step:.2f} gradients of f x {projected_gradient:.4f} = "
          f"{split + per_step * projected_gradient:.2f}x training")


if __name__ == "__main__":
    main()
