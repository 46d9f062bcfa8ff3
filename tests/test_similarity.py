"""Shapley decomposition of R^2 against closed forms, and the similarity features."""

import itertools

import numpy as np
import pytest

from phasescope.errors import PhasescopeError
from phasescope.measures.similarity import r_squared, shapley_r2


def _orthogonal_design(n: int, k: int, seed: int) -> np.ndarray:
    """k centered columns, exactly orthogonal in the sample, with different variances."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n, k))
    raw -= raw.mean(axis=0)
    q, _ = np.linalg.qr(raw)
    return q * np.sqrt(n) * np.arange(1, k + 1)


def test_shares_sum_to_the_full_r2_on_correlated_features():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 2))
    features = np.column_stack([base[:, 0], base[:, 0] + 0.3 * base[:, 1], base[:, 1], rng.normal(size=200),
                                (base[:, 0] > 0).astype(float)])
    target = features @ np.array([1.0, -0.5, 2.0, 0.0, 0.7]) + rng.normal(size=200)
    total, shares = shapley_r2(features, target, ["a", "b", "c", "d", "e"])
    assert sum(shares.values()) == pytest.approx(total, abs=1e-12)
    assert total == pytest.approx(r_squared(features, target))
    assert 0.5 < total < 1


def test_independent_features_get_their_closed_form_share():
    """With sample-orthogonal features, R^2(S) = sum_{j in S} b_j^2 var(x_j) / var(y): additive, so each
    Shapley share is exactly b_j^2 var(x_j) / var(y)."""
    n = 500
    features = _orthogonal_design(n, 5, seed=1)
    coefficients = np.array([0.5, -1.0, 0.0, 2.0, 0.25])
    noise = np.random.default_rng(2).normal(size=n)
    noise -= features @ np.linalg.lstsq(features, noise, rcond=None)[0] + noise.mean()  # orthogonal to the design
    target = 3.0 + features @ coefficients + noise
    total, shares = shapley_r2(features, target)
    expected = coefficients ** 2 * features.var(axis=0) / target.var()
    assert [shares[f"x{j}"] for j in range(5)] == pytest.approx(expected.tolist(), abs=1e-10)
    assert total == pytest.approx(expected.sum(), abs=1e-10)


def test_symmetric_features_get_equal_shares():
    rng = np.random.default_rng(3)
    a, b, c = rng.normal(size=(3, 300))
    features = np.column_stack([a, b, c])
    target = a + b + 0.5 * c + 0.1 * rng.normal(size=300)
    swapped = np.column_stack([b, a, c])  # a and b enter alike; swapping their data must swap their shares
    _, shares = shapley_r2(features, target, ["a", "b", "c"])
    _, shares_swapped = shapley_r2(swapped, target, ["a", "b", "c"])
    assert shares["a"] == pytest.approx(shares_swapped["b"], abs=1e-12)
    duplicated = np.column_stack([a, a, c])  # exact duplicates: exactly equal shares
    total, shares = shapley_r2(duplicated, target, ["a1", "a2", "c"])
    assert shares["a1"] == pytest.approx(shares["a2"], abs=1e-12)
    assert sum(shares.values()) == pytest.approx(total, abs=1e-12)


def test_shapley_matches_the_average_over_orderings():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(80, 4)) @ rng.normal(size=(4, 4))
    target = features[:, 0] - features[:, 2] + rng.normal(size=80)
    _, shares = shapley_r2(features, target)
    by_order = np.zeros(4)
    orders = list(itertools.permutations(range(4)))
    for order in orders:
        for position, feature in enumerate(order):
            before = list(order[:position])
            gain = r_squared(features[:, before + [feature]], target) - r_squared(features[:, before], target)
            by_order[feature] += gain
    assert [shares[f"x{j}"] for j in range(4)] == pytest.approx((by_order / len(orders)).tolist(), abs=1e-12)


def test_degenerate_inputs():
    target = np.arange(6.0)
    total, shares = shapley_r2(np.column_stack([np.ones(6), target]), target, ["constant", "same"])
    assert shares == pytest.approx({"constant": 0.0, "same": 1.0})
    assert shapley_r2(np.ones((6, 1)), np.zeros(6))[0] == 0.0
    with pytest.raises(PhasescopeError, match="expected features"):
        shapley_r2(np.ones((6, 2)), np.ones(5))


def test_surface_similarity_measure_equals_a_direct_regression(tmp_path):
    from phasescope.measures.registry import MeasureContext, get_measure
    from phasescope.measures.translation import wlt_scores
    from phasescope.measures.wlt_inputs import shared_wlt_encoding
    from phasescope.run.config import validate_config
    from tests.lm_fixtures import tiny_lm_run

    series, _ = tiny_lm_run(tmp_path / "run", steps=(0,))
    measure = get_measure("surface_similarity")
    config = validate_config({"shots": 1}, measure.config_cls)
    context = MeasureContext(series, series.checkpoints[0])
    rows = measure.compute(context, config)
    shares = {row["component"]: row["value"] for row in rows if row["metric"] == "r2_share"}
    total = next(row["value"] for row in rows if row["metric"] == "r2_total")
    assert set(shares) == {"identical", "shared_first_token", "token_jaccard", "edit_distance", "same_script"}
    assert sum(shares.values()) == pytest.approx(total, abs=1e-12)
    scores = wlt_scores(series.load_model(series.checkpoints[0]), series.load_tokenizer(),
                        shared_wlt_encoding(context, config))
    features = scores[list(shares)].astype(float).to_numpy()
    design = np.column_stack([np.ones(len(scores)), features])
    fitted = design @ np.linalg.lstsq(design, scores["p_target"].to_numpy(), rcond=None)[0]
    residual = scores["p_target"].to_numpy() - fitted
    centered = scores["p_target"].to_numpy() - scores["p_target"].mean()
    assert total == pytest.approx(1 - residual @ residual / (centered @ centered), rel=1e-6)
    assert total > 0
