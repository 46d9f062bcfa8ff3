"""Does a part's attributed share predict what removing that part does? Attribution along the replayed path
against counterfactual removal, over every (interval, part of the data) pair.

For each interval: the adaptive attribution along the replayed path, split by kind of document and by
language (f: the measure's default objective and precision, float32, rtol 1e-3), then one replay per
part with that part's tokens left out of the loss (all else equal) and f at the interval's end. Prints
each pair, then Pearson and Spearman correlations and the sign agreement between the attributed share
and the removal effect (f trained - f without the part), and draws the scatter.

    python benchmarks/attribution_counterfactual.py --run runs/demo/lm --intervals 375:400 400:425 \
        --pairs benchmarks/results/attribution_counterfactual_demo.csv \
        --figure docs/figures/attribution_counterfactual.png          # ~30 minutes on 2 cores
    python benchmarks/attribution_counterfactual.py \
        --from-pairs benchmarks/results/attribution_counterfactual_demo.csv \
        --figure docs/figures/attribution_counterfactual.png          # the summary and figure again, no run
"""

from __future__ import annotations

import copy
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from intervals import interval_parser  # noqa: E402  (benchmarks/intervals.py, beside this script)
from scipy import stats  # noqa: E402

from phasescope.measures.counterfactual import removal_effects  # noqa: E402
from phasescope.measures.lm_forward import full_precision  # noqa: E402
from phasescope.measures.path_attribution import PathAttributionConfig, attribution_objective  # noqa: E402
from phasescope.measures.registry import MeasureContext  # noqa: E402
from phasescope.measures.replayed_attribution import replay_attribution  # noqa: E402
from phasescope.run import validate_config  # noqa: E402
from phasescope.run.series import open_series  # noqa: E402
from phasescope.train.data_split import BEFORE_PART, WEIGHT_DECAY_PART  # noqa: E402


def measure_pairs(arguments) -> list[tuple[str, str, float, float]]:
    """(interval, part, attributed share, removal effect) for every part of every interval."""
    torch.set_num_threads(2)
    series = open_series(arguments.run)
    checkpoints = {checkpoint.step: checkpoint for checkpoint in series.checkpoints}
    config = validate_config({"max_concepts": arguments.concepts}, PathAttributionConfig)
    dtype = torch.float64 if arguments.precision == "float64" else torch.float32
    pairs = []
    for first, last in arguments.intervals:
        context = MeasureContext(series, checkpoints[last], previous=checkpoints[first])
        objective = attribution_objective(context, config)
        model = copy.deepcopy(context.model).to(dtype)
        start = time.perf_counter()
        with full_precision():
            attributed = replay_attribution(series.run.path, objective, first, last, model,
                                            split_by=("kind", "language"))
            seconds = time.perf_counter() - start
            parts = [label for label in attributed.data if label not in (WEIGHT_DECAY_PART, BEFORE_PART)]
            start = time.perf_counter()
            removed = removal_effects(series.run.path, objective, first, last, model,
                                      [tuple(label.split("=", 1)) for label in parts])
        print(f"interval {first}-{last}: delta f {attributed.delta_f:+.3f}, completeness "
              f"{attributed.relative_gap:.1e} ({attributed.gradients_per_step:.2f} gradients per step), "
              f"attribution {seconds:.0f} s, {len(parts)} removals "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        for effect in removed:
            pairs.append((f"{first}-{last}", effect.part, attributed.data[effect.part], effect.effect))
            print(f"  {effect.part}: attributed {pairs[-1][2]:+.4f}, removal effect {effect.effect:+.4f}", flush=True)
    return pairs


def summarize(pairs: list[tuple[str, str, float, float]], figure_path: str | None) -> None:
    """Print the pairs, their correlations and sign agreement; draw the scatter."""
    print("\n| interval | part | attributed | removal effect (f trained - f without) |\n|---|---|---:|---:|")
    for name, part, share, effect in pairs:
        print(f"| {name} | {part} | {share:+.3f} | {effect:+.3f} |")
    attributed_values = np.array([pair[2] for pair in pairs])
    effects = np.array([pair[3] for pair in pairs])
    pearson = stats.pearsonr(attributed_values, effects).statistic
    spearman = stats.spearmanr(attributed_values, effects).statistic
    signs = float(np.mean(np.sign(attributed_values) == np.sign(effects)))
    slope = float(np.polyfit(attributed_values, effects, 1)[0])
    print(f"\n{len(pairs)} pairs: Pearson {pearson:.3f}, Spearman {spearman:.3f}, sign agreement {signs:.2f}, "
          f"least-squares slope of effect on share {slope:.2f}")
    for dimension in ("kind", "language"):
        chosen = [pair for pair in pairs if pair[1].startswith(f"{dimension}=")]
        agree = np.mean([np.sign(pair[2]) == np.sign(pair[3]) for pair in chosen]) if chosen else float("nan")
        print(f"- by {dimension}: {len(chosen)} pairs, sign agreement {agree:.2f}")
    if not figure_path:
        return
    figure, axis = plt.subplots(figsize=(6, 4.8), constrained_layout=True)
    for name, marker in zip(dict.fromkeys(pair[0] for pair in pairs), "os^D"):
        for dimension, color in (("kind", "C3"), ("language", "C0")):
            chosen = [pair for pair in pairs if pair[0] == name and pair[1].startswith(f"{dimension}=")]
            axis.scatter([p[2] for p in chosen], [p[3] for p in chosen], marker=marker, color=color,
                         label=f"steps {name}, by {dimension}")
            for _, part, share, effect in chosen:
                axis.annotate(part.split("=", 1)[1], (share, effect), fontsize=7, xytext=(3, 3),
                              textcoords="offset points", color=color)
    limit = float(max(np.abs(attributed_values).max(), np.abs(effects).max())) * 1.1
    axis.plot([-limit, limit], [-limit, limit], color="grey", linewidth=0.8, linestyle="--", label="effect = share")
    axis.axhline(0, color="black", linewidth=0.5)
    axis.axvline(0, color="black", linewidth=0.5)
    axis.set_xlabel("attributed share of the change of f (nats)")
    axis.set_ylabel("removal effect: f trained - f without (nats)")
    axis.set_title(f"Attributed share against the effect of removing the part: {len(pairs)} pairs,\n"
                   f"Pearson {pearson:.2f}, Spearman {spearman:.2f}, signs agree in {signs:.0%}", fontsize=10)
    axis.legend(fontsize=7, loc="upper left")
    figure.savefig(figure_path, dpi=110)
    print(f"figure written to {figure_path}")


def main() -> None:
    parser = interval_parser(__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=("float32", "float64"), default="float32")
    parser.add_argument("--figure", default=None)
    parser.add_argument("--pairs", default=None, help="write the pairs to this CSV file")
    parser.add_argument("--from-pairs", default=None, help="summarize and draw a CSV written by --pairs, no run")
    arguments = parser.parse_args()
    if arguments.from_pairs:
        frame = pd.read_csv(arguments.from_pairs)
        pairs = list(frame[["interval", "part", "attributed", "removal_effect"]].itertuples(index=False, name=None))
    else:
        pairs = measure_pairs(arguments)
        if arguments.pairs:
            pd.DataFrame(pairs, columns=["interval", "part", "attributed", "removal_effect"]).to_csv(
                arguments.pairs, index=False)
    summarize(pairs, arguments.figure)


if __name__ == "__main__":
    main()
