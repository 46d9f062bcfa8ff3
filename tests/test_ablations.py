"""Ablations: in-place edits that do exactly what they say and are undone bit for bit."""

import pytest
import torch

from phasescope.errors import PhasescopeError
from phasescope.measures.ablations import (
    CheckpointWeights,
    group_parameter_names,
    scaled_group,
    swapped_layers,
    swapped_parameters,
    zeroed_head,
)
from phasescope.models.adapters import get_adapter, parameter_groups
from tests.lm_fixtures import tiny_gpt2, tiny_llama, tiny_neox

VOCAB = 97
FACTORIES = {"llama": tiny_llama, "gpt2": tiny_gpt2, "gpt_neox": tiny_neox}


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (3, 11), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _saved(model, path):
    model.save_pretrained(path)
    return CheckpointWeights(sorted(path.glob("*.safetensors")), model)


@pytest.mark.parametrize("family", list(FACTORIES))
def test_swapping_everything_from_a_reproduces_a_exactly_and_is_undone(family, tmp_path):
    a, b = FACTORIES[family](VOCAB, seed=0, layers=3), FACTORIES[family](VOCAB, seed=1, layers=3)
    donor = _saved(a, tmp_path / "a")  # lazily read from safetensors, names mapped (GPT-NeoX: embed_out)
    ids = _ids()
    logits_a, logits_b = _logits(a, ids), _logits(b, ids)
    everything = [name for names in parameter_groups(b).values() for name in names]
    with swapped_parameters(b, donor, everything):
        assert torch.equal(_logits(b, ids), logits_a)
    assert torch.equal(_logits(b, ids), logits_b)
    with swapped_layers(b, donor, 0, 2):  # every block but not the embeddings and head: neither model
        mixed = _logits(b, ids)
        assert not torch.allclose(mixed, logits_a) and not torch.allclose(mixed, logits_b)
    assert torch.equal(_logits(b, ids), logits_b)


def test_a_layer_swap_changes_only_the_swapped_blocks(tmp_path):
    a, b = tiny_llama(VOCAB, seed=0, layers=4), tiny_llama(VOCAB, seed=1, layers=4)
    donor = _saved(a, tmp_path / "a")
    before = {name: p.clone() for name, p in b.named_parameters()}
    with swapped_layers(b, donor, 1, 2):
        for name, parameter in b.named_parameters():
            inside = name.startswith(("model.layers.1.", "model.layers.2."))
            expected = dict(a.named_parameters())[name] if inside else before[name]
            assert torch.equal(parameter, expected), name
    assert all(torch.equal(p, before[name]) for name, p in b.named_parameters())


def test_scaling_by_one_changes_nothing_and_other_factors_are_undone():
    model = tiny_llama(VOCAB, seed=2, layers=3)
    ids = _ids(1)
    reference = _logits(model, ids)
    with scaled_group(model, "layers.0-2", 1.0):
        assert torch.equal(_logits(model, ids), reference)
    with scaled_group(model, "layers.1.mlp", 0.5):
        names = group_parameter_names(model, "layers.1.mlp")
        assert names == ["model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight",
                         "model.layers.1.mlp.down_proj.weight"]
        assert not torch.allclose(_logits(model, ids), reference)
    with scaled_group(model, "embedding", 3.0):
        pass
    assert torch.equal(_logits(model, ids), reference)


@pytest.mark.parametrize("family", list(FACTORIES))
def test_zeroing_a_head_removes_exactly_its_contribution(family):
    model = FACTORIES[family](VOCAB, seed=3, layers=3)
    adapter = get_adapter(model)
    layer, head, size = 1, 2, adapter.head_dim
    ids = _ids(2)
    captured = {}

    def capture(name):
        def hook(module, inputs, output):
            captured[name] = (inputs[0].detach().clone(), output.detach().clone())
        return hook

    hooks = [adapter.attention_output(layer).register_forward_hook(capture("projection")),
             adapter.layers[0].register_forward_hook(
                 lambda m, i, o: captured.__setitem__("block0", (o[0] if isinstance(o, tuple) else o).clone()))]
    try:
        reference = _logits(model, ids)
        heads_in, projected = captured["projection"]
        block0 = captured["block0"]
        with zeroed_head(model, layer, head):
            ablated = _logits(model, ids)
            ablated_in, ablated_out = captured["projection"]
            assert torch.equal(captured["block0"], block0)  # nothing before the layer moves
        weight = adapter.attention_output_weight(layer).detach()  # (hidden, heads * head_dim)
        bias = getattr(adapter.attention_output(layer), "bias", None)
        torch.testing.assert_close(ablated_in, heads_in)  # the heads' outputs are as they were...
        by_hand = heads_in.clone()
        by_hand[..., head * size:(head + 1) * size] = 0
        expected = by_hand @ weight.T + (0 if bias is None else bias)
        torch.testing.assert_close(ablated_out, expected, rtol=1e-5, atol=1e-6)  # ...and only head 2 is gone
        own_contribution = heads_in[..., head * size:(head + 1) * size] @ weight[:, head * size:(head + 1) * size].T
        torch.testing.assert_close(projected - ablated_out, own_contribution, rtol=1e-4, atol=1e-6)
        assert not torch.allclose(ablated, reference)
        assert torch.equal(_logits(model, ids), reference)
    finally:
        for hook in hooks:
            hook.remove()


