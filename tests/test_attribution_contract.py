"""What attribution promises, checked on the shipped code: f in float64 is float64 (against a hand-written
float64 forward pass), the counterfactual replay against training and against a plain AdamW loop, and
one-line errors for a bad tolerance, budget, part or interval."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from phasescope.data.corpora import build_corpus
from phasescope.errors import PhasescopeError
from phasescope.measures.attribution import objective_value
from phasescope.measures.counterfactual import removal_effects
from phasescope.measures.path_attribution import attribution_objective
from phasescope.measures.quadrature import GradientBudget, Point, adaptive_mean_gradient
from phasescope.measures.registry import MeasureContext, get_measure
from phasescope.measures.replayed_attribution import check_budget, replay_attribution
from phasescope.measures.wlt_inputs import item_subsets, shared_wlt_encoding
from phasescope.run import MetricStore, RunDir, validate_config
from phasescope.run.series import open_series
from phasescope.train.data_split import data_parts
from phasescope.train.distributed import DistributedContext, load_full_states
from phasescope.train.lm import LMRunConfig
from phasescope.train.lm_checkpoint import read_lm_checkpoint
from phasescope.train.replay import replay_steps
from phasescope.train.schedules import wsd_learning_rate
from phasescope.train.step import build_optimizer
from tests.helpers import phasescope_here
from tests.lm_fixtures import replayable_config, replayable_run, run_model, tiny_lm_run

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = replayable_config(8)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return replayable_run(tmp_path_factory.mktemp("contract") / "run", CONFIG)


def _prompt_objective(model):
    prompts = torch.tensor([[5, 17, 33, 8, 41, 2], [9, 9, 12, 60, 71, 100]])
    log_probs = model(input_ids=prompts).logits[:, -1].log_softmax(-1)
    return log_probs[:, [11, 50]].logsumexp(-1).sum()


def _model(run_path, dtype=torch.float64):
    return run_model(run_path, CONFIG).to(dtype)


# ---- float64 is float64 ---------------------------------------------------------------------------
@pytest.mark.parametrize("objective", ["wlt_target", "wlt_source", "heldout_loss"])
def test_the_shipped_objectives_in_float64_agree_with_a_hand_written_float64_forward_to_1e_12(tmp_path, objective):
    series, texts = tiny_lm_run(tmp_path / "run")
    measure = get_measure("path_attribution")
    config = validate_config({"objective": objective, "subset": "all", "shots": 1, "precision": "float64",
                              "heldout": {"texts": texts, "seq_len": 8, "sequences": 4}}, measure.config_cls)
    context = MeasureContext(series, series.checkpoints[1], previous=series.checkpoints[0])
    model = copy.deepcopy(context.model).double()
    shipped = objective_value(attribution_objective(context, config), model)
    with torch.no_grad():
        if objective == "heldout_loss":
            from phasescope.measures.lm_quality import shared_heldout_data

            rows = torch.cat(list(shared_heldout_data(context, config.heldout).values()))
            total = 0.0
            for row in rows:  # one row at a time, float64 log-softmax written out
                logits = model(input_ids=row[None]).logits[0, :-1]
                assert logits.dtype == torch.float64
                log_z = torch.logsumexp(logits, -1)
                total += float((log_z - logits.gather(1, row[1:, None])[:, 0]).sum())
            reference = total / (rows.shape[0] * (rows.shape[1] - 1))
        else:
            encoded = shared_wlt_encoding(context, config)
            items = item_subsets(encoded.pairs)["all"].to_numpy().nonzero()[0]
            ids, mask = ((encoded.target_ids, encoded.target_mask) if objective == "wlt_target"
                         else (encoded.source_ids, encoded.source_mask))
            reference = 0.0
            for item in items:  # each prompt alone, unpadded
                length = int(encoded.lengths[item])
                prompt = (encoded.input_ids[item, :length] if encoded.padding_side == "right"
                          else encoded.input_ids[item, -length:])
                logits = model(input_ids=prompt[None]).logits[0, -1]
                assert logits.dtype == torch.float64
                log_probs = logits - torch.logsumexp(logits, -1)
                reference += float(torch.logsumexp(log_probs[ids[item][mask[item]]], -1))
    assert shipped == pytest.approx(reference, rel=1e-12)
    float32 = objective_value(attribution_objective(context, config), context.model)
    assert abs(float32 - reference) > 1e-12 * abs(reference)  # float32 is measurably not float64: a real test


# ---- the adaptive rule --------------------------------------------------------------------------
def test_adaptive_rule_on_a_one_dimensional_segment_meets_the_tolerance_or_reports_the_budget():
    """f(t) = sin(3t) on [0, 1], delta = 1: the mean gradient is f(1) - f(0) itself."""
    def evaluate(t):
        return Point(t, math.sin(3 * t), {"x": torch.tensor([3 * math.cos(3 * t)], dtype=torch.float64)})

    delta = {"x": torch.tensor([1.0], dtype=torch.float64)}
    exact = math.sin(3.0)
    for tolerance in (1e-2, 1e-6, 1e-10):
        budget = GradientBudget(None)
        result = adaptive_mean_gradient(evaluate, evaluate(0.0), evaluate(1.0), delta, tolerance, budget)
        assert abs(float(result.mean_gradient["x"]) - exact) <= tolerance
        assert result.gap == pytest.approx(float(result.mean_gradient["x"]) - exact, abs=1e-15)
        assert result.gradients == budget.spent
    short = adaptive_mean_gradient(evaluate, evaluate(0.0), evaluate(1.0), delta, 1e-10, GradientBudget(3))
    assert short.gradients == 3 and abs(short.gap) > 1e-10  # stopped by the budget, with the gap it reached


# ---- counterfactual removal -------------------------------------------------------------------------
def test_leaving_out_a_part_absent_from_the_interval_changes_nothing_bitwise(run):
    corpus = build_corpus(validate_config(CONFIG, LMRunConfig).data)
    present = set()
    for replayed in replay_steps(run, 4, 8):
        present |= {f"language={source.language}" for source in replayed.sources}
        present |= {f"kind={kind}" for kind in replayed.kinds}
    absent = [(dimension, value) for dimension in ("kind", "language") for value in data_parts(corpus, dimension)
              if f"{dimension}={value}" not in present]
    assert absent, present  # the tiny corpus's 4 steps leave some kind or language out
    trained = list(replay_steps(run, 4, 8))[-1].after
    removed = list(replay_steps(run, 4, 8, leave_out=absent))[-1].after
    assert all(torch.equal(trained[name], removed[name]) for name in trained)
    [effect] = removal_effects(run, _prompt_objective, 4, 8, _model(run), [absent[0]])
    assert effect.effect == 0.0 and effect.steps_changed == 0


def test_leaving_out_every_language_is_the_weight_decay_and_momentum_only_path(run):
    """All tokens left out: each step is AdamW on a zero gradient, checked against torch's own AdamW
    (not fused, not foreach) stepping on zero gradients from the checkpoint's state."""
    config = validate_config(CONFIG, LMRunConfig)
    corpus = build_corpus(config.data)
    everything = [("language", language) for language in data_parts(corpus, "language")]
    removed = list(replay_steps(run, 4, 8, leave_out=everything))[-1].after

    saved = read_lm_checkpoint(run / "checkpoints" / "step_00000004")
    model = _model(run, torch.float32)
    optimizer = build_optimizer(model, config.train)
    load_full_states(model, optimizer, saved.model_state, saved.optimizer_state,
                     DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))
    reference = torch.optim.AdamW(optimizer.param_groups, foreach=False)
    reference.load_state_dict(optimizer.state_dict())
    for step in range(4, 8):
        for group in reference.param_groups:
            group["lr"] = wsd_learning_rate(step, config.train.lr, config.train.max_steps, config.train.lr_schedule)
        for parameter in model.parameters():
            parameter.grad = torch.zeros_like(parameter)
        reference.step()
    moved = 0.0
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(removed[name], parameter.detach(), rtol=1e-6, atol=1e-7)
        moved = max(moved, float((parameter.detach() - saved.model_state[name]).abs().max()))
    assert moved > 1e-4  # momentum and weight decay alone still move the weights: a real test


