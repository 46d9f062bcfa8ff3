"""The WLT set, its encoding and the translation/copying scores, against a plain transformers forward pass."""

import json

import pandas as pd
import pytest
import torch

from phasescope import PhasescopeError
from phasescope.data.languages import endonym
from phasescope.data.lexicon import Lexicon
from phasescope.data.wlt import (
    DEFAULT_TEMPLATE,
    build_wlt_pairs,
    encode_wlt,
    first_token_ids,
    normalized_edit_distance,
    wlt_directions,
)
from phasescope.measures.lm_forward import wlt_log_probs
from phasescope.measures.registry import MeasureContext, get_measure
from phasescope.measures.translation import WLTConfig, extract_answer, greedy_answers, wlt_metric_rows, wlt_scores
from phasescope.run.config import validate_config
from phasescope.run.metrics import MetricStore
from phasescope.run.series import open_series
from tests.lm_fixtures import WLT_WORDS, tiny_gpt2, tiny_llama, wlt_lexicon, write_local_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_set(tokenizer):
    """Three languages (6 directions x 7 concepts = 42 items), two shots: short prompts for the model tests."""
    pairs = build_wlt_pairs(wlt_lexicon(["en", "de", "ru"]), shots=2, seed=3)
    return pairs, encode_wlt(pairs, tokenizer)


