"""The training path replayed: bitwise at every saved checkpoint, attribution along it equal to a plain
loop's own per-step decomposition, complete in float64, different from the chord, and its bad input."""

from __future__ import annotations

import copy
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.func import functional_call

from phasescope.data.corpora import build_corpus, document_kind
from phasescope.data.mixture import PackedStream, Source
from phasescope.data.tokenizer import load_tokenizer
from phasescope.errors import PhasescopeError
from phasescope.measures.attribution import chord_integrated_gradients
from phasescope.measures.replayed_attribution import replay_attribution
from phasescope.models.adapters import parameter_groups
from phasescope.run import MetricStore, validate_config
from phasescope.run.series import open_series
from phasescope.train.lm import LMRunConfig, train_lm
from phasescope.train.replay import replay_steps
from phasescope.train.schedules import wsd_learning_rate
from tests.helpers import phasescope_here
from tests.lm_fixtures import replayable_config, replayable_run, run_model, tiny_lm_run

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = replayable_config(12)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return replayable_run(tmp_path_factory.mktemp("replay") / "run", CONFIG)


def _model(run_path):
    return run_model(run_path, CONFIG)


PROMPTS = torch.tensor([[5, 17, 33, 8, 41, 2], [9, 9, 12, 60, 71, 100], [40, 3, 3, 88, 21, 7]])
TARGETS = torch.tensor([[11, 12], [50, 51], [20, 90]])


def objective(model):
    """Summed log of the next-token mass on two target tokens per prompt (the shape of the WLT objective)."""
    log_probs = model(input_ids=PROMPTS).logits[:, -1].double().log_softmax(-1)
    return torch.logsumexp(log_probs.gather(1, TARGETS), dim=1).sum()


def _saved(run_path, step):
    return load_file(str(run_path / "checkpoints" / f"step_{step:08d}" / "model.safetensors"))


def test_replay_passes_every_saved_checkpoint_bitwise_and_draws_trainings_batches(run):
    config = validate_config(CONFIG, LMRunConfig)
    stream = PackedStream(build_corpus(config.data), load_tokenizer(run / "tokenizer"), 32, 8, config.mixture,
                          config.seed)
    steps = list(replay_steps(run, 0, 12))
    assert [s.step for s in steps] == list(range(12))
    for replayed in steps:  # the stream from its start gives the very batches the replay used
        assert torch.equal(replayed.batch, stream.next_batch())
        assert sum(source.tokens for source in replayed.sources) == replayed.batch.numel()
    for step in (4, 8):  # the replay checked these itself; checked here again against the files
        saved = _saved(run, step)
        weights = {name: tensor for name, tensor in steps[step].before.items() if name in saved}
        assert weights and all(torch.equal(weights[name], saved[name]) for name in weights)
    # the lr, and the update: nonzero, the parameters moved
    assert [s.lr for s in steps] == [wsd_learning_rate(s, 1e-2, 12, config.train.lr_schedule) for s in range(12)]
    assert max(float(u.abs().max()) for u in steps[5].update.values()) > 1e-4


def test_sources_name_each_tokens_document(run):
    """Every token's (language, document) recorded by the stream is the document it was cut from."""
    config = validate_config(CONFIG, LMRunConfig)
    corpus = build_corpus(config.data)
    tokenizer = load_tokenizer(run / "tokenizer")
    replayed = next(iter(replay_steps(run, 0, 4, split_by=("language", "kind"))))
    tokens = replayed.batch.flatten().tolist()
    position = 0
    for source in replayed.sources:
        text = corpus.document(source.language, source.index)
        ids = tokenizer(text, add_special_tokens=True)["input_ids"] + [tokenizer.eos_token_id]
        piece = tokens[position:position + source.tokens]
        assert any(ids[i:i + len(piece)] == piece for i in range(len(ids) - len(piece) + 1)), source
        position += source.tokens
    kinds = {document_kind(corpus, s.language, s.index) for s in replayed.sources}
    assert replayed.kinds == [document_kind(corpus, s.language, s.index) for s in replayed.sources]
    assert {label.split("=")[1] for label in replayed.update_parts if label.startswith("kind=")} == kinds


def test_a_stream_state_saved_without_sources_labels_its_leftover_tokens_unknown(run):
    config = validate_config(CONFIG, LMRunConfig)
    stream = PackedStream(build_corpus(config.data), load_tokenizer(run / "tokenizer"), 32, 8, config.mixture, 0)
    stream.next_batch()
    state = stream.state_dict()
    leftover = len(state["buffer"])
    del state["buffer_sources"]
    stream.load_state_dict(state)
    stream.next_batch()
    assert leftover > 256 and stream.last_sources == [Source(None, 0, 0, 256)]  # the batch: all from before


