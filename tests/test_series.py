"""Checkpoint series: local runs and Hub repos whose revisions are checkpoints (from a local cache)."""

import pytest
import torch

from phasescope.errors import PhasescopeError
from phasescope.run.series import open_series, parse_revision
from tests.lm_fixtures import tiny_llama, tiny_tokenizer, write_hub_cache, write_local_run


def test_revision_names_parse_to_steps_and_tokens():
    assert parse_revision("step143000", tokens_per_step=2_097_152) == (143000, 143000 * 2_097_152)
    assert parse_revision("step512") == (512, None)
    assert parse_revision("step1000-tokens4B") == (1000, 4_000_000_000)
    assert parse_revision("stage1-step1000-tokens5B") == (1000, 5_000_000_000)
    assert parse_revision("step20-tokens84M") == (20, 84_000_000)
    assert parse_revision("main") is None


def test_local_run_is_a_series_in_step_order(tmp_path, tokenizer):
    path = write_local_run(tmp_path / "run", [40, 0, 10], tokenizer=tokenizer)
    series = open_series(path)
    assert [c.step for c in series.checkpoints] == [0, 10, 40]
    assert [c.tokens for c in series.checkpoints] == [0, 10_000, 40_000]
    model = series.load_model(series.checkpoints[1])
    reference = tiny_llama(len(tokenizer), seed=2)  # step 10 was written third (seed = index 2)
    ids = torch.tensor([tokenizer.encode("The cat sees the dog.")])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)
    assert series.load_tokenizer().encode("Кошка") == tokenizer.encode("Кошка")


def test_hub_repo_revisions_load_as_a_series_in_step_order(tmp_path, tokenizer):
    cache = write_hub_cache(tmp_path / "cache", "acme/tiny-lm",
                            ["step1000", "main", "step0", "step20", "step3"], tokenizer=tokenizer)
    series = open_series("acme/tiny-lm", out=tmp_path / "metrics", cache_dir=str(cache), offline=True,
                         tokens_per_step=2048)
    assert [c.name for c in series.checkpoints] == ["step0", "step3", "step20", "step1000"]  # "main" is skipped
    assert [c.tokens for c in series.checkpoints] == [0, 3 * 2048, 20 * 2048, 1000 * 2048]
    model = series.load_model(series.checkpoints[2])  # step20 was the fourth revision written (seed 3)
    ids = torch.tensor([tokenizer.encode("Le chat voit le chien.")])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, tiny_llama(len(tokenizer), seed=3)(ids).logits)
    assert [f.name for f in series.weight_files(series.checkpoints[0])] == ["model.safetensors"]
    # the metrics run directory remembers the repo: reopening it gives the same series
    again = open_series(tmp_path / "metrics", offline=True)
    assert [c.name for c in again.checkpoints] == [c.name for c in series.checkpoints]


def test_olmo_style_revisions_and_an_explicit_list(tmp_path, tokenizer):
    cache = write_hub_cache(tmp_path / "cache", "acme/olmo-like",
                            ["step2000-tokens8B", "step1000-tokens4B", "stage1-step500-tokens2B"], tokenizer=tokenizer)
    series = open_series("acme/olmo-like", out=tmp_path / "m", cache_dir=str(cache), offline=True)
    assert [(c.step, c.tokens) for c in series.checkpoints] == [(500, 2 * 10**9), (1000, 4 * 10**9), (2000, 8 * 10**9)]
    chosen = open_series("acme/olmo-like", out=tmp_path / "m2", cache_dir=str(cache), offline=True,
                         revisions=["step2000-tokens8B", "step1000-tokens4B"])
    assert [c.step for c in chosen.checkpoints] == [1000, 2000]
    with pytest.raises(PhasescopeError, match="does not name a checkpoint"):
        open_series("acme/olmo-like", out=tmp_path / "m3", cache_dir=str(cache), offline=True, revisions=["main"])


def test_selection_strings(tmp_path, tokenizer):
    series = open_series(write_local_run(tmp_path / "run", [0, 1, 2, 4, 8, 16], tokenizer=tokenizer))
    steps = lambda selection: [c.step for c in series.select(selection)]  # noqa: E731
    assert steps(None) == [0, 1, 2, 4, 8, 16]
    assert steps("first,last") == [0, 16]
    assert steps("2..8") == [2, 4, 8]
    assert steps("..1,16") == [0, 1, 16]
    assert steps("every:4") == [0, 8, 16]
    with pytest.raises(PhasescopeError, match="no checkpoint at step 3"):
        series.select("3")
    with pytest.raises(PhasescopeError, match="expected all, first, last"):
        series.select("latest")


def test_a_checkpoint_with_another_tokenizer_is_reported(tmp_path, tokenizer):
    path = write_local_run(tmp_path / "run", [0, 10], tokenizer=tokenizer)
    other = tiny_tokenizer(vocab_size=280)
    other.save_pretrained(path / "checkpoints" / "step_00000000")
    series = open_series(path)
    series.check_tokenizer(series.checkpoints[1])
    with pytest.raises(PhasescopeError, match="step_00000000 has a different tokenizer"):
        series.check_tokenizer(series.checkpoints[0])


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(PhasescopeError, match="expected a run directory or a Hugging Face repo id"):
        open_series(str(tmp_path / "missing"))
    with pytest.raises(PhasescopeError, match="not in the Hugging Face cache"):
        open_series("acme/absent", out=tmp_path / "m", cache_dir=str(tmp_path / "empty"), offline=True)