def test_removal_of_a_present_part_changes_f_and_is_set_beside_its_attribution(run):
    model = _model(run)
    attributed = replay_attribution(run, _prompt_objective, 4, 8, model, split_by=("kind",), rtol=1e-4,
                                    max_gradients=200)
    kinds = [label.split("=")[1] for label in attributed.data if label.startswith("kind=")]
    effects = removal_effects(run, _prompt_objective, 4, 8, model, [("kind", kind) for kind in kinds])
    assert {effect.part for effect in effects} == {f"kind={kind}" for kind in kinds}
    assert all(effect.steps_changed > 0 for effect in effects)
    assert all(effect.f_trained == pytest.approx(attributed.f_end, rel=1e-12) for effect in effects)
    assert max(abs(effect.effect) for effect in effects) > 1e-3  # removing data moved f


# ---- bad input ----------------------------------------------------------------------------------
def test_bad_tolerance_budget_part_and_interval_are_one_line_errors(run, tmp_path):
    model = _model(run)
    with pytest.raises(PhasescopeError, match=r"rtol and atol must be > 0, got rtol=0, atol=1e-06"):
        replay_attribution(run, _prompt_objective, 4, 8, model, rtol=0)
    with pytest.raises(PhasescopeError, match=r"max_gradients 3 is too small for 4 replayed steps: .* at least "
                                              r"steps \+ 1 = 5"):
        replay_attribution(run, _prompt_objective, 4, 8, model, max_gradients=3)
    with pytest.raises(PhasescopeError, match="a step's rule must be one of adaptive, midpoint, gauss_legendre"):
        check_budget(4, None, "simpson")
    with pytest.raises(PhasescopeError, match=r"leave_out: the run's data has no language 'xx'; it has .*en"):
        removal_effects(run, _prompt_objective, 4, 8, model, [("language", "xx")])
    with pytest.raises(PhasescopeError, match=r"leave_out: unknown data dimension 'topic'"):
        replay_steps(run, 4, 8, leave_out=[("topic", "news")])
    series, _ = tiny_lm_run(tmp_path / "hub-like", steps=(0, 10))
    with pytest.raises(PhasescopeError, match=r"step_00000000: no resume state .* to replay from"):
        removal_effects(series.run.path, _prompt_objective, 0, 10, model, [("language", "en")])


