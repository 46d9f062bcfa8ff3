"""Architecture adapters: parts and parameter groups of every family, checked against the model's own forward."""

import pytest
import torch
from torch import nn

from phasescope import PhasescopeError
from phasescope.models.adapters import get_adapter, parameter_groups
from tests.lm_fixtures import ADAPTER_VOCAB, FAMILIES, tiny_gpt2, tiny_llama, tiny_neox


@pytest.fixture(params=list(FAMILIES))
def model_and_family(request):
    build, family = FAMILIES[request.param]
    return build(), family


def block_outputs(model, adapter, input_ids):
    """Each block's output captured by a forward hook (independent of ``output_hidden_states``)."""
    captured = []
    hooks = [block.register_forward_hook(lambda m, i, o: captured.append(o[0] if isinstance(o, tuple) else o))
             for block in adapter.layers]
    try:
        logits = model(input_ids).logits
    finally:
        for hook in hooks:
            hook.remove()
    return captured, logits


def test_parameter_groups_cover_every_parameter_once(model_and_family):
    model, family = model_and_family
    adapter = get_adapter(model)
    assert adapter.family == family
    groups = parameter_groups(model)
    listed = [name for names in groups.values() for name in names]
    assert sorted(listed) == sorted(name for name, _ in model.named_parameters())
    assert len(listed) == len(set(listed))
    total = sum(p.numel() for p in model.parameters())
    parameters = dict(model.named_parameters())
    assert sum(parameters[name].numel() for name in listed) == total
    for layer in range(adapter.num_layers):
        assert groups[f"layers.{layer}.attention"] and groups[f"layers.{layer}.mlp"]
        for kind in ("attention", "mlp", "norms"):
            names = groups.get(f"layers.{layer}.{kind}", [])
            assert all(name.startswith(adapter.layer_path(layer) + ".") for name in names)
    assert list(groups)[0] == "embedding"
    assert ("unembedding" in groups) == (not adapter.tied_embeddings)


def test_tied_embeddings_are_explicit():
    gpt2, llama = get_adapter(tiny_gpt2(ADAPTER_VOCAB)), get_adapter(tiny_llama(ADAPTER_VOCAB))
    assert gpt2.tied_embeddings and not llama.tied_embeddings
    groups = gpt2.parameter_groups()
    assert "unembedding" not in groups
    assert groups["embedding"] == ["transformer.wte.weight", "transformer.wpe.weight"]
    assert llama.parameter_groups()["unembedding"] == ["lm_head.weight"]
    assert llama.parameter_groups()["layers.1.norms"] == ["model.layers.1.input_layernorm.weight",
                                                          "model.layers.1.post_attention_layernorm.weight"]


def test_final_norm_and_unembedding_of_last_block_give_the_logits(model_and_family):
    model, _ = model_and_family
    adapter = get_adapter(model)
    input_ids = torch.randint(0, ADAPTER_VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs, logits = block_outputs(model, adapter, input_ids)
        assert len(outputs) == adapter.num_layers
        by_hand = adapter.unembedding(adapter.final_norm(outputs[-1]))
        from_backbone = adapter.unembedding(adapter.backbone(input_ids).last_hidden_state)
    torch.testing.assert_close(by_hand, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(from_backbone, logits, rtol=1e-5, atol=1e-5)


def test_attention_output_projection_and_heads(model_and_family):
    model, _ = model_and_family
    adapter = get_adapter(model)
    layer = adapter.num_layers - 1
    projection = adapter.attention_output(layer)
    weight = adapter.attention_output_weight(layer)
    assert weight.shape == (adapter.hidden_size, adapter.num_heads * adapter.head_dim)
    seen = {}
    hook = projection.register_forward_hook(lambda m, i, o: seen.update(input=i[0], output=o))
    input_ids = torch.randint(0, ADAPTER_VOCAB, (1, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model(input_ids)
        hook.remove()
        bias = projection.bias if projection.bias is not None else 0.0
        torch.testing.assert_close(seen["input"] @ weight.T + bias, seen["output"], rtol=1e-5, atol=1e-5)
        # Zeroing head 1's columns of the input equals removing its columns from the matrix.
        head = slice(adapter.head_dim, 2 * adapter.head_dim)
        ablated = seen["input"].clone()
        ablated[..., head] = 0
        reduced = weight.clone()
        reduced[:, head] = 0
        torch.testing.assert_close(projection(ablated), seen["input"] @ reduced.T + bias, rtol=1e-5, atol=1e-5)


def test_attention_output_weight_is_a_view_of_the_parameter():
    for model in (tiny_gpt2(ADAPTER_VOCAB), tiny_llama(ADAPTER_VOCAB)):
        adapter = get_adapter(model)
        with torch.no_grad():
            adapter.attention_output_weight(0)[0, 0] = 123.0
        assert 123.0 in adapter.attention_output(0).weight.flatten().tolist()


def test_mlp_and_attention_modules_are_the_blocks_own():
    model = tiny_neox(ADAPTER_VOCAB)
    adapter = get_adapter(model)
    assert adapter.mlp(1) is model.gpt_neox.layers[1].mlp
    assert adapter.attention(0) is model.gpt_neox.layers[0].attention
    assert adapter.final_norm is model.gpt_neox.final_layer_norm
    assert adapter.unembedding is model.get_output_embeddings()
    gpt2 = get_adapter(tiny_gpt2(ADAPTER_VOCAB))
    assert list(gpt2.embeddings) == ["transformer.wte", "transformer.wpe"]
    assert gpt2.attention_output(1) is gpt2.model.transformer.h[1].attn.c_proj
    with pytest.raises(PhasescopeError, match="layer 5 out of range"):
        gpt2.mlp(5)


def test_unsupported_model_names_the_supported_families():
    from transformers import BertConfig, BertForMaskedLM

    bert = BertForMaskedLM(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=16))
    for model in (bert, nn.Linear(2, 2)):
        with pytest.raises(PhasescopeError, match=r"no architecture adapter .*supported causal-LM families: llama"):
            get_adapter(model)
