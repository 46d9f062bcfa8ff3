"""Logit lens against a hand-applied final norm and unembedding on hooked residual streams."""

import pandas as pd
import pytest
import torch

from phasescope import PhasescopeError
from phasescope.data.wlt import build_wlt_pairs, encode_wlt
from phasescope.measures.logit_lens import LogitLensConfig, encoded_logit_lens, logit_lens_rows
from phasescope.measures.registry import MeasureContext, get_measure
from phasescope.measures.translation import wlt_scores
from phasescope.models.adapters import get_adapter
from phasescope.run.config import validate_config
from phasescope.run.series import open_series
from tests.lm_fixtures import FAMILIES, tiny_gpt2, tiny_llama, wlt_lexicon, write_local_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def encoded(tokenizer):
    return encode_wlt(build_wlt_pairs(wlt_lexicon(["en", "fr", "ja"]), shots=2, seed=1), tokenizer)


def with_random_norms(model, seed=0):
    """Norm gains (and biases) away from 1 (and 0), so a norm applied twice would show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name or ".ln_" in name:
                parameter.copy_(torch.rand(parameter.shape, generator=generator) * 1.5 + 0.5)
    return model


def hooked_streams(model, input_ids):
    """Residual streams (layers + 1, seq, hidden) from hooks: block 0's input, then each block's output."""
    adapter = get_adapter(model)
    streams = []

    def before(module, args, kwargs):
        streams.append(args[0] if args else kwargs["hidden_states"])

    def after(module, args, output):
        streams.append(output[0] if isinstance(output, tuple) else output)

    hooks = [adapter.layers[0].register_forward_pre_hook(before, with_kwargs=True)]
    hooks += [block.register_forward_hook(after) for block in adapter.layers]
    try:
        with torch.no_grad():
            logits = model(input_ids).logits
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack([s[0] for s in streams]), logits[0]


def reference_lens(model, tokenizer, row):
    """Per layer: softmax(unembedding(final_norm(stream))) at the last position, one prompt alone."""
    adapter = get_adapter(model)
    streams, logits = hooked_streams(model, torch.tensor([tokenizer(row.prompt)["input_ids"]]))
    with torch.no_grad():
        lens_logits = adapter.unembedding(adapter.final_norm(streams[:, -1])).double()  # (layers + 1, vocab)
    result = {}
    for answer, ids in (("target", row.target_first_ids), ("source", row.source_first_ids)):
        probs = lens_logits.softmax(-1)
        result[f"p_{answer}"] = probs[:, ids].sum(-1)
        order = torch.argsort(lens_logits, dim=-1, descending=True)
        positions = torch.stack([(order == i).nonzero()[:, 1] for i in ids], dim=1)
        result[f"{answer}_rank"] = 1 + positions.min(dim=1).values
    return result, lens_logits[-1], logits[-1].double()


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_lens_equals_hand_applied_norm_and_unembedding(factory, tokenizer, encoded):
    model = with_random_norms(factory(len(tokenizer), seed=3, layers=3))
    lens = encoded_logit_lens(model, encoded, batch_size=16)
    assert lens.p_target.shape == (len(encoded), 4)
    for item, row in enumerate(encoded.pairs.itertuples()):
        expected, last_layer, real = reference_lens(model, tokenizer, row)
        torch.testing.assert_close(last_layer, real, rtol=1e-4, atol=1e-4)  # the lens's last layer is the output
        for name in ("p_target", "p_source"):
            torch.testing.assert_close(getattr(lens, name)[item], expected[name], rtol=1e-4, atol=1e-8)
        for name in ("target_rank", "source_rank"):
            assert getattr(lens, name)[item].tolist() == expected[name].tolist()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_last_layer_is_the_real_output_distribution_in_every_family(family, tokenizer, encoded):
    build, _ = FAMILIES[family]
    model = build()
    model.resize_token_embeddings(len(tokenizer))
    with_random_norms(model, seed=4)
    few = encoded.subset([0, 5, 11])
    lens = encoded_logit_lens(model, few, batch_size=3)
    scores = wlt_scores(model, tokenizer, few, batch_size=3)
    torch.testing.assert_close(lens.p_target[:, -1], torch.tensor(scores["p_target"].to_numpy()), rtol=1e-4,
                               atol=1e-8)
    torch.testing.assert_close(lens.p_source[:, -1], torch.tensor(scores["p_source"].to_numpy()), rtol=1e-4,
                               atol=1e-8)
    for item, row in enumerate(few.pairs.itertuples()):
        expected, _, real = reference_lens(model, tokenizer, row)
        assert torch.allclose(expected["p_target"][-1], real.softmax(-1)[row.target_first_ids].sum(), rtol=1e-4)
        torch.testing.assert_close(lens.p_target[item], expected["p_target"], rtol=1e-4, atol=1e-8)


def test_batched_equals_unbatched_with_either_padding(tokenizer, encoded):
    model = with_random_norms(tiny_llama(len(tokenizer), seed=5))
    one = encoded_logit_lens(model, encoded, batch_size=1)
    left = encode_wlt(encoded.pairs, tokenizer, padding_side="left")
    for other in (encoded_logit_lens(model, encoded, batch_size=16), encoded_logit_lens(model, left, batch_size=16)):
        torch.testing.assert_close(other.p_target, one.p_target, rtol=1e-4, atol=1e-8)
        torch.testing.assert_close(other.p_source, one.p_source, rtol=1e-4, atol=1e-8)
        assert torch.equal(other.target_rank, one.target_rank)


def test_rows_and_measure(tmp_path, tokenizer):
    run = write_local_run(tmp_path / "run", [0, 5], tokenizer=tokenizer)
    wlt_lexicon(["en", "es", "ru"]).save(run / "data" / "lexicon.parquet")
    series = open_series(run)
    measure = get_measure("logit_lens")
    config = validate_config({"shots": 2, "batch_size": 8}, measure.config_cls)
    assert isinstance(config, LogitLensConfig)
    context = MeasureContext(series, series.checkpoints[-1])
    frame = pd.DataFrame(measure.compute(context, config))
    layers = context.model.config.num_hidden_layers
    assert sorted(frame["layer"].unique()) == list(range(layers + 1))
    assert set(frame["metric"]) == {"p_target", "target_rank", "p_source", "source_rank"}
    encoded = next(value for key, value in context.cache.items() if key.startswith("wlt_encoding:"))
    lens = encoded_logit_lens(context.model, encoded)
    overall = frame[frame.subset == "all"].pivot(index="layer", columns="metric", values="value")
    torch.testing.assert_close(torch.tensor(overall["p_target"].to_numpy()), lens.p_target.mean(0), rtol=1e-6,
                               atol=0)
    torch.testing.assert_close(torch.tensor(overall["source_rank"].to_numpy()),
                               lens.source_rank.double().median(0).values
                               if len(encoded) % 2 else lens.source_rank.double().quantile(0.5, dim=0),
                               rtol=1e-6, atol=0)
    rows = pd.DataFrame(logit_lens_rows(encoded, lens))
    no_overlap = ~encoded.pairs["shared_first_token"].to_numpy()
    if no_overlap.any():
        value = rows[(rows.subset == "no_overlap") & (rows.layer == 1) & (rows.metric == "p_source")]["value"].item()
        assert value == pytest.approx(float(lens.p_source[torch.tensor(no_overlap), 1].mean()))
    long = lens.frame()
    assert len(long) == len(encoded) * (layers + 1)
    assert long[(long.item == 2) & (long.layer == 1)]["p_target"].item() == pytest.approx(float(lens.p_target[2, 1]))


def test_wlt_scores_read_from_the_lens_equal_their_own_forward_pass(tokenizer, encoded):
    model = tiny_gpt2(len(tokenizer), seed=6)
    lens = encoded_logit_lens(model, encoded, batch_size=16)
    own, from_lens = wlt_scores(model, tokenizer, encoded, batch_size=16), wlt_scores(model, tokenizer, encoded,
                                                                                      lens=lens)
    for column in ("p_target", "p_source"):
        torch.testing.assert_close(torch.tensor(from_lens[column].to_numpy()), torch.tensor(own[column].to_numpy()),
                                   rtol=1e-5, atol=1e-9)
    assert from_lens["target_rank"].tolist() == own["target_rank"].tolist()
    with pytest.raises(PhasescopeError, match="the logit lens has 3 items"):
        wlt_scores(model, tokenizer, encoded, lens=encoded_logit_lens(model, encoded.subset([0, 1, 2])))


def test_wlt_and_logit_lens_measures_share_one_forward_pass(tmp_path, tokenizer):
    run = write_local_run(tmp_path / "run", [0], tokenizer=tokenizer)
    wlt_lexicon(["en", "tr"]).save(run / "data" / "lexicon.parquet")
    series = open_series(run)
    context = MeasureContext(series, series.checkpoints[0])
    lens_config = validate_config({"shots": 2}, get_measure("logit_lens").config_cls)
    wlt_config = validate_config({"shots": 2, "batch_size": 5}, get_measure("wlt").config_cls)
    calls = []
    context.model.model.register_forward_hook(lambda *args: calls.append(1))
    lens_rows = pd.DataFrame(get_measure("logit_lens").compute(context, lens_config))
    passes = len(calls)
    wlt_rows = pd.DataFrame(get_measure("wlt").compute(context, wlt_config))
    assert passes > 0 and len(calls) == passes  # the wlt measure ran no forward pass of its own
    layers = context.model.config.num_hidden_layers
    last = lens_rows[(lens_rows.layer == layers) & (lens_rows.subset == "all")].set_index("metric")["value"]
    overall = wlt_rows[wlt_rows.src.isna() & (wlt_rows.subset == "all")].set_index("metric")["value"]
    assert overall["p_target"] == pytest.approx(last["p_target"]) and overall["p_source"] == pytest.approx(
        last["p_source"])
    model = series.load_model(series.checkpoints[0])
    direct = wlt_scores(model, tokenizer, build_wlt_pairs(wlt_lexicon(["en", "tr"]), shots=2))
    assert overall["p_target"] == pytest.approx(direct["p_target"].mean(), rel=1e-5)


# --- the lens on any prompts ---------------------------------------------------------------------------
PLAIN_PROMPTS = ["The cat sat on the", "Le chien mange", "dog: Hund\ncat:"]


def test_prompt_lens_equals_hand_applied_norm_and_unembedding(tokenizer):
    import phasescope
    from phasescope.data.wlt import first_token_ids

    model = with_random_norms(tiny_llama(len(tokenizer), seed=4))
    targets = ["mat", "du", "Katze"]
    frame = phasescope.logit_lens(model, tokenizer, PLAIN_PROMPTS, targets=targets, batch_size=2)
    layers = get_adapter(model).num_layers + 1
    assert len(frame) == len(PLAIN_PROMPTS) * layers
    assert list(frame.columns) == ["prompt_index", "prompt", "layer", "top_token", "p_top", "target", "p_target",
                                   "target_rank"]
    for index, (prompt, target) in enumerate(zip(PLAIN_PROMPTS, targets)):
        streams, _ = hooked_streams(model, torch.tensor([tokenizer(prompt)["input_ids"]]))
        with torch.no_grad():
            logits = get_adapter(model).unembedding(get_adapter(model).final_norm(streams[:, -1])).double()
        probabilities = logits.softmax(-1)
        ids = first_token_ids(tokenizer, target)
        rows = frame[frame.prompt_index == index].sort_values("layer")
        assert set(rows["prompt"]) == {prompt}
        torch.testing.assert_close(torch.tensor(rows["p_target"].to_numpy()), probabilities[:, ids].sum(-1),
                                   rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(torch.tensor(rows["p_top"].to_numpy()), probabilities.max(-1).values,
                                   rtol=1e-5, atol=1e-9)
        best = logits[:, ids].max(-1).values
        assert rows["target_rank"].tolist() == (1 + (logits > best[:, None]).sum(-1)).tolist()  # 1-based
        assert rows["top_token"].tolist() == [tokenizer.decode([int(i)]) for i in logits.argmax(-1)]
        assert set(rows["target"]) == {target}


def test_prompt_lens_takes_token_ids_and_no_targets(tokenizer):
    from phasescope.data.wlt import first_token_ids
    from phasescope.measures.logit_lens import prompt_logit_lens

    model = tiny_gpt2(len(tokenizer), seed=2)
    words = prompt_logit_lens(model, tokenizer, PLAIN_PROMPTS, targets=["mat", "du", "Katze"])
    ids = [first_token_ids(tokenizer, word) for word in ("mat", "du", "Katze")]
    as_ids = prompt_logit_lens(model, tokenizer, PLAIN_PROMPTS, targets=ids)
    assert as_ids["p_target"].tolist() == pytest.approx(words["p_target"].tolist(), rel=1e-12)
    single = prompt_logit_lens(model, tokenizer, PLAIN_PROMPTS[0], targets=[ids[0][0]])
    first = words[words.prompt_index == 0]
    token = ids[0][0]
    assert (single["p_target"].to_numpy() <= first["p_target"].to_numpy() + 1e-12).all()
    assert single["target"].iloc[0] == str(token)
    bare = prompt_logit_lens(model, tokenizer, PLAIN_PROMPTS)
    assert list(bare.columns) == ["prompt_index", "prompt", "layer", "top_token", "p_top"]
    assert bare["p_top"].tolist() == pytest.approx(words["p_top"].tolist(), rel=1e-12)


@pytest.mark.parametrize("targets, message", [
    (["mat"], "3 prompts but 1 targets"),
    (["mat", "", "x"], "target '' encodes to no tokens"),
    ([1, 2, 10**9], "are not ids of a"),
])
def test_prompt_lens_bad_targets_are_one_line_errors(tokenizer, targets, message):
    from phasescope.measures.logit_lens import prompt_logit_lens

    with pytest.raises(PhasescopeError, match=message) as error:
        prompt_logit_lens(tiny_llama(len(tokenizer)), tokenizer, PLAIN_PROMPTS, targets=targets)
    assert "\n" not in str(error.value)
