"""Linguistic ability: batched, padded scoring against a plain transformers computation, one sentence at a time."""

import re

import numpy as np
import pytest
import torch

from phasescope.measures.lm_quality import (
    heldout_scores,
    minimal_pair_correct,
    sentence_token_ids,
    sequence_log_probs,
)
from tests.lm_fixtures import SENTENCES, tiny_gpt2, tiny_llama


def one_sentence_log_prob(model, ids: list[int]) -> float:
    """transformers' own mean loss on one unpadded sentence, times the number of predicted tokens."""
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
    return -float(loss) * (len(ids) - 1)


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2])
def test_batched_padded_sentence_scores_equal_one_at_a_time(tokenizer, factory):
    model = factory(len(tokenizer), seed=5)
    ids = sentence_token_ids(tokenizer, SENTENCES)
    assert all(row[0] == tokenizer.bos_token_id for row in ids)
    batched = sequence_log_probs(model, ids, batch_size=5, pad_id=tokenizer.pad_token_id)  # lengths differ
    reference = [one_sentence_log_prob(model, row) for row in ids]
    np.testing.assert_allclose(batched, reference, rtol=1e-5, atol=1e-4)


def test_minimal_pair_accuracy_follows_the_scores(tokenizer):
    model = tiny_llama(len(tokenizer), seed=6)
    good = SENTENCES[:6]
    bad = SENTENCES[6:12]
    correct = minimal_pair_correct(model, tokenizer, good, bad, batch_size=4)
    scores = [one_sentence_log_prob(model, row) for row in sentence_token_ids(tokenizer, good + bad)]
    assert correct.tolist() == [scores[i] > scores[i + 6] for i in range(6)]
    assert minimal_pair_correct(model, tokenizer, good, good).sum() == 0  # a tie is not a success


def test_heldout_loss_and_accuracy_equal_the_plain_computation(tokenizer):
    model = tiny_llama(len(tokenizer), seed=7)
    ids = torch.randint(3, len(tokenizer), (5, 13), generator=torch.Generator().manual_seed(0))
    scores = heldout_scores(model, ids, batch_size=2)
    with torch.no_grad():
        outputs = model(input_ids=ids, labels=ids)
    assert scores["loss"] == pytest.approx(float(outputs.loss), rel=1e-5)
    predictions = outputs.logits[:, :-1].argmax(-1)
    assert scores["accuracy"] == pytest.approx(float((predictions == ids[:, 1:]).float().mean()))
    assert scores["tokens"] == 5 * 12
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # padding at the end of row 1: its last 5 targets do not count
    padded = heldout_scores(model, ids, attention_mask=mask, batch_size=3)
    labels = ids.clone()
    labels[1, 8:] = -100
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert padded["tokens"] == 5 * 12 - 5
    assert padded["loss"] == pytest.approx(float(reference), rel=1e-5)


# --- the measure -----------------------------------------------------------------------------------
def test_lm_quality_measure_from_text_files_and_from_the_run_corpus(tmp_path, tokenizer):
    from phasescope.errors import PhasescopeError
    from phasescope.measures.lm_quality import heldout_data
    from phasescope.measures.registry import MeasureContext, get_measure
    from phasescope.run.config import validate_config
    from phasescope.run.series import open_series
    from tests.lm_fixtures import write_local_run

    run = write_local_run(tmp_path / "run", [0, 10], tokenizer=tokenizer)
    texts = {"en": SENTENCES[7:8] * 4, "de": SENTENCES[8:9] * 4, "ru": SENTENCES[10:11] * 4}
    for language, blocks in texts.items():
        (tmp_path / f"{language}.txt").write_text("\n\n".join(blocks), encoding="utf-8")
    series = open_series(run)
    measure = get_measure("lm_quality")
    config = validate_config({"texts": {code: str(tmp_path / f"{code}.txt") for code in texts}, "seq_len": 10,
                              "sequences": 3, "batch_size": 2}, measure.config_cls)
    context = MeasureContext(series, series.checkpoints[1])
    rows = measure.compute(context, config)
    batches = heldout_data(series, config, tokenizer)
    assert batches["de"].shape == (3, 10)
    first = tokenizer(SENTENCES[8])["input_ids"]
    assert batches["de"][0, :len(first)].tolist() == first[:10]  # packed from the first held-out document
    model = series.load_model(series.checkpoints[1])
    losses = {}
    for language, batch in batches.items():
        with torch.no_grad():
            losses[language] = float(model(input_ids=batch, labels=batch).loss)
        row = next(r for r in rows if r["metric"] == "heldout_loss" and r.get("src") == language)
        assert row["value"] == pytest.approx(losses[language], rel=1e-5)
    overall = next(r for r in rows if r["metric"] == "heldout_loss" and r.get("src") is None)
    assert overall["value"] == pytest.approx(np.mean(list(losses.values())), rel=1e-5)  # equal token counts

    # an LM run's own corpus: the held-out split of `data:` in its config.yaml
    corpus = tmp_path / "corpus"
    for language, blocks in texts.items():
        (corpus / language).mkdir(parents=True)
        (corpus / language / "a.txt").write_text("\n\n".join(blocks * 3), encoding="utf-8")
    (run / "config.yaml").write_text(f"kind: lm\ndata:\n  source: local\n  root: {corpus}\n  txt_unit: paragraph\n"
                                     "  heldout_share: 0.5\n", encoding="utf-8")
    own = validate_config({"languages": ["ru"], "seq_len": 10, "sequences": 2}, measure.config_cls)
    rows = measure.compute(MeasureContext(series, series.checkpoints[1]), own)
    assert {r.get("src") for r in rows} == {"ru", None}
    (run / "config.yaml").write_text("kind: lm\n", encoding="utf-8")
    with pytest.raises(PhasescopeError, match="has no corpus .* give held-out text files"):
        measure.compute(MeasureContext(series, series.checkpoints[1]), own)