def test_the_measure_reports_a_missed_tolerance_in_one_line_and_refuses_bad_settings(run, tmp_path, monkeypatch,
                                                                                     capsys):
    measured = tmp_path / "measured"
    shutil.copytree(run, measured)
    base = ("measure", str(measured), "--measures", "path_attribution", "--checkpoints", "8",
            "--set", "path_attribution.max_concepts=2")
    code, stderr = phasescope_here(monkeypatch, capsys, *base, "--set", "path_attribution.rtol=1e-12",
                                   "--set", "path_attribution.max_gradients=5")
    assert code == 0, stderr
    [line] = [line for line in stderr.splitlines() if "missed the tolerance" in line]
    assert "within 5 objective gradients" in line and "raise max_gradients" in line
    rows = MetricStore(open_series(measured).run).read("path_attribution").set_index("metric").value
    assert rows["tolerance_met"] == 0 and rows["objective_gradients"] == 5
    assert rows["completeness_gap"] > rows["completeness_tolerance"]
    for setting, message in (("rtol=0", "rtol"), ("max_gradients=3", "max_gradients 3 is too small for 4 replayed "
                                                                       "steps"), ("step_rule=simpson", "step_rule")):
        code, stderr = phasescope_here(monkeypatch, capsys, *base, "--set", f"path_attribution.{setting}")
        assert code != 0 and message in stderr and "Traceback" not in stderr, stderr