def reference_scores(model, tokenizer, row) -> dict:
    """One prompt alone through ``model(input_ids).logits``; answer tokens found independently."""
    input_ids = torch.tensor([tokenizer(row.prompt)["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids).logits[0, -1].double()
    probs = logits.softmax(-1)

    def first_ids(words):  # first token of w and of " " + w, a lone space token skipped
        ids = [tokenizer.encode(text, add_special_tokens=False) for w in words for text in (w, " " + w)]
        return {tokens[1] if tokenizer.convert_ids_to_tokens(tokens[0]) == "Ġ" else tokens[0] for tokens in ids}

    order = torch.argsort(logits, descending=True).tolist()
    target, source = first_ids(row.target_variants), first_ids([row.source_word])
    return {"p_target": float(probs[sorted(target)].sum()), "p_source": float(probs[sorted(source)].sum()),
            "target_rank": 1 + min(order.index(t) for t in target),
            "source_rank": 1 + min(order.index(t) for t in source)}


# --- the set -----------------------------------------------------------------------------------
def test_all_directed_pairs_of_nine_languages():
    lexicon = wlt_lexicon()
    pairs = build_wlt_pairs(lexicon)
    directions = set(zip(pairs["src"], pairs["tgt"]))
    assert len(wlt_directions(lexicon.languages)) == 72 and len(directions) == 72
    assert len(pairs) == 72 * 7
    assert pairs.groupby(["src", "tgt"]).size().eq(7).all()


def test_prompt_is_exactly_the_design_format():
    lexicon = wlt_lexicon(["en", "de"])
    one = Lexicon(lexicon.frame[lexicon.frame["concept"].isin(["dog", "cat"])])
    pairs = build_wlt_pairs(one, shots=1)
    row = pairs[(pairs["src"] == "en") & (pairs["concept"] == "dog")].iloc[0]
    assert row.prompt == 'English: "cat" - Deutsch: "Katze"\nEnglish: "dog" - Deutsch: "'
    assert row.target_variants == ["Hund"]
    row = pairs[(pairs["src"] == "de") & (pairs["concept"] == "dog")].iloc[0]
    assert row.prompt == 'Deutsch: "Katze" - English: "cat"\nDeutsch: "Hund" - English: "'


def test_exemplars_are_other_concepts_fixed_by_the_seed():
    lexicon = wlt_lexicon()
    pairs = build_wlt_pairs(lexicon, shots=5, seed=0)
    for row in pairs.itertuples():
        assert row.concept not in row.exemplars and len(set(row.exemplars)) == 5
        lines = row.prompt.split("\n")
        src, tgt = endonym(row.src), endonym(row.tgt)
        expected = [f'{src}: "{WLT_WORDS[c][row.src]}" - {tgt}: "{WLT_WORDS[c][row.tgt]}"' for c in row.exemplars]
        assert lines[:5] == expected
        assert lines[5] == f'{src}: "{row.source_word}" - {tgt}: "'
    again = build_wlt_pairs(lexicon, shots=5, seed=0)
    other = build_wlt_pairs(lexicon, shots=5, seed=1)
    assert again["prompt"].tolist() == pairs["prompt"].tolist()
    assert other["prompt"].tolist() != pairs["prompt"].tolist()


def test_exemplar_sampling_per_direction_and_per_item():
    lexicon = wlt_lexicon(["en", "de", "tr"])
    shared = build_wlt_pairs(lexicon, shots=3, seed=2)
    for _, direction in shared.groupby(["src", "tgt"]):
        sets = direction["exemplars"].map(tuple)
        common = sets.mode().iloc[0]
        assert (sets == common).sum() == len(direction) - 3  # all but the three exemplar concepts' own prompts
        for row in direction[sets != common].itertuples():
            assert row.concept in common and row.concept not in row.exemplars
    single = build_wlt_pairs(lexicon, shots=3, seed=2, exemplars="per_item")
    assert single.groupby(["src", "tgt"])["exemplars"].apply(lambda e: e.map(tuple).nunique()).gt(1).all()
    with pytest.raises(PhasescopeError, match="exemplars must be"):
        build_wlt_pairs(lexicon, exemplars="random")


def test_shared_heads_split_prompts_without_changing_their_tokens(tokenizer):
    pairs = build_wlt_pairs(wlt_lexicon(["en", "de", "ru"]), shots=2, seed=3)
    encoded = encode_wlt(pairs, tokenizer)
    assert (encoded.prefix_index >= 0).sum() == 6 * 5 and len(encoded.prefix_ids) == 6
    for item, prompt in enumerate(pairs["prompt"]):
        head = encoded.prefix_index[item]
        if head >= 0:
            suffix = encoded.suffix_ids[item, :encoded.suffix_lengths[item]]
            assert torch.cat([encoded.prefix_ids[head], suffix]).tolist() == tokenizer(prompt)["input_ids"]
            assert prompt.startswith(tokenizer.decode(encoded.prefix_ids[head], skip_special_tokens=True))
    per_item = encode_wlt(build_wlt_pairs(wlt_lexicon(["en", "de"]), shots=2, exemplars="per_item"), tokenizer)
    alone = encode_wlt(pairs, tokenizer, share_prefixes=False)
    assert (alone.prefix_index < 0).all() and len(per_item.prefix_ids) < 2
    batches = torch.cat(list(encoded.batches(4)))
    assert sorted(batches.tolist()) == list(range(len(pairs)))


def test_heldout_concepts_are_flagged_and_never_exemplars():
    pairs = build_wlt_pairs(wlt_lexicon(["en", "fr", "ja"]), shots=3, heldout_concepts=["sun", "moon"])
    assert set(pairs.loc[pairs["heldout"], "concept"]) == {"sun", "moon"}
    assert not any({"sun", "moon"} & set(exemplars) for exemplars in pairs["exemplars"])
    with pytest.raises(PhasescopeError, match="5 exemplars per prompt need 6 concepts"):
        build_wlt_pairs(wlt_lexicon(["en", "fr"]), shots=5, heldout_concepts=["sun", "moon"])


def test_max_concepts_keeps_the_same_concepts_in_every_direction():
    pairs = build_wlt_pairs(wlt_lexicon(), max_concepts=3, seed=4)
    kept = pairs.groupby(["src", "tgt"])["concept"].apply(frozenset)
    assert kept.map(len).eq(3).all() and kept.nunique() == 1


def test_template_option_and_bad_templates():
    pairs = build_wlt_pairs(wlt_lexicon(["en", "es"]), shots=1, template="{src_word} ({src_name}) = {tgt_word};")
    row = pairs.iloc[0]
    assert row.prompt.endswith(f"{row.source_word} (English) = ") and row.answer_suffix == ";"
    for bad, message in (("{src_word} {tgt_word} {oops}", "unknown field"), ("{src_word}", "tgt_word"),
                         ("{tgt_word} {src_word}", "must be the last")):
        with pytest.raises(PhasescopeError, match=message):
            build_wlt_pairs(wlt_lexicon(["en", "es"]), template=bad)


def test_surface_features(tokenizer):
    pairs = build_wlt_pairs(wlt_lexicon(["en", "de", "zh", "ja"]), shots=1)
    encoded = encode_wlt(pairs, tokenizer)
    frame = encoded.pairs.set_index(["src", "tgt", "concept"])
    assert frame.loc[("zh", "ja", "cat"), "identical"] and not frame.loc[("en", "de", "cat"), "identical"]
    assert frame.loc[("zh", "ja", "cat"), "token_jaccard"] == 1.0
    assert frame.loc[("zh", "ja", "cat"), "shared_first_token"]
    assert frame.loc[("zh", "ja", "cat"), "same_script"] and not frame.loc[("en", "zh", "cat"), "same_script"]
    assert normalized_edit_distance("Haus", "house") == pytest.approx(3 / 5)  # H->h, a->o, +e
    assert normalized_edit_distance("kitten", "sitting") == pytest.approx(3 / 7)
    assert frame.loc[("de", "en", "house"), "edit_distance"] == pytest.approx(3 / 5)
    for row in encoded.pairs.itertuples():
        source = set(first_token_ids(tokenizer, row.source_word))
        target = {t for v in row.target_variants for t in first_token_ids(tokenizer, v)}
        assert row.shared_first_token == bool(source & target)
        a = set(tokenizer.encode(row.source_word, add_special_tokens=False))
        b = set(tokenizer.encode(row.target_word, add_special_tokens=False))
        assert row.token_jaccard == pytest.approx(len(a & b) / len(a | b))


def test_first_tokens_with_and_without_a_leading_space(tokenizer):
    chien, space_chien = tokenizer.encode("chien"), tokenizer.encode(" chien")
    assert tokenizer.convert_ids_to_tokens([chien[0], space_chien[0]]) == ["ch", "Ġch"]
    assert first_token_ids(tokenizer, "chien") == sorted([chien[0], space_chien[0]])
    # " Hund" is a lone space token then "Hund": the space says nothing about the word, so it is passed over.
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode(" Hund")) == ["Ġ", "Hund"]
    assert first_token_ids(tokenizer, "Hund") == tokenizer.encode("Hund")


def test_language_the_tokenizer_cannot_encode_is_named():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    lexicon = wlt_lexicon(["en", "de"])
    latin = sorted({form for variants in lexicon.frame["variants"] for form in variants})
    vocab = {"[UNK]": 0, "[PAD]": 1, **{token: i + 2 for i, token in enumerate(
        latin + ["English", "Deutsch", ":", '"', "-", "Русский"])}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    encode_wlt(build_wlt_pairs(lexicon, shots=1), word_level)  # fine
    with pytest.raises(PhasescopeError, match="cannot encode language 'ru'"):
        encode_wlt(build_wlt_pairs(wlt_lexicon(["en", "ru"]), shots=1), word_level)


# --- scores against a plain forward pass ----------------------------------------------------------
@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_scores_equal_one_prompt_at_a_time_plain_transformers(factory, tokenizer, small_set):
    pairs, encoded = small_set
    model = factory(len(tokenizer), seed=5)
    scores = wlt_scores(model, tokenizer, encoded, batch_size=8)
    assert len(scores) == len(pairs) == 42
    for row in scores.itertuples():
        expected = reference_scores(model, tokenizer, row)
        assert row.p_target == pytest.approx(expected["p_target"], rel=1e-4, abs=1e-7)
        assert row.p_source == pytest.approx(expected["p_source"], rel=1e-4, abs=1e-7)
        assert (row.target_rank, row.source_rank) == (expected["target_rank"], expected["source_rank"])
        assert row.top1_correct == (expected["target_rank"] == 1)
        assert row.subset == ("overlap" if row.shared_first_token else "no_overlap")


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_batched_equals_unbatched_with_either_padding(factory, tokenizer, small_set):
    pairs, encoded = small_set
    model = factory(len(tokenizer), seed=6)
    one = wlt_scores(model, tokenizer, encoded, batch_size=1)
    for padding_side in ("right", "left"):
        batched = wlt_scores(model, tokenizer, encode_wlt(pairs, tokenizer, padding_side), batch_size=16)
        for column in ("p_target", "p_source"):
            torch.testing.assert_close(torch.tensor(batched[column].to_numpy()), torch.tensor(one[column].to_numpy()),
                                       rtol=1e-4, atol=1e-7)
        assert batched["target_rank"].tolist() == one["target_rank"].tolist()


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_shared_heads_give_the_scores_of_whole_prompts(factory, tokenizer, small_set):
    pairs, encoded = small_set
    model = factory(len(tokenizer), seed=4)
    whole = wlt_scores(model, tokenizer, encode_wlt(pairs, tokenizer, share_prefixes=False), batch_size=16)
    split = wlt_scores(model, tokenizer, encoded, batch_size=16)
    for column in ("p_target", "p_source"):
        torch.testing.assert_close(torch.tensor(split[column].to_numpy()), torch.tensor(whole[column].to_numpy()),
                                   rtol=1e-4, atol=1e-7)
    # One batch mixing two heads of different lengths and an item without a head.
    heads = encoded.prefix_index
    lengths = {int(h): len(encoded.prefix_ids[h]) for h in heads[heads >= 0].unique()}
    a, b = sorted(lengths, key=lengths.get)[0], sorted(lengths, key=lengths.get)[-1]
    mixed = torch.tensor([int((heads == a).nonzero()[0]), int((heads == -1).nonzero()[0]),
                          int((heads == b).nonzero()[0]), int((heads == a).nonzero()[1])])
    with torch.no_grad():
        picked = wlt_log_probs(model, encoded, batch_size=4, indices=mixed)
    torch.testing.assert_close(picked.exp().double(), torch.tensor(whole["p_target"].to_numpy()[mixed.numpy()]),
                               rtol=1e-4, atol=1e-7)


def test_wlt_log_probs_is_differentiable_and_matches_the_scores(tokenizer, small_set):
    _, encoded = small_set
    model = tiny_llama(len(tokenizer), seed=7)
    scores = wlt_scores(model, tokenizer, encoded, batch_size=16)
    for answer, column in (("target", "p_target"), ("source", "p_source")):
        log_probs = wlt_log_probs(model, encoded, batch_size=16, answer=answer)
        assert log_probs.shape == (len(encoded),) and log_probs.requires_grad
        torch.testing.assert_close(log_probs.exp().double(), torch.tensor(scores[column].to_numpy()), rtol=1e-4,
                                   atol=1e-7)
    subset = torch.tensor([5, 0, 9])
    picked = wlt_log_probs(model, encoded, batch_size=2, indices=subset)
    torch.testing.assert_close(picked.exp().double(), torch.tensor(scores["p_target"].to_numpy()[[5, 0, 9]]),
                               rtol=1e-4, atol=1e-7)
    picked.sum().backward()
    gradient = model.model.layers[0].mlp.down_proj.weight.grad
    assert gradient is not None and gradient.abs().sum() > 0


def test_greedy_answers_equal_a_plain_token_by_token_loop(tokenizer, small_set):
    pairs, _ = small_set
    chosen = pairs.iloc[[0, 7, 20, 33]].reset_index(drop=True)
    encoded = encode_wlt(chosen, tokenizer)
    model = tiny_llama(len(tokenizer), seed=8)
    answers = greedy_answers(model, tokenizer, encoded, batch_size=4, max_new_tokens=4)
    for prompt, answer in zip(chosen["prompt"], answers):
        ids = tokenizer(prompt)["input_ids"]
        with torch.no_grad():
            for _ in range(4):
                ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
        assert answer == tokenizer.decode(ids[-4:], skip_special_tokens=True)


def test_answer_extraction():
    assert extract_answer('Hund" - x', '"') == "Hund"
    assert extract_answer(' Hund\nEnglish: "', '"') == "Hund"
    assert extract_answer("Hund; more", ";") == "Hund"
    assert extract_answer("Hund", "") == "Hund"


def test_metric_rows_aggregate_per_direction_and_subset(tokenizer, small_set):
    pairs, _ = small_set
    held = build_wlt_pairs(wlt_lexicon(["en", "de", "ru"]), shots=2, seed=3, heldout_concepts=["tree"])
    scores = wlt_scores(tiny_llama(len(tokenizer), seed=9), tokenizer, held, batch_size=16)
    frame = pd.DataFrame(wlt_metric_rows(scores))
    assert set(frame["subset"]) >= {"all", "heldout_overlap", "heldout_no_overlap"} - {
        s for s, any_ in (("heldout_overlap", scores[scores.heldout].shared_first_token.any()),
                          ("heldout_no_overlap", (~scores[scores.heldout].shared_first_token).any())) if not any_}
    overall = frame[frame["src"].isna() & (frame["subset"] == "all")].set_index("metric")["value"]
    assert overall["p_target"] == pytest.approx(scores["p_target"].mean())
    assert overall["target_rank"] == pytest.approx(scores["target_rank"].median())
    assert overall["n_items"] == len(scores)
    en_de = scores[(scores.src == "en") & (scores.tgt == "de") & ~scores.shared_first_token]
    row = frame[(frame.src == "en") & (frame.tgt == "de") & (frame.subset == "no_overlap")].set_index("metric")
    if len(en_de):
        assert row.loc["copy_top1", "value"] == pytest.approx(en_de["copy_top1"].mean())
        assert row.loc["p_source", "value"] == pytest.approx(en_de["p_source"].mean())
    heldout = frame[frame.subset.str.startswith("heldout") & frame.src.isna() & (frame.metric == "n_items")]
    assert heldout["value"].sum() == scores["heldout"].sum() == 6


# --- the measure -------------------------------------------------------------------------------
def test_wlt_measure_on_a_local_run(tmp_path, tokenizer):
    run = write_local_run(tmp_path / "run", [0, 10], tokenizer=tokenizer)
    wlt_lexicon(["en", "de", "fr"]).save(run / "data" / "lexicon.parquet")
    (run / "data" / "heldout_concepts.json").write_text(json.dumps(["moon"]))
    series = open_series(run)
    measure = get_measure("wlt")
    config = validate_config({"shots": 2, "batch_size": 8}, measure.config_cls)
    cache: dict = {}
    store = MetricStore(series.run)
    for checkpoint in series.checkpoints:
        context = MeasureContext(series, checkpoint, cache=cache)
        rows = measure.compute(context, config)
        store.write_shard(checkpoint.step, "wlt", config, rows, tokens=checkpoint.tokens)
    assert len([key for key in cache if key.startswith("wlt_encoding:")]) == 1  # tokenized once
    frame = store.read("wlt")
    assert set(frame["step"]) == {0, 10}
    assert {"heldout_overlap", "heldout_no_overlap"} & set(frame["subset"])
    last = frame[(frame.step == 10) & frame.src.isna() & (frame.subset == "all")].set_index("metric")["value"]
    model = series.load_model(series.checkpoints[-1])
    pairs = build_wlt_pairs(wlt_lexicon(["en", "de", "fr"]), shots=2, heldout_concepts=["moon"])
    direct = wlt_scores(model, tokenizer, pairs)
    assert last["p_target"] == pytest.approx(direct["p_target"].mean(), rel=1e-6)
    assert last["n_items"] == 6 * 7


def test_wlt_config_errors_are_one_line():
    with pytest.raises(PhasescopeError, match=r"languages: .*unknown language code\(s\) 'xx'"):
        validate_config({"languages": ["en", "xx"]}, WLTConfig)
    with pytest.raises(PhasescopeError, match="tgt_word"):
        validate_config({"template": "{src_word}"}, WLTConfig)
    assert WLTConfig().template == DEFAULT_TEMPLATE


def test_the_lexicon_of_a_wlt_measure_is_the_file_given_cldr_or_the_runs_own(tmp_path):
    from phasescope.data.lexicon_sources import build_cldr_lexicon
    from phasescope.measures.wlt_inputs import resolve_lexicon
    from tests.lm_fixtures import small_lexicon, tiny_lm_run

    series, _ = tiny_lm_run(tmp_path / "run", steps=(0,))
    own = small_lexicon()
    assert sorted(resolve_lexicon(series, None).concepts) == sorted(own.concepts)  # data/lexicon.parquet
    cldr = resolve_lexicon(series, "cldr")  # beside the run's own, by name
    assert sorted(cldr.concepts) == sorted(build_cldr_lexicon().concepts) != sorted(own.concepts)
    other = small_lexicon(("en", "ru"))
    other.save(tmp_path / "other.parquet")
    assert resolve_lexicon(series, str(tmp_path / "other.parquet")).languages == other.languages
    (series.run.path / "data" / "lexicon.parquet").unlink()
    assert sorted(resolve_lexicon(series, None).concepts) == sorted(cldr.concepts)  # no own lexicon: CLDR
