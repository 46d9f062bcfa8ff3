"""How far the demo's study-B headline moves under float rounding: retrain the demo's LM from its own
step-0 checkpoint with every initial weight perturbed by a relative 1e-6 (the size of the rounding
differences between two CPUs' kernels), measure it as the demo does, and print each headline onset
beside the unperturbed run's.

Needs a finished demo (``phasescope demo``, default ``runs/demo``). Each perturbed copy goes to
``<demo>/spread/perturbed-<seed>`` and is resumed by ``phasescope train`` from the perturbed step 0,
so training, measures and report are the shipped ones, unchanged.

    python benchmarks/headline_spread.py --demo runs/demo --seeds 1 2    # ~8 minutes a seed on 2 cores
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from phasescope.demo import SIZES
from phasescope.report.study_b import study_b_section
from phasescope.run import RunDir

RELATIVE_PERTURBATION = 1e-6


def perturbed_copy(lm: Path, out: Path, seed: int) -> None:
    """``lm``'s config, tokenizer, data and step-0 checkpoint, its weights times (1 + 1e-6 N(0, 1))."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("config.yaml", "tokenizer", "data"):
        source = lm / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, out / name)
    first = RunDir.open(lm).list_checkpoints()[0]
    target = out / "checkpoints" / first.path.name
    shutil.copytree(first.path, target)
    weights = load_file(str(target / "model.safetensors"))
    generator = torch.Generator().manual_seed(seed)
    perturbed = {name: tensor * (1 + RELATIVE_PERTURBATION * torch.randn(tensor.shape, generator=generator))
                 for name, tensor in weights.items()}
    save_file(perturbed, str(target / "model.safetensors"), metadata={"format": "pt"})


def phasescope(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "phasescope.cli", *args], check=True, stdout=subprocess.DEVNULL)


def measure_like_the_demo(run: Path) -> None:
    """The demo's behaviour and layer-swap stages (the ones the headline reads)."""
    for stage in SIZES["full"].stages:
        if stage.measures[0] in ("wlt", "surface_similarity"):
            names = [name for name in stage.measures if name in ("wlt", "logit_lens", "layer_swap")]
            settings = [f"{name}.max_concepts={stage.concepts}" for name in names if stage.concepts]
            phasescope("measure", str(run), "-m", ",".join(names), "-c", stage.checkpoints,
                       *[arg for setting in settings for arg in ("--set", setting)])


def headline(run: Path) -> dict[str, str]:
    result = study_b_section(RunDir.open(run))
    onsets = {key: line.onset for key, line in result.trajectories.items()}
    return {key: "none" if onset is None or onset.index is None else f"step {onset.step} ({onset.tokens:,} tokens)"
            for key, onset in onsets.items() if key in ("wlt_no_overlap", "wlt_overlap", "copying",
                                                        "layer_swap_middle")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"), help="a finished demo directory")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="one perturbed run per seed")
    args = parser.parse_args()
    lm = args.demo / "lm"
    rows = {"unperturbed": headline(lm)}
    for seed in args.seeds:
        run = args.demo / "spread" / f"perturbed-{seed}"
        perturbed_copy(lm, run, seed)
        phasescope("train", str(lm / "config.yaml"), "--out", str(run))
        measure_like_the_demo(run)
        rows[f"perturbed, seed {seed}"] = headline(run)
    keys = list(rows["unperturbed"])
    print(f"| run | {' | '.join(keys)} |")
    print(f"|---|{'---|' * len(keys)}")
    for name, onsets in rows.items():
        print(f"| {name} | {' | '.join(onsets.get(key, '-') for key in keys)} |")


if __name__ == "__main__":
    main()
