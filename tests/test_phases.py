"""Onsets, change points and lead/lag on synthetic trajectories whose answers are known."""

import numpy as np
import pandas as pd
import pytest

from phasescope.analysis.phases import (
    detect_change_points,
    detect_onset,
    item_matrix,
    lead_lag,
    noise_scale,
    onset_index,
    onset_indices,
    trajectory,
)

T = 40
STEPS = np.arange(T) * 100
TOKENS = STEPS * 4096


def test_noise_scale_recovers_the_noise_under_a_trend_and_jumps():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 5, 4000)
    values = 2 * x + (x > 2.5) * 3 + rng.normal(0, 0.3, len(x))
    assert noise_scale(values, order=1) == pytest.approx(0.3, rel=0.05)
    assert noise_scale(values + 4 * x ** 2, order=2) == pytest.approx(0.3, rel=0.05)


def test_onset_of_a_jump_is_its_checkpoint_with_a_tight_interval_over_items():
    rng = np.random.default_rng(1)
    items = rng.normal(0.02, 0.05, (72, T))
    items[:, 23:] += 0.6  # every direction starts succeeding at checkpoint 23
    found = detect_onset(None, STEPS, TOKENS, items=items, direction="up")
    assert (found.index, found.step, found.tokens) == (23, 2300, 2300 * 4096)
    assert found.interval_steps == (2300, 2300) and found.interval_tokens == (2300 * 4096, 2300 * 4096)
    assert found.detected_fraction == 1.0
    assert found.band.low < 0.02 < found.band.high < 0.62


def test_onset_direction_and_no_onset_in_noise():
    rng = np.random.default_rng(2)
    falling = 3.0 - 2.0 * (np.arange(T) >= 12) + rng.normal(0, 0.05, T)  # a loss that drops at 12
    assert detect_onset(falling, STEPS, direction="down").index == 12
    assert detect_onset(falling, STEPS, direction="either").index == 12
    assert detect_onset(falling, STEPS, direction="up").index is None
    noise = np.random.default_rng(7).normal(0.5, 0.1, (1000, T))  # false alarms in pure noise: rare
    assert np.mean(onset_indices(noise, "either") >= 0) < 0.04
    spike = np.zeros(T)
    spike[10] = 1.0  # one checkpoint out of the band is not an onset (sustain=2)...
    spike[30:] = 1.0  # ...a lasting departure is
    assert detect_onset(spike, STEPS).index == 30


def test_min_change_ignores_a_drift_too_small_to_matter():
    """A behaviour that never appears (top-1 drifting 0.000 -> 0.004) has no onset on an accuracy's
    scale, although the drift leaves a band sized by its own range and noise; a real rise still does."""
    rng = np.random.default_rng(4)
    drift = np.where(np.arange(T) >= 15, 0.004, 0.0) + rng.normal(0, 1e-4, T)
    items = drift + rng.normal(0, 1e-3, (72, T))
    assert detect_onset(drift, STEPS, direction="up").index == 15
    assert detect_onset(drift, STEPS, items=items, direction="up", min_change=0.05).index is None
    assert np.all(onset_indices(items, "up", min_change=0.05) == -1)
    rise = drift + 0.3 * (np.arange(T) >= 25)
    found = detect_onset(rise, STEPS, direction="up", min_change=0.05)
    assert found.index == 25 and found.band.high - found.band.center >= 0.05


def test_bootstrap_interval_covers_the_population_onset():
    """Items start succeeding at uniform random checkpoints 10..30: the population mean leaves its
    band (10% of the range) at checkpoint 12; the 90% intervals of 40 samples of 72 items cover it."""
    population = np.clip((np.arange(T) - 9) / 21, 0, 1)  # P(an item's onset <= t)
    truth, _ = onset_index(population, "up")
    assert truth == 12
    covered, widths = 0, []
    for sample in range(40):
        rng = np.random.default_rng(100 + sample)
        starts = rng.integers(10, 31, 72)
        items = (np.arange(T)[None] >= starts[:, None]) + rng.normal(0, 0.05, (72, T))
        found = detect_onset(None, STEPS, items=items, direction="up", n_bootstrap=500, seed=sample)
        low, high = found.interval_steps
        covered += low <= STEPS[truth] <= high
        widths.append((high - low) / 100)
    assert covered / 40 >= 0.8
    assert 0 < np.mean(widths) <= 5  # informative: a few checkpoints wide


def test_vectorized_onsets_match_one_by_one():
    rng = np.random.default_rng(3)
    rows = np.cumsum(rng.normal(0, 0.2, (200, T)), axis=1) + rng.normal(0, 0.1, (200, T))
    rows[5, 7] = np.nan  # a row with a missing checkpoint takes the one-by-one path
    for direction in ("up", "down", "either"):
        expected = []
        for row in rows:
            index, _ = onset_index(row, direction)
            expected.append(-1 if index is None else index)
        np.testing.assert_array_equal(onset_indices(rows, direction), expected)