def test_replay_across_checkpoints_of_a_resumed_run(run, tmp_path):
    """Checkpoints 8 and 12 rewritten by a run resumed from 4 (as after a kill): the replay reaches them."""
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    for step in (8, 12):
        shutil.rmtree(resumed / "checkpoints" / f"step_{step:08d}")
    outcome = train_lm(validate_config(CONFIG, LMRunConfig), resumed)
    assert outcome.resumed_from == 4
    last = list(replay_steps(resumed, 4, 12))[-1]
    saved = _saved(resumed, 12)
    assert all(torch.equal(value, saved[name]) for name, value in last.after.items() if name in saved)


def plain_loop_reference(run_path, steps=8, points=16):
    """Independent of the replay: a plain loop trains the run's model from scratch (torch's own AdamW,
    not fused; HF's loss; clip_grad_norm_) and at every step records f and, in float64 with a
    Gauss-Legendre rule on the step's segment, each parameter's part and each language's part; beside
    them, each step's gap under Simpson's rule alone. A language's gradient is taken through HF's loss
    with every other token's label set to -100."""
    config = validate_config(CONFIG, LMRunConfig)
    train = config.train
    tokenizer = load_tokenizer(run_path / "tokenizer")
    stream = PackedStream(build_corpus(config.data), tokenizer, train.seq_len, train.batch_size, config.mixture,
                          config.seed)
    model = _model(run_path)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": train.weight_decay},
                                   {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}],
                                  lr=train.lr, betas=train.betas, eps=train.eps, foreach=False)
    reference = copy.deepcopy(model).double()
    names = [name for name, _ in model.named_parameters()]
    nodes, weights = np.polynomial.legendre.leggauss(points)
    f_values, parts, languages, simpson_gaps = [], dict.fromkeys(names, 0.0), {}, []
    momenta: dict[str, list[torch.Tensor]] = {}
    beta1, beta2 = train.betas

    def f_and_grad(point):
        point = {k: v.detach().double().requires_grad_(True) for k, v in point.items()}
        value = objective(lambda input_ids: functional_call(reference, point, (), {"input_ids": input_ids}))
        return float(value.detach()), torch.autograd.grad(value, list(point.values()))

    for step in range(steps):
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        f_values.append(f_and_grad(before)[0])
        lr = wsd_learning_rate(step, train.lr, train.max_steps, train.lr_schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = stream.next_batch()
        codes = {language: code for code, language in enumerate(dict.fromkeys(s.language for s in stream.last_sources))}
        owner = torch.cat([torch.full((s.tokens,), codes[s.language]) for s in stream.last_sources]).view(batch.shape)
        n_predicted = batch.shape[0] * (batch.shape[1] - 1)
        by_language = {}
        for language, code in codes.items():
            labels = torch.where(owner == code, batch, torch.full_like(batch, -100))
            count = int((labels[:, 1:] != -100).sum())  # HF shifts: position 0 is never a label
            if count:
                loss = model(input_ids=batch, labels=labels).loss * count / n_predicted
                by_language[language] = torch.autograd.grad(loss, list(model.parameters()))
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip))
        clip = min(1.0, train.grad_clip / (norm + 1e-6))
        optimizer.step()
        optimizer.zero_grad()
        for language in by_language:
            momenta.setdefault(language, [torch.zeros_like(p) for p in model.parameters()])
        for language, momentum in momenta.items():
            for index, value in enumerate(momentum):
                value.mul_(beta1)
                if language in by_language:
                    value.add_(by_language[language][index], alpha=(1 - beta1) * clip)
        after = {name: p.detach().clone() for name, p in model.named_parameters()}
        delta = {name: after[name].double() - before[name].double() for name in names}
        scales = []
        for p in model.parameters():
            state = optimizer.state[p]
            t = float(state["step"])
            denominator = state["exp_avg_sq"].double().sqrt() / math.sqrt(1 - beta2 ** t) + train.eps
            scales.append(-lr / (1 - beta1 ** t) / denominator)
        simpson = [f_and_grad({name: before[name].double() + t * delta[name] for name in names}) for t in (0, 0.5, 1)]
        simpson_sum = sum(w * float((grad * delta[name]).sum()) for w, (_, grads) in zip((1 / 6, 4 / 6, 1 / 6), simpson)
                          for name, grad in zip(names, grads))
        simpson_gaps.append(abs(simpson_sum - (simpson[2][0] - simpson[0][0])))
        for node, weight in zip((nodes + 1) / 2, weights / 2):
            _, grads = f_and_grad({name: before[name].double() + float(node) * delta[name] for name in names})
            for name, grad in zip(names, grads):
                parts[name] += float(weight) * float((grad * delta[name]).sum())
            for language, momentum in momenta.items():
                languages[language] = languages.get(language, 0.0) + float(weight) * sum(
                    float((grad * scale * value.double()).sum()) for grad, scale, value in zip(grads, scales, momentum))
    f_values.append(f_and_grad({n: p.detach() for n, p in model.named_parameters()})[0])
    return f_values, parts, languages, simpson_gaps