def test_consecutive_intervals_share_their_common_end_point(run, tmp_path, monkeypatch, capsys):
    """Measured together, interval 4-8 starts from interval 0-4's last gradient: one objective gradient fewer,
    the same parts as when 4-8 is measured alone (the replay reaches step 4 bitwise)."""
    frames = {}
    for name, checkpoints in (("together", "4,8"), ("alone", "8")):
        measured = tmp_path / name
        shutil.copytree(run, measured)
        code, stderr = phasescope_here(monkeypatch, capsys, "measure", str(measured), "--measures",
                                       "path_attribution", "--checkpoints", checkpoints,
                                       "--set", "path_attribution.max_concepts=2",
                                       "--set", "path_attribution.data=[kind]")
        assert code == 0, stderr
        rows = MetricStore(open_series(measured).run).read("path_attribution")
        frames[name] = rows[rows.step == 8].set_index(["metric", "component", "data"], drop=False).value
    together, alone = frames["together"], frames["alone"]
    gradients = ("objective_gradients", None, None)
    assert together[gradients] == alone[gradients] - 1
    shared = [key for key in alone.index if key[0] not in ("objective_gradients", "gradients_per_step")]
    assert together[shared].to_numpy() == pytest.approx(alone[shared].to_numpy(), rel=1e-12, abs=1e-12)


def _set_trained_on(run_path: Path, trained_on: dict | None) -> None:
    for checkpoint in RunDir(run_path).list_checkpoints():
        meta = json.loads((checkpoint.path / "state.json").read_text())
        meta.pop("trained_on", None)
        meta.update({"trained_on": trained_on} if trained_on else {})
        (checkpoint.path / "state.json").write_text(json.dumps(meta))


def test_replay_runs_where_the_run_trained_and_auto_takes_the_chord_with_the_reason_where_it_cannot(
        run, tmp_path, monkeypatch, capsys):
    from phasescope.train.replay import replay_device, trained_on

    assert trained_on(run, 4) == ("cpu", 1)  # recorded by training
    old = tmp_path / "old"
    shutil.copytree(run, old)
    _set_trained_on(old, None)  # a checkpoint written before the device was kept: inferred from its RNG states
    assert trained_on(old, 4) == ("cpu", 1) and replay_device(old, 4, 8) == "cpu"
    base = ("--measures", "path_attribution", "--checkpoints", "8", "--set", "path_attribution.max_concepts=2")
    for trained, reason in (({"device": "cpu", "processes": 2}, "trained on 2 processes"),
                            ({"device": "cuda", "processes": 1}, "trained on a GPU, and this machine has none")):
        if trained["device"] == "cuda" and torch.cuda.is_available():
            continue  # the GPU is here: the replay runs on it
        measured = tmp_path / trained["device"]
        shutil.copytree(run, measured)
        _set_trained_on(measured, trained)
        code, stderr = phasescope_here(monkeypatch, capsys, "measure", str(measured), *base)
        assert code == 0, stderr
        [line] = [line for line in stderr.splitlines() if "not the replay" in line]
        assert reason in line
        rows = MetricStore(open_series(measured).run).read("path_attribution")
        assert set(rows.path) == {"chord"} and rows.note.str.contains(reason).all()
        code, stderr = phasescope_here(monkeypatch, capsys, "measure", str(measured), *base,
                                       "--set", "path_attribution.path=replay", "--set", "path_attribution.rtol=1e-2")
        assert code != 0 and reason in stderr and "use path: chord" in stderr and "Traceback" not in stderr


def test_a_replay_that_will_not_fit_in_memory_is_refused_in_one_line(run, monkeypatch):
    import phasescope.train.replay as replay_module

    monkeypatch.setattr(replay_module, "free_memory", lambda device: 1000)
    with pytest.raises(PhasescopeError, match=r"the replay needs .* GiB \(\(5 \+ 2 x \d+ data labels\) x the weights\)"
                                              r" and cpu has 0.00 GiB free: split by fewer data dimensions") as error:
        next(iter(replay_module.replay_steps(run, 4, 8, split_by=("language",))))
    assert "\n" not in str(error.value)
