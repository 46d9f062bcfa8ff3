"""The code paths that differ on a GPU, run on the device named by ``PHASESCOPE_TEST_DEVICE`` (default
``cpu``) against references computed on the CPU: HVP methods against a dense float64 Hessian, the
logit lens and WLT scores (bf16 autocast on CUDA) against a plain transformers forward pass, LM
training steps against the CPU's, resume and replay bitwise on the same device, path attribution's
completeness, and layer swap against the CPU's rows.

On the CPU these are cheap and check the device plumbing (models, batches and results moved where
they belong); ``benchmarks/gpu/run.sh`` runs them with ``PHASESCOPE_TEST_DEVICE=cuda``, where bf16
autocast applies and the tolerances below widen to bf16's (8 bits of mantissa: ~4e-3 relative).
"""

from __future__ import annotations

import os
import shutil
from copy import deepcopy

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.func import functional_call

from phasescope.curvature import sharpness
from phasescope.data.tokenizer import load_tokenizer
from phasescope.data.wlt import build_wlt_pairs, encode_wlt
from phasescope.measures.logit_lens import encoded_logit_lens
from phasescope.measures.registry import MeasureContext, get_measure
from phasescope.measures.replayed_attribution import replay_attribution
from phasescope.measures.translation import wlt_scores
from phasescope.models.llama import build_llama
from phasescope.run import MetricStore, RunDir, validate_config
from phasescope.run.series import open_series
from phasescope.train.lm import LMRunConfig, train_lm
from phasescope.train.replay import replay_steps
from tests.helpers import tiny_config
from tests.lm_fixtures import tiny_llama, wlt_lexicon, write_local_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def device() -> torch.device:
    name = os.environ.get("PHASESCOPE_TEST_DEVICE", "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.fail("PHASESCOPE_TEST_DEVICE=cuda but no CUDA GPU is available")
    return torch.device(name)


def bf16(device: torch.device) -> bool:
    """Whether phasescope runs this device under bf16 autocast (CUDA) rather than float32."""
    return device.type == "cuda"


def _dense_top_eigenvalue(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The largest eigenvalue of the full float64 Hessian of the mean squared error, on the CPU."""
    reference = {name: p.detach().cpu().double() for name, p in model.named_parameters()}
    names, shapes = list(reference), [p.shape for p in reference.values()]
    sizes = [p.numel() for p in reference.values()]
    copy = deepcopy(model).double()

    def loss(flat: torch.Tensor) -> torch.Tensor:
        pieces = dict(zip(names, (piece.view(shape) for piece, shape in zip(flat.split(sizes), shapes))))
        return ((functional_call(copy, pieces, (inputs.cpu().double(),)) - targets.cpu().double()) ** 2).mean()

    hessian = torch.autograd.functional.hessian(loss, torch.cat([p.flatten() for p in reference.values()]))
    return float(torch.linalg.eigvalsh(hessian)[-1])


@pytest.mark.parametrize("method", ["graph", "func", "double_backward"])
def test_sharpness_on_the_device_equals_the_dense_float64_hessian(device, method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 2))
    inputs, targets = torch.randn(40, 6), torch.randn(40, 2)
    expected = _dense_top_eigenvalue(model, inputs, targets)
    on_device = deepcopy(model).to(device)
    # torch's mse_loss has no forward-mode derivative (func: forward-over-reverse); the same loss by hand
    result = sharpness(on_device, lambda out, target: ((out - target) ** 2).mean(),
                       (inputs.to(device), targets.to(device)), tol=1e-7, method=method)
    assert result.method == method
    # HVPs run in float32 on any device (curvature never autocasts): float32's error, not bf16's
    assert result.eigenvalues[0] == pytest.approx(expected, rel=1e-4)


@pytest.fixture(scope="module")
def encoded(tokenizer):
    return encode_wlt(build_wlt_pairs(wlt_lexicon(["en", "fr", "ru"]), shots=2, seed=1), tokenizer)


def test_logit_lens_and_wlt_scores_on_the_device_equal_a_plain_cpu_forward(device, tokenizer, encoded):
    model = tiny_llama(len(tokenizer), seed=3)
    expected = []
    with torch.no_grad():  # one prompt at a time, float32, the model's own output distribution
        for row in encoded.pairs.itertuples():
            ids = torch.tensor([tokenizer(row.prompt)["input_ids"]])
            probabilities = model(input_ids=ids).logits[0, -1].double().softmax(-1)
            expected.append(float(probabilities[list(row.target_first_ids)].sum()))
    expected = torch.tensor(expected, dtype=torch.float64)
    model = model.to(device)
    lens = encoded_logit_lens(model, encoded, batch_size=4)
    scores = wlt_scores(model, tokenizer, encoded, batch_size=4)
    tolerance = dict(rtol=3e-2, atol=2e-3) if bf16(device) else dict(rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(lens.p_target[:, -1], expected, **tolerance)
    torch.testing.assert_close(torch.tensor(scores["p_target"].to_numpy()), expected, **tolerance)
    # batching on the device: one prompt per pass gives the same lens (padding changes nothing)
    torch.testing.assert_close(encoded_logit_lens(model, encoded, batch_size=1).p_target, lens.p_target, **tolerance)


# --- LM training, resume and replay on the device -----------------------------------------------------
CONFIG = tiny_config(train={"max_steps": 8, "batch_size": 8, "seq_len": 32, "lr": 1e-2, "log_every": 2,
                            "lr_schedule": {"warmup_steps": 2, "decay_fraction": 0.25}},
                     checkpoints={"schedule": "every_steps", "every": 4})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, device):
    """(the run trained on the device, the same run trained on the CPU)."""
    root = tmp_path_factory.mktemp("device-lm")
    on_device = root / "device"
    train_lm(validate_config({**CONFIG, "device": device.type}, LMRunConfig), on_device)
    on_cpu = root / "cpu"
    if device.type == "cpu":
        return on_device, on_device
    train_lm(validate_config({**CONFIG, "device": "cpu"}, LMRunConfig), on_cpu)
    return on_device, on_cpu


def _losses(run) -> pd.Series:
    log = MetricStore(RunDir.open(run)).read("train")
    return log[log.metric == "loss"].set_index("step")["value"].sort_index()


def _saved(run, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step:08d}" / "model.safetensors"))


def test_lm_training_on_the_device_follows_the_cpu_and_resumes_bitwise(trained, tmp_path, device):
    on_device, on_cpu = trained
    losses, reference = _losses(on_device), _losses(on_cpu)
    assert list(losses.index) == list(reference.index) and losses.notna().all()
    # the same batches and initialization: bf16 autocast moves the losses by rounding only
    assert losses.to_numpy() == pytest.approx(reference.to_numpy(), rel=2e-2 if bf16(device) else 1e-6)
    assert losses.iloc[-1] < losses.iloc[0]
    resumed = tmp_path / "resumed"
    shutil.copytree(on_device, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_00000008")
    outcome = train_lm(validate_config({**CONFIG, "device": device.type}, LMRunConfig), resumed)
    assert outcome.resumed_from == 4
    first, again = _saved(on_device, 8), _saved(resumed, 8)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)


def test_replay_on_the_device_reaches_the_checkpoint_bitwise_and_attribution_is_complete(trained, device):
    on_device, _ = trained
    last = list(replay_steps(on_device, 4, 8, device=device.type))[-1]  # raises unless bitwise
    saved = _saved(on_device, 8)
    assert all(torch.equal(value.cpu(), saved[name]) for name, value in last.after.items() if name in saved)

    prompts = torch.tensor([[5, 17, 33, 8, 41, 2], [9, 9, 12, 60, 71, 100]], device=device)
    targets = torch.tensor([[11, 12], [50, 51]], device=device)

    def objective(model):
        log_probs = model(input_ids=prompts).logits[:, -1].double().log_softmax(-1)
        return torch.logsumexp(log_probs.gather(1, targets), dim=1).sum()

    config = validate_config({**CONFIG, "device": device.type}, LMRunConfig)
    tokenizer = load_tokenizer(on_device / "tokenizer")
    model = build_llama(config.model, len(tokenizer), config.seed, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).to(device)
    attribution = replay_attribution(on_device, objective, 4, 8, model, split_by=("language",), device=device.type)
    assert abs(attribution.total - attribution.delta_f) <= 1e-3 * sum(map(abs, attribution.parameters.values()))
    assert attribution.data_total("language") == pytest.approx(attribution.total, rel=1e-6, abs=1e-9)


def test_layer_swap_on_the_device_equals_the_cpu(tmp_path, tokenizer, device):
    run = write_local_run(tmp_path / "run", [0, 5], tokenizer=tokenizer)
    wlt_lexicon(["en", "fr", "ru"]).save(run / "data" / "lexicon.parquet")
    series = open_series(run)
    measure = get_measure("layer_swap")
    config = validate_config({"shots": 2, "batch_size": 8}, measure.config_cls)
    rows = {}
    for where in {torch.device("cpu"), device}:
        frame = pd.DataFrame(measure.compute(MeasureContext(series, series.checkpoints[0], device=where), config))
        rows[where.type] = frame.set_index(["component", "metric", "subset"])["value"].sort_index()
    tolerance = dict(rtol=3e-2, atol=2e-3) if bf16(device) else dict(rtol=0, atol=0)
    torch.testing.assert_close(torch.tensor(rows[device.type].to_numpy()), torch.tensor(rows["cpu"].to_numpy()),
                               **tolerance)
    assert rows["cpu"].index.get_level_values("component").str.startswith("layers.").any()