def test_adaptive_attribution_meets_its_tolerance_and_equals_a_plain_loops_16_point_decomposition(run):
    expected_f, expected_parts, expected_languages, simpson_gaps = plain_loop_reference(run)
    model = _model(run).double()
    rtol = 1e-5
    result = replay_attribution(run, objective, 0, 8, model, split_by=("language", "kind"), rtol=rtol,
                                max_gradients=200)
    delta = result.delta_f
    assert abs(delta) > 1e-2  # f moved: a real test
    assert result.tolerance == pytest.approx(rtol * abs(delta))
    # this test's lr (1e-2 on a 32-wide model) makes long steps: Simpson's rule alone misses the tolerance
    assert max(simpson_gaps) > 5 * result.tolerance
    assert result.f_steps == pytest.approx(expected_f, abs=1e-6 * abs(delta) + 1e-9)  # float32 training rounds apart
    assert result.completeness_gap <= result.tolerance and result.tolerance_met  # the contract
    running = np.cumsum(result.step_gaps)  # each step kept the running gap within its share of the tolerance
    assert all(abs(value) <= result.tolerance * (index + 1) / 8 * (1 + 1e-9) for index, value in enumerate(running))
    assert result.step_gap_sum >= result.completeness_gap
    assert result.points == sum(result.step_gradients) and max(result.step_gradients) > 2  # refined past Simpson
    groups = parameter_groups(model)
    ours = result.grouped(groups)
    for group, members in groups.items():  # each part, not only their sum, within the tolerance's order
        assert ours[group] == pytest.approx(math.fsum(expected_parts[p] for p in members),
                                            abs=10 * rtol * abs(delta)), group
    for language, value in expected_languages.items():
        assert result.data[f"language={language}"] == pytest.approx(value, abs=10 * rtol * abs(delta)), language
    for dimension in ("language", "kind"):  # each split adds up to the change on its own
        assert result.data_total(dimension) == pytest.approx(result.total, abs=1e-6 * abs(delta))
    assert result.data["before"] == 0.0  # a run's start carries no momentum from earlier steps
    assert result.data["weight_decay"] != 0.0


def test_chord_and_replay_differ_where_the_path_curves(run):
    """From step 4 to 12 the updates turn (AdamW, clipping, the decaying lr): the steps' directions are
    far from the chord's, and the chord gives the parameter groups other parts, both complete."""
    steps = list(replay_steps(run, 4, 12))
    chord = {name: steps[-1].after[name] - steps[0].before[name] for name in steps[0].before}

    def cosine(a, b):
        dot = sum(float((a[n] * b[n]).sum()) for n in a)
        return dot / math.sqrt(sum(float((a[n] ** 2).sum()) for n in a) * sum(float((b[n] ** 2).sum()) for n in b))

    assert min(cosine(step.update, chord) for step in steps[:-1]) < 0.9  # the path is not the chord
    model = _model(run).double()
    replayed = replay_attribution(run, objective, 4, 12, model, rtol=1e-5)
    start = {name: tensor.double() for name, tensor in steps[0].before.items()}
    end = {name: tensor.double() for name, tensor in steps[-1].after.items()}
    straight = chord_integrated_gradients(model, objective, start, end, points=16, rule="gauss_legendre")
    assert replayed.delta_f == pytest.approx(straight.delta_f, rel=1e-9)
    assert replayed.relative_gap < 1e-4 and straight.relative_gap < 1e-4
    groups = parameter_groups(model)
    difference = max(abs(replayed.grouped(groups)[g] - straight.grouped(groups)[g]) for g in groups)
    assert difference > 100 * (replayed.completeness_gap + straight.completeness_gap)