def test_out_of_range_layers_and_heads_name_the_valid_range():
    model = tiny_llama(VOCAB, layers=3)
    with pytest.raises(PhasescopeError, match=r"layers 2-5 out of range: the model has 3 layers, valid indices 0\.\.2"):
        group_parameter_names(model, "layers.2-5")
    with pytest.raises(PhasescopeError, match=r"valid indices 0\.\.2"):
        with swapped_layers(model, {}, 3, 3):
            pass
    with pytest.raises(PhasescopeError, match=r"head 4 out of range: the model has 4 heads per layer, valid .* 0\.\.3"):
        with zeroed_head(model, 0, 4):
            pass
    with pytest.raises(PhasescopeError, match="unknown parameter group 'attention'"):
        group_parameter_names(model, "attention")


def test_an_error_inside_the_block_still_restores_the_model():
    model = tiny_llama(VOCAB, seed=4)
    before = {name: p.clone() for name, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"):
        with scaled_group(model, "layers.0", 0.0):
            raise RuntimeError("boom")
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


# --- the measures ----------------------------------------------------------------------------------
def _direct_summary(model, tokenizer, encoded):
    from phasescope.measures.translation import wlt_scores
    from phasescope.measures.wlt_inputs import item_subsets

    scores = wlt_scores(model, tokenizer, encoded)
    return {subset: {"p_target": scores.loc[mask, "p_target"].mean(), "p_source": scores.loc[mask, "p_source"].mean(),
                     "top1_accuracy": scores.loc[mask, "top1_correct"].mean()}
            for subset, mask in item_subsets(scores).items() if mask.any()}


def _rows_of(rows, component):
    table = {}
    for row in rows:
        if row["component"] == component:
            table.setdefault(row["subset"], {})[row["metric"]] = row["value"]
    return table


def _check(rows, component, expected):
    table = _rows_of(rows, component)
    assert set(table) == set(expected)
    for subset, scores in expected.items():
        for metric, value in scores.items():
            assert table[subset][metric] == pytest.approx(value, rel=1e-5, abs=1e-9), (component, subset, metric)


def _with_copied(model, source, prefixes, transform=None):
    """A plain copy of ``model`` with the parameters under ``prefixes`` taken from ``source`` (or transformed)."""
    import copy

    edited = copy.deepcopy(model)
    state = edited.state_dict()
    for name, value in source.state_dict().items():
        if name.startswith(tuple(prefixes)):
            state[name] = transform(value) if transform else value
    edited.load_state_dict(state)
    return edited


@pytest.fixture
def measure_setup(tmp_path):
    from phasescope.measures.registry import MeasureContext
    from phasescope.measures.wlt_inputs import shared_wlt_encoding
    from tests.lm_fixtures import tiny_lm_run

    series, _ = tiny_lm_run(tmp_path / "run", steps=(0, 10, 20), factory=lambda v, seed: tiny_llama(v, seed, layers=3))
    cache = {}
    contexts = [MeasureContext(series, cp, previous=prev, cache=cache)
                for prev, cp in zip([None, *series.checkpoints[:-1]], series.checkpoints)]
    return series, contexts, lambda config: shared_wlt_encoding(contexts[0], config)


def test_layer_swap_measure_in_both_directions(measure_setup):
    from phasescope.measures.registry import get_measure
    from phasescope.run.config import validate_config

    series, contexts, encoding = measure_setup
    measure = get_measure("layer_swap")
    config = validate_config({"shots": 1, "ranges": ["1", "0-1"]}, measure.config_cls)
    tokenizer, encoded = series.load_tokenizer(), encoding(config)
    first, last = (series.load_model(cp) for cp in (series.checkpoints[0], series.checkpoints[-1]))
    context = contexts[0]
    rows = measure.compute(context, config)
    _check(rows, "base", _direct_summary(first, tokenizer, encoded))
    _check(rows, "layers.1-1", _direct_summary(_with_copied(first, last, ["model.layers.1."]), tokenizer, encoded))
    both = _direct_summary(_with_copied(first, last, ["model.layers.0.", "model.layers.1."]), tokenizer, encoded)
    _check(rows, "layers.0-1", both)
    benefit = _rows_of(rows, "layers.0-1")["all"]["benefit"]
    assert benefit == pytest.approx(both["all"]["p_target"] - _rows_of(rows, "base")["all"]["p_target"], abs=1e-9)
    assert {row["layer"] for row in rows if row["component"] == "layers.1-1"} == {1}
    fresh = series.load_model(series.checkpoints[0])
    assert all(torch.equal(p, q) for p, q in zip(context.model.parameters(), fresh.parameters()))  # restored

    reverse = validate_config({"shots": 1, "ranges": ["2"], "direction": "checkpoint_into_reference"},
                              measure.config_cls)
    rows = measure.compute(context, reverse)
    _check(rows, "base", _direct_summary(last, tokenizer, encoded))
    _check(rows, "layers.2-2", _direct_summary(_with_copied(last, first, ["model.layers.2."]), tokenizer, encoded))
    assert all(torch.equal(p, q) for p, q in zip(context.model.parameters(), fresh.parameters()))


def test_sliding_windows_cover_the_layers():
    from phasescope.measures.ablations import layer_windows

    assert layer_windows(24) == [(i, i + 5) for i in range(0, 19, 3)]
    assert layer_windows(3) == [(0, 0), (1, 1), (2, 2)]
    assert layer_windows(5, window=2, stride=2) == [(0, 1), (2, 3), (3, 4)]  # the last window ends at the top
    with pytest.raises(PhasescopeError, match="wider than the model's 3 layers"):
        layer_windows(3, window=4)


def test_scaling_and_head_ablation_measures(measure_setup):
    from phasescope.measures.registry import get_measure
    from phasescope.run.config import validate_config

    series, contexts, encoding = measure_setup
    tokenizer = series.load_tokenizer()
    context = contexts[1]
    model = series.load_model(series.checkpoints[1])
    scaling = get_measure("scaling")
    config = validate_config({"shots": 1, "groups": ["layers.1.mlp", "embedding"], "factors": [0.0, 1.0, 2.0]},
                             scaling.config_cls)
    encoded = encoding(config)
    rows = scaling.compute(context, config)
    _check(rows, "layers.1.mlp x2", _direct_summary(_with_copied(model, model, ["model.layers.1.mlp."],
                                                                 lambda w: 2 * w), tokenizer, encoded))
    _check(rows, "embedding x0", _direct_summary(_with_copied(model, model, ["model.embed_tokens."],
                                                              torch.zeros_like), tokenizer, encoded))
    assert all(row["value"] == 0 for row in rows if row["component"] == "embedding x1" and row["metric"] == "benefit")

    heads = get_measure("head_ablation")
    config = validate_config({"shots": 1, "layers": [2], "heads": [0, 3]}, heads.config_cls)
    rows = heads.compute(context, config)
    assert {row["component"] for row in rows} == {"base", "layers.2.head.0", "layers.2.head.3"}

    def zero_head_three(weight):  # o_proj (hidden, heads * head_dim): head 3's input columns
        weight = weight.clone()
        weight[:, 3 * 8:4 * 8] = 0
        return weight
    _check(rows, "layers.2.head.3", _direct_summary(_with_copied(model, model, ["model.layers.2.self_attn.o_proj."],
                                                                 zero_head_three), tokenizer, encoded))
    fresh = series.load_model(series.checkpoints[1])
    assert all(torch.equal(p, q) for p, q in zip(context.model.parameters(), fresh.parameters()))


def test_measure_config_errors_name_the_valid_range(measure_setup):
    from phasescope.measures.registry import get_measure
    from phasescope.run.config import validate_config

    series, contexts, _ = measure_setup
    with pytest.raises(PhasescopeError, match=r"layers 1-5 out of range: the model has 3 layers, valid indices 0\.\.2"):
        get_measure("layer_swap").compute(contexts[0], validate_config({"ranges": ["1-5"]},
                                                                       get_measure("layer_swap").config_cls))
    with pytest.raises(PhasescopeError, match=r"head 7 out of range"):
        get_measure("head_ablation").compute(contexts[0], validate_config({"heads": [7]},
                                                                          get_measure("head_ablation").config_cls))
    with pytest.raises(PhasescopeError, match="unknown parameter group 'mlp'"):
        get_measure("scaling").compute(contexts[0], validate_config({"groups": ["mlp"]},
                                                                    get_measure("scaling").config_cls))
