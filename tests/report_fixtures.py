"""Synthetic study-B metric stores for the report tests: every measure's rows as the contracts name
them (tests/..notes: wlt, logit_lens, layer_swap, path_attribution, lm_quality, minimal_pairs,
lm_sharpness, surface_similarity), with trajectories whose rises are placed on purpose:
copying and minimal pairs first, translation with shared tokens next, the middle-layer mechanism,
then translation without shared tokens half a decade of tokens after it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from phasescope.run import MetricStore, RunDir, validate_config
from phasescope.train.sweep import SweepConfig, run_sweep

LANGUAGES = ["en", "de", "ru", "zh"]
TOKENS = np.r_[0, np.geomspace(1e5, 1e8, 27)].astype(np.int64)  # 28 checkpoints
STEPS = np.arange(len(TOKENS)) * 25
CENTERS = {"copying": 5.6, "minimal_pairs": 5.6, "overlap": 6.2, "mechanism": 6.6, "no_overlap": 7.1}
ALL_MEASURES = ("wlt", "logit_lens", "layer_swap", "path_attribution", "lm_quality", "minimal_pairs",
                "lm_sharpness", "surface_similarity")


def rise(center: float, width: float = 0.12) -> np.ndarray:
    """A sigmoid in log10 tokens, 0 before ``center`` and 1 after (the initialization is 0)."""
    log_tokens = np.log10(np.maximum(TOKENS, 1))
    return 1 / (1 + np.exp(-(log_tokens - center) / width))


def write_study_b_metrics(path: Path, measures=ALL_MEASURES, seed: int = 0) -> RunDir:
    """An LM run directory (kind lm, no checkpoints needed) whose metric store holds ``measures``."""
    rng = np.random.default_rng(seed)
    run = RunDir.create(path, "kind: lm\n", exist_ok=True)
    store = MetricStore(run)
    directions = [(s, t) for s in LANGUAGES for t in LANGUAGES if s != t]
    shift = {d: rng.normal(0, 0.08) for d in directions}  # each direction rises a little earlier or later
    for index, (step, tokens) in enumerate(zip(STEPS.tolist(), TOKENS.tolist())):
        shards: dict[str, list[dict]] = {name: [] for name in measures}

        def noisy(value: float, scale: float = 0.02) -> float:
            return float(np.clip(value + rng.normal(0, scale), 0, 1))

        per_subset: dict[str, list[dict]] = {}
        for src, tgt in directions:
            for subset in ("no_overlap", "overlap"):
                top1 = noisy(0.9 * rise(CENTERS[subset] + shift[src, tgt])[index])
                copy = noisy(0.8 * rise(CENTERS["copying"])[index] * (1 - 0.6 * rise(CENTERS["no_overlap"])[index]))
                values = {"top1_accuracy": top1, "p_target": 0.8 * top1, "copy_top1": copy, "p_source": 0.7 * copy}
                for metric, value in values.items():
                    per_subset.setdefault(subset, []).append({"metric": metric, "value": value, "src": src,
                                                              "tgt": tgt, "subset": subset})
        if "wlt" in measures:
            for subset, rows in per_subset.items():
                shards["wlt"] += rows
                for metric in ("top1_accuracy", "p_target", "copy_top1", "p_source"):
                    pooled = float(np.mean([r["value"] for r in rows if r["metric"] == metric]))
                    shards["wlt"].append({"metric": metric, "value": pooled, "subset": subset})
        if "logit_lens" in measures:
            for layer in range(5):
                depth = (layer / 4) ** 2
                for subset in ("no_overlap", "overlap"):
                    target = 0.8 * rise(CENTERS[subset])[index] * depth
                    source = 0.6 * rise(CENTERS["copying"])[index] * (1 - abs(layer - 2) / 3)
                    shards["logit_lens"] += [
                        {"metric": "p_target", "value": noisy(target, 0.005), "layer": layer, "subset": subset},
                        {"metric": "p_source", "value": noisy(source, 0.005), "layer": layer, "subset": subset}]
        if "layer_swap" in measures:  # the final model's blocks help until the checkpoint has them
            for first in range(3):
                middle = first == 1
                benefit = (0.5 if middle else 0.1) * (1 - rise(CENTERS["mechanism"])[index])
                component = f"layers.{first}-{first + 1}"
                shards["layer_swap"] += [
                    {"metric": "benefit", "value": benefit + rng.normal(0, 0.005), "component": component,
                     "layer": first, "subset": "no_overlap"},
                    {"metric": "p_target", "value": 0.3, "component": component, "layer": first,
                     "subset": "no_overlap"}]
            shards["layer_swap"].append({"metric": "p_target", "value": 0.2, "component": "base",
                                         "subset": "no_overlap"})
        if "path_attribution" in measures and index > 0:
            formed = rise(CENTERS["mechanism"])[index]  # the middle blocks carry more of each change
            for layer in range(4):
                weight = 0.05 + (0.3 * formed if layer in (1, 2) else 0.0)
                for part in ("attn", "mlp"):
                    shards["path_attribution"].append(
                        {"metric": "attribution", "value": weight + abs(rng.normal(0, 0.01)),
                         "component": f"layers.{layer}.{part}", "layer": layer, "subset": "no_overlap"})
            shards["path_attribution"] += [
                {"metric": "attribution", "value": 0.02, "component": "embed_tokens", "subset": "no_overlap"},
                {"metric": "delta_f", "value": 0.01, "subset": "no_overlap"}]
        if "lm_quality" in measures:
            loss = 7.5 - 4.0 * rise(5.3, 0.4)[index] + rng.normal(0, 0.02)
            shards["lm_quality"] += [{"metric": "heldout_loss", "value": loss + 0.1 * i, "src": language}
                                     for i, language in enumerate(LANGUAGES)]
            shards["lm_quality"].append({"metric": "heldout_loss", "value": loss + 0.15})
        if "minimal_pairs" in measures:
            for language in LANGUAGES:
                accuracy = 0.5 + 0.4 * rise(CENTERS["minimal_pairs"])[index] + rng.normal(0, 0.02)
                shards["minimal_pairs"].append({"metric": "accuracy", "value": accuracy, "src": language,
                                                "subset": "builtin"})
        if "lm_sharpness" in measures:
            sharpness = 5 + 40 * rise(5.8, 0.3)[index] + rng.normal(0, 0.5)
            shards["lm_sharpness"] += [{"metric": "sharpness", "value": sharpness},
                                       {"metric": "preconditioned_sharpness", "value": sharpness * 3},
                                       {"metric": "adam_threshold", "value": 3800.0}]
        if "surface_similarity" in measures:
            shards["surface_similarity"] += [{"metric": "r2_total", "value": noisy(0.6 - 0.3 * rise(7.0)[index]),
                                              "subset": "all"}]
        for measure, rows in shards.items():
            if rows:
                store.write_shard(step, measure, {"synthetic": True}, rows, tokens=tokens)
    return run


def write_tiny_diagonal_sweep(path: Path) -> Path:
    """A diagonal-network sweep small enough for a test (a second or two), spanning both regimes."""
    config = validate_config({
        "seeds": [0], "device": "cpu",
        "data": {"name": "sparse_regression", "n_train": 8, "n_test": 100, "dim": 30, "sparsity": 3},
        "model": {"arch": "diagonal", "parameterization": "ww", "alpha": 0.1},
        "lrs": {"min": 0.05, "max": 0.5, "num": 5},
        "train": {"max_steps": 3000, "loss_threshold": 1e-4, "record_every": 100, "sharpness_every": 500}},
        SweepConfig)
    run_sweep(config, path)
    return path