def test_the_measure_replays_by_default_and_gives_data_rows(run, tmp_path, monkeypatch, capsys):
    measured = tmp_path / "measured"
    shutil.copytree(run, measured)
    for path in ("replay", "chord"):
        code, stderr = phasescope_here(monkeypatch, capsys, "measure", str(measured), "--measures", "path_attribution",
                                       "--checkpoints", "8", "--set", "path_attribution.precision=float64",
                                       "--set", "path_attribution.rtol=1e-4",
                                       "--set", "path_attribution.max_gradients=100",
                                       "--set", f"path_attribution.path={'auto' if path == 'replay' else path}",
                                       "--set", "path_attribution.max_concepts=2")
        assert code == 0, stderr
    rows = MetricStore(open_series(measured).run).read("path_attribution")
    assert set(rows.path) == {"replay", "chord"} and set(rows.step) == {8}
    replay, chord = rows[rows.path == "replay"], rows[rows.path == "chord"]
    value = lambda frame, metric: float(frame[frame.metric == metric].value.iloc[0])  # noqa: E731
    assert value(replay, "replayed_steps") == 4 and "replayed_steps" not in set(chord.metric)
    assert value(replay, "completeness_gap_relative") <= 1e-4 and value(replay, "tolerance_met") == 1
    assert value(replay, "completeness_tolerance") == pytest.approx(1e-4 * abs(value(replay, "delta_f")))
    assert 4 < value(replay, "objective_gradients") <= 100 and value(replay, "split_residual") < 1e-6
    assert value(replay, "gradients_per_step") == value(replay, "objective_gradients") / 4
    assert value(replay, "delta_f") == pytest.approx(value(chord, "delta_f"), rel=1e-9)
    data = replay[replay.metric == "data_attribution"]
    assert {"before", "weight_decay"} <= set(data.data) and any(data.data.str.startswith("kind="))
    languages = data[data.data.str.startswith("language=") | data.data.isin(["before", "weight_decay"])]
    assert languages.value.sum() == pytest.approx(value(replay, "f_end") - value(replay, "f_start"), rel=1e-4)


# ---- bad input ---------------------------------------------------------------------------------------
def test_a_series_without_resume_state_takes_the_chord_or_refuses_replay(tmp_path, monkeypatch, capsys):
    series, _ = tiny_lm_run(tmp_path / "hub-like", steps=(0, 10))
    path = str(series.run.path)
    code, stderr = phasescope_here(monkeypatch, capsys, "measure", path, "--measures", "path_attribution",
                                   "--set", "path_attribution.points=2", "--set", "path_attribution.shots=1")
    assert code == 0, stderr
    assert set(MetricStore(series.run).read("path_attribution").path) == {"chord"}
    code, stderr = phasescope_here(monkeypatch, capsys, "measure", path, "--measures", "path_attribution",
                                   "--set", "path_attribution.path=replay", "--set", "path_attribution.shots=1")
    assert code == 1
    assert [line for line in stderr.splitlines() if line.startswith("error")] == [
        f"error: path_attribution at step_00000010: {path}/checkpoints/step_00000000: no resume state (optimizer, "
        "data position) to replay from; use path: chord"], stderr
    assert "Traceback" not in stderr


def test_a_gap_a_changed_config_and_a_missed_checkpoint_are_one_line_errors(run, tmp_path):
    with pytest.raises(PhasescopeError, match=r"no checkpoint at step 10 \(a gap in the checkpoint chain.*path: chord"):
        replay_steps(run, 4, 10)
    changed = tmp_path / "changed"
    shutil.copytree(run, changed)
    text = (changed / "config.yaml").read_text()
    (changed / "config.yaml").write_text(text.replace("lr: 0.01", "lr: 0.02"))
    with pytest.raises(PhasescopeError, match="config changed since training.*path: chord"):
        replay_steps(changed, 4, 8)
    tampered = tmp_path / "tampered"
    shutil.copytree(run, tampered)
    weights = tampered / "checkpoints" / "step_00000008" / "model.safetensors"
    saved = load_file(str(weights))
    saved = {name: tensor + 1e-3 if index == 0 else tensor for index, (name, tensor) in enumerate(saved.items())}
    save_file(saved, str(weights), metadata={"format": "pt"})
    with pytest.raises(PhasescopeError, match=r"does not reach the saved checkpoint at step 8 bitwise "
                                              r"\(max \|difference\| 0.001.*path: chord"):
        list(replay_steps(tampered, 4, 8))
    assert len(list(replay_steps(tampered, 4, 8, tolerance=2e-3))) == 4  # accepted within a tolerance
    with pytest.raises(PhasescopeError, match="unknown data dimension 'topic'"):
        replay_steps(run, 4, 8, split_by=("topic",))