def test_change_points_of_levels_and_kinks():
    rng = np.random.default_rng(4)
    levels = np.r_[np.zeros(15), np.ones(12), 2.5 * np.ones(23)] + rng.normal(0, 0.1, 50)
    points = detect_change_points(levels, np.arange(50) * 10, np.arange(50) * 1000)
    assert [(p.index, p.step, p.tokens) for p in points] == [(15, 150, 15000), (27, 270, 27000)]
    assert [round(p.after, 1) for p in points] == [1.0, 2.5]
    x = np.arange(60, dtype=float)
    for seed in range(10):  # rises from checkpoint 20 to 35: the slope changes twice
        noisy = np.random.default_rng(seed)
        ramp = np.clip((x - 20) / 15, 0, 1) + noisy.normal(0, 0.02, 60)
        kinks = detect_change_points(ramp, x.astype(int), model="linear")
        assert len(kinks) == 2 and abs(kinks[0].index - 20) <= 2 and abs(kinks[1].index - 35) <= 2, kinks
        trend = noisy.normal(0, 1, 60) + 0.05 * x  # a straight line has no kink
        assert detect_change_points(trend, x.astype(int), model="linear") == []
    for seed in range(10):
        assert detect_change_points(np.random.default_rng(seed).normal(0, 1, 60), np.arange(60)) == []
    stairs = np.repeat(np.arange(8.0), 6) + rng.normal(0, 0.01, 48)
    capped = detect_change_points(stairs, np.arange(48), max_change_points=3)
    assert len(capped) == 3 and all(p.index % 6 == 0 for p in capped)


def test_lead_lag_recovers_a_known_shift_in_log_tokens():
    rng = np.random.default_rng(5)
    tokens = np.r_[0, np.geomspace(1e6, 1e10, 60)].astype(np.int64)
    steps = np.arange(61) * 10
    log_tokens = np.log10(np.maximum(tokens, 1))

    def rise(center):
        return 1 / (1 + np.exp(-(log_tokens - center) / 0.15))

    mechanism = rise(8.0)[None] * rng.uniform(0.5, 1.0, (24, 1)) + rng.normal(0, 0.03, (24, 61))
    behaviour = rise(8.5)[None] * rng.uniform(0.3, 0.8, (72, 1)) + rng.normal(0, 0.03, (72, 61))
    result = lead_lag(None, None, steps, tokens, mechanism_items=mechanism, behaviour_items=behaviour)
    assert result.axis == "log_tokens"
    assert result.shift == pytest.approx(0.5, abs=0.05)  # half a decade
    ratio = np.log10(result.behaviour.tokens / result.mechanism.tokens)
    assert ratio == pytest.approx(0.5, abs=0.15)
    low, high = result.onset_lag_interval
    assert 0 < low <= result.onset_lag_tokens <= high
    reverse = lead_lag(None, None, steps, tokens, mechanism_items=behaviour, behaviour_items=mechanism)
    assert reverse.shift == pytest.approx(-0.5, abs=0.05) and reverse.onset_lag_tokens < 0
    # a falling mechanism (a loss) aligns by shape too
    falling = lead_lag(1 - rise(7.7), rise(8.0), steps, tokens, direction="either")
    assert falling.shift == pytest.approx(0.3, abs=0.05)


def test_trajectories_and_item_matrices_from_metric_rows():
    rows = []
    for step in (0, 10, 20):
        for src, tgt, value in (("en", "de", 0.1), ("de", "en", 0.3)):
            if (step, src) != (10, "de"):  # one direction lacks step 10
                rows.append({"step": step, "tokens": step * 50, "metric": "top1_accuracy", "subset": "no_overlap",
                             "src": src, "tgt": tgt, "value": value + step})
        rows.append({"step": step, "tokens": step * 50, "metric": "top1_accuracy", "subset": "no_overlap",
                     "src": None, "tgt": None, "value": 7.0 + step})
    frame = pd.DataFrame(rows)
    overall = trajectory(frame, metric="top1_accuracy", subset="no_overlap", src=None)
    assert overall.step.tolist() == [0, 10, 20] and overall.value.tolist() == [7.0, 17.0, 27.0]
    assert overall.tokens.tolist() == [0, 500, 1000]
    matrix, checkpoints, labels = item_matrix(frame, ("src", "tgt"), metric="top1_accuracy")
    assert labels == [("de", "en"), ("en", "de")] and checkpoints.step.tolist() == [0, 10, 20]
    np.testing.assert_allclose(matrix, [[0.3, np.nan, 20.3], [0.1, 10.1, 20.1]])
