"""Path attribution: complete up to the quadrature error, equal to an independent float64 quadrature,
exact for a quadratic objective, and the model is left at the end point bit for bit."""

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from phasescope.measures.attribution import chord_integrated_gradients
from phasescope.measures.quadrature import quadrature_nodes
from phasescope.models.adapters import parameter_groups
from phasescope.run.weights import CheckpointWeights
from tests.lm_fixtures import tiny_llama, tiny_lm_run, tiny_neox

VOCAB = 89


def _prompts():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (6, 9), generator=generator), torch.randint(0, VOCAB, (6, 3), generator=generator)


def target_log_mass(model, ids, targets):
    """Like the WLT objective: summed log of the next-token mass on a few valid first tokens."""
    log_probs = model(ids).logits[:, -1].float().log_softmax(-1)
    return torch.logsumexp(log_probs.gather(1, targets), dim=1).sum()


def _state(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def float64_gauss_legendre_parts(model, ids, targets, start, end, points=12):
    """The reference: d f(theta(t)) / d theta_p . delta_p integrated by Gauss-Legendre in float64,
    through torch.func on copies of the weights (nothing shared with the implementation)."""
    model = model.double()
    start = {k: v.double() for k, v in start.items()}
    delta = {k: end[k].double() - start[k] for k in start}
    nodes, weights = np.polynomial.legendre.leggauss(points)
    parts = dict.fromkeys(start, 0.0)
    for node, weight in zip((nodes + 1) / 2, weights / 2):
        point = {k: (start[k] + float(node) * delta[k]).requires_grad_(True) for k in start}
        value = target_log_mass(lambda x, p=point: functional_call(model, p, (x,)), ids, targets)
        grads = torch.autograd.grad(value, list(point.values()))
        for (name, g) in zip(point, grads):
            parts[name] += float(weight) * float((g * delta[name]).sum())
    model.float()
    return parts


def test_midpoint_rule_is_complete_and_matches_a_float64_quadrature_per_group():
    a, b = tiny_llama(VOCAB, seed=0), tiny_llama(VOCAB, seed=1)
    ids, targets = _prompts()
    start, end = _state(a), _state(b)
    result = chord_integrated_gradients(b, lambda m: target_log_mass(m, ids, targets), start, end, points=32)
    assert abs(result.delta_f) > 0.1  # the two random models differ: a real test of completeness
    assert result.relative_gap < 1e-3
    assert all(torch.equal(p, end[name]) for name, p in b.named_parameters())  # back at B, bit for bit

    groups = parameter_groups(b)
    reference = float64_gauss_legendre_parts(b, ids, targets, start, end)
    reference_groups = {g: math.fsum(reference[p] for p in names) for g, names in groups.items()}
    ours = result.grouped(groups)
    assert set(ours) == set(groups)  # the groups cover every parameter: no "other"
    assert math.fsum(reference.values()) == pytest.approx(result.delta_f, rel=1e-5)  # the reference is complete
    for group, value in reference_groups.items():
        assert ours[group] == pytest.approx(value, abs=1e-3 * abs(result.delta_f)), group
    gauss = chord_integrated_gradients(b, lambda m: target_log_mass(m, ids, targets), start, end, points=12,
                             rule="gauss_legendre")  # the same rule in float32: agreement to float32 precision
    for group, value in reference_groups.items():
        assert gauss.grouped(groups)[group] == pytest.approx(value, abs=2e-5 * abs(result.delta_f)), group


def test_quadratic_objective_gets_its_closed_form_exactly():
    """f = sum_p c_p ||theta_p||^2: the integrand is linear in t, so the midpoint rule is exact and
    parameter p carries c_p (||B_p||^2 - ||A_p||^2) (in float64, up to rounding)."""
    a, b = tiny_llama(VOCAB, seed=2).double(), tiny_llama(VOCAB, seed=3).double()
    start, end = _state(a), _state(b)
    weights = {name: 0.1 * (i + 1) for i, name in enumerate(start)}

    def quadratic(model):
        return sum(weights[name] * p.double().pow(2).sum() for name, p in model.named_parameters())

    result = chord_integrated_gradients(b, quadratic, start, end, points=3)
    for name in start:
        expected = weights[name] * float(end[name].double().pow(2).sum() - start[name].double().pow(2).sum())
        assert result.parameters[name] == pytest.approx(expected, rel=1e-9, abs=1e-12), name
    assert result.relative_gap < 1e-9


def test_weights_read_lazily_from_checkpoint_files_give_the_same_parts(tmp_path):
    a, b = tiny_neox(VOCAB, seed=0), tiny_neox(VOCAB, seed=1)  # GPT-NeoX: lm_head saved as embed_out
    a.save_pretrained(tmp_path / "a")
    b.save_pretrained(tmp_path / "b")
    ids, targets = _prompts()
    objective = lambda m: target_log_mass(m, ids, targets)  # noqa: E731
    in_memory = chord_integrated_gradients(b, objective, _state(a), _state(b), points=4)
    lazy = chord_integrated_gradients(b, objective, CheckpointWeights((tmp_path / "a").glob("*.safetensors"), b),
                            CheckpointWeights((tmp_path / "b").glob("*.safetensors"), b), points=4)
    assert lazy.parameters == pytest.approx(in_memory.parameters, rel=1e-6, abs=1e-9)
    assert (lazy.f_start, lazy.f_end) == (in_memory.f_start, in_memory.f_end)


def test_quadrature_rules_integrate_what_they_should():
    for rule, degree in [("midpoint", 1), ("gauss_legendre", 2 * 5 - 1)]:
        nodes, weights = quadrature_nodes(5, rule)
        assert weights.sum() == pytest.approx(1.0)
        assert np.all((nodes > 0) & (nodes < 1)) and np.all(np.diff(nodes) > 0)
        assert float(weights @ nodes ** degree) == pytest.approx(1 / (degree + 1))


# --- the measure -----------------------------------------------------------------------------------
def test_path_attribution_measure_on_a_local_run(tmp_path):
    from phasescope.measures.lm_forward import wlt_log_probs
    from phasescope.measures.registry import MeasureContext, get_measure
    from phasescope.measures.wlt_inputs import shared_wlt_encoding
    from phasescope.run.config import validate_config

    series, _ = tiny_lm_run(tmp_path / "run")
    measure = get_measure("path_attribution")
    assert measure.pairwise
    config = validate_config({"shots": 1}, measure.config_cls)  # 32 midpoints
    context = MeasureContext(series, series.checkpoints[1], previous=series.checkpoints[0])
    rows = measure.compute(context, config)
    by_metric = {}
    for row in rows:
        by_metric.setdefault(row["metric"], []).append(row)
    assert {row["subset"] for row in rows} == {"no_overlap"}
    parts = {row["component"]: row["value"] for row in by_metric["attribution"]}
    assert set(parts) == set(parameter_groups(context.model))
    assert [row["layer"] for row in by_metric["attribution"] if row["component"] == "layers.1.mlp"] == [1]
    delta_f = by_metric["delta_f"][0]["value"]
    assert math.fsum(parts.values()) == pytest.approx(delta_f, abs=by_metric["completeness_gap"][0]["value"] + 1e-9)
    assert by_metric["completeness_gap_relative"][0]["value"] < 1e-3

    # f at both ends, computed directly from freshly loaded checkpoints
    encoded = shared_wlt_encoding(context, config)
    no_overlap = torch.as_tensor((~encoded.pairs["shared_first_token"]).to_numpy().nonzero()[0])
    with torch.no_grad():
        f = [float(wlt_log_probs(series.load_model(cp), encoded, answer="target", indices=no_overlap).sum())
             for cp in series.checkpoints]
    assert by_metric["f_start"][0]["value"] == pytest.approx(f[0], rel=1e-5)
    assert by_metric["f_end"][0]["value"] == pytest.approx(f[1], rel=1e-5)
    # the shared model is left exactly as loaded, for the next measure
    fresh = series.load_model(series.checkpoints[1])
    assert all(torch.equal(p, q) for p, q in zip(context.model.parameters(), fresh.parameters()))


def test_heldout_loss_and_copying_objectives(tmp_path):
    from phasescope.measures.registry import MeasureContext, get_measure
    from phasescope.run.config import validate_config

    series, texts = tiny_lm_run(tmp_path / "run")
    measure = get_measure("path_attribution")
    context = MeasureContext(series, series.checkpoints[1], previous=series.checkpoints[0])
    config = validate_config({"objective": "heldout_loss", "points": 8, "rule": "gauss_legendre", "batch_size": 3,
                              "heldout": {"texts": texts, "seq_len": 8, "sequences": 4}}, measure.config_cls)
    rows = measure.compute(context, config)
    summary = {row["metric"]: row["value"] for row in rows if row["metric"] != "attribution"}
    assert {row["subset"] for row in rows} == {"heldout"}
    assert summary["completeness_gap_relative"] < 1e-3
    copying = measure.compute(context, validate_config({"objective": "wlt_source", "subset": "all", "shots": 1,
                                                        "points": 4}, measure.config_cls))
    assert {row["subset"] for row in copying} == {"copy_all"}