def test_minimal_pairs_measure_on_multiblimp_files_and_builtin_pairs(tmp_path, tokenizer):
    from phasescope.data.controlled_corpus import ControlledCorpus, ControlledCorpusConfig
    from phasescope.data.minimal_pairs import template_minimal_pairs
    from phasescope.errors import PhasescopeError
    from phasescope.measures.registry import MeasureContext, get_measure
    from phasescope.run.config import validate_config
    from phasescope.run.series import open_series
    from tests.lm_fixtures import write_local_run

    pairs = {"eng": [("The cat sees the dog.", "The cat see the dog.", "SV-#"),
                     ("The dogs see the cat.", "The dogs sees the cat.", "SV-#"),
                     ("I see the dog.", "I sees the dog.", "SV-P")],
             "deu": [("Die Katze sieht den Hund.", "Die Katze sehen den Hund.", "SV-#"),
                     ("Wir sehen den Hund.", "Wir sieht den Hund.", "SV-P")]}
    for code, rows in pairs.items():
        (tmp_path / "multiblimp" / code).mkdir(parents=True)
        lines = ["sen\twrong_sen\tphenomenon"] + ["\t".join(row) for row in rows]
        (tmp_path / "multiblimp" / code / "data.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = write_local_run(tmp_path / "run", [0], tokenizer=tokenizer)
    (run / "config.yaml").write_text("kind: lm\ndata:\n  source: controlled\n  languages: [en, de]\n", encoding="utf-8")
    series = open_series(run)
    measure = get_measure("minimal_pairs")
    config = validate_config({"multiblimp": str(tmp_path / "multiblimp"), "pairs_per_template": 1, "batch_size": 3},
                             measure.config_cls)
    rows = measure.compute(MeasureContext(series, series.checkpoints[0]), config)
    table = {(r["subset"], r["src"], r["component"], r["metric"]): r["value"] for r in rows}

    model = series.load_model(series.checkpoints[0])
    for code, language in (("eng", "en"), ("deu", "de")):
        right = [one_sentence_log_prob(model, ids[0]) > one_sentence_log_prob(model, ids[1]) for ids in
                 (sentence_token_ids(tokenizer, [good, bad]) for good, bad, _ in pairs[code])]
        assert table[("multiblimp", language, None, "accuracy")] == pytest.approx(np.mean(right))
        assert table[("multiblimp", language, None, "n_pairs")] == len(pairs[code])
    sv_number = [one_sentence_log_prob(model, ids[0]) > one_sentence_log_prob(model, ids[1]) for ids in
                 (sentence_token_ids(tokenizer, [good, bad]) for good, bad, kind in pairs["eng"] if kind == "SV-#")]
    assert table[("multiblimp", "en", "SV-#", "accuracy")] == pytest.approx(np.mean(sv_number))
    builtin = template_minimal_pairs(ControlledCorpus(ControlledCorpusConfig(languages=["en", "de"])), 1)
    assert table[("builtin", "en", None, "n_pairs")] == (builtin["language"] == "en").sum()
    assert table[("builtin", None, None, "n_pairs")] == len(builtin)
    assert 0 <= table[("builtin", "de", "word_order", "accuracy")] <= 1
    with pytest.raises(PhasescopeError, match="no minimal pairs"):
        validate_config({"builtin": False, "heldout_pairs": 0}, measure.config_cls)


def test_minimal_pairs_of_a_run_on_real_text_come_from_its_heldout_sentences(tmp_path, tokenizer):
    from phasescope.data.corpora import LocalCorpus, LocalCorpusConfig
    from phasescope.data.minimal_pairs import sentence_minimal_pairs
    from phasescope.errors import PhasescopeError
    from phasescope.measures.registry import MeasureContext, get_measure
    from phasescope.run.config import validate_config
    from phasescope.run.series import open_series
    from tests.lm_fixtures import write_local_run

    corpus = tmp_path / "corpus"
    prose = {"en": ["The cat sees the dog in the garden", "A printer prints the pages of a document"],
             "de": ["Die Katze sieht den Hund im Garten", "Ein Drucker druckt die Seiten eines Dokuments"]}
    for language, sentences in prose.items():
        (corpus / language).mkdir(parents=True)
        for index in range(6):  # a document per file
            text = " ".join(f"{sentence} number {index}." for sentence in sentences) + "\nshort line"
            (corpus / language / f"{index}.txt").write_text(text, encoding="utf-8")
    run = write_local_run(tmp_path / "run", [0], tokenizer=tokenizer)
    (run / "config.yaml").write_text(f"kind: lm\ndata:\n  source: local\n  root: {corpus}\n  txt_unit: file\n"
                                     "  heldout_share: 0.5\n", encoding="utf-8")
    series = open_series(run)
    measure = get_measure("minimal_pairs")
    config = validate_config({"heldout_pairs": 4, "seed": 3}, measure.config_cls)  # builtin: off on real text
    rows = measure.compute(MeasureContext(series, series.checkpoints[0]), config)
    table = {(r["subset"], r["src"], r["component"], r["metric"]): r["value"] for r in rows}
    assert {key[0] for key in table} == {"heldout"}
    local = LocalCorpus(LocalCorpusConfig(root=corpus, txt_unit="file", heldout_share=0.5))
    candidates = sentence_minimal_pairs({language: list(local.documents(language, split="heldout"))
                                         for language in ("en", "de")}, None, seed=3)  # a second construction
    lengths = [(len(sentence_token_ids(tokenizer, [good])[0]), len(sentence_token_ids(tokenizer, [bad])[0]))
               for good, bad in zip(candidates["good"], candidates["bad"])]
    expected = candidates[[a == b for a, b in lengths]].groupby("language").head(4)  # same token count only
    model = series.load_model(series.checkpoints[0])
    for language in ("en", "de"):
        mine = expected[expected["language"] == language]
        right = [one_sentence_log_prob(model, ids[0]) > one_sentence_log_prob(model, ids[1]) for ids in
                 (sentence_token_ids(tokenizer, [good, bad]) for good, bad in zip(mine["good"], mine["bad"]))]
        assert table[("heldout", language, None, "n_pairs")] == len(mine) == 4
        assert table[("heldout", language, None, "accuracy")] == pytest.approx(np.mean(right))
        assert table[("heldout", language, "adjacent_swap", "n_pairs")] == 4
    with pytest.raises(PhasescopeError, match="heldout_pairs: 0"):
        measure.compute(MeasureContext(series, series.checkpoints[0]),
                        validate_config({"heldout_pairs": 0}, measure.config_cls))

    class MergingTokenizer:  # "Die Katze" is one token: a swap of "Katze" splits it, the sentence grows by one
        bos_token_id = eos_token_id = None

        @staticmethod
        def encode(sentence, add_special_tokens=False):
            return [hash(token) % 1000 for token in re.findall(r"Die Katze|\S+", sentence)]

    from phasescope.measures.lm_quality import heldout_sentence_pairs
    kept = heldout_sentence_pairs(series, 50, ["de"], 3, MergingTokenizer())
    everything = candidates[candidates["language"] == "de"]
    split = everything["bad"].str.startswith("Die sieht Katze")
    assert split.any() and len(kept) == (~split).sum()  # every pair whose swap splits the merged token is dropped
    assert not kept["bad"].str.startswith("Die sieht Katze").any()
