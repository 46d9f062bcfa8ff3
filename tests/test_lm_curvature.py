"""Curvature of a causal LM's loss against a dense float64 Hessian on a few restricted parameters."""

import math

import pytest
import torch
from torch.func import functional_call

from phasescope.measures.lm_curvature import LogitsModule, lm_preconditioned_sharpness, lm_sharpness
from phasescope.models.losses import mean_next_token_loss
from tests.lm_fixtures import tiny_llama

VOCAB = 71
PARAMS = ["model.norm", "model.layers.1.input_layernorm"]  # 64 parameters: a small dense Hessian


def _batch():
    ids = torch.randint(0, VOCAB, (4, 10), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[0, 7:] = -100
    return ids, labels


def dense_lm_hessian(model, ids, labels, prefixes):
    """The reference: torch.autograd.functional.hessian of the HF loss on the flattened chosen parameters."""
    named = {name: p.detach() for name, p in model.named_parameters()
             if any(name == q or name.startswith(q + ".") for q in prefixes)}
    shapes = [p.shape for p in named.values()]
    flat = torch.cat([p.reshape(-1) for p in named.values()])

    def loss(vector):
        pieces = torch.split(vector, [math.prod(s) for s in shapes])
        params = {name: piece.view(shape) for name, piece, shape in zip(named, pieces, shapes)}
        return functional_call(model, params, (), {"input_ids": ids, "labels": labels}).loss

    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.MATH):
        return torch.autograd.functional.hessian(loss, flat), named


def test_sharpness_equals_the_top_eigenvalue_of_the_dense_hessian():
    model = tiny_llama(VOCAB, seed=1).double()
    ids, labels = _batch()
    hessian, named = dense_lm_hessian(model, ids, labels, PARAMS)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    result = lm_sharpness(model, ids, labels, params=PARAMS, k=2, tol=1e-8)
    assert result.eigenvalues.tolist() == pytest.approx(eigenvalues.flip(0)[:2].tolist(), rel=1e-6)

    # Adam-preconditioned: top eigenvalue of P^-1/2 H P^-1/2 with a random positive diagonal P
    diagonal = {name: 0.5 + torch.rand(p.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
                for name, p in named.items()}
    flat = torch.cat([d.reshape(-1) for d in diagonal.values()])
    scaled = hessian / flat.sqrt()[:, None] / flat.sqrt()[None, :]
    preconditioned = lm_preconditioned_sharpness(model, ids, labels, params=PARAMS, tol=1e-8,
                                                 preconditioner=diagonal, lr=0.01)
    assert preconditioned.eigenvalue == pytest.approx(float(torch.linalg.eigvalsh(scaled)[-1]), rel=1e-6)
    assert (preconditioned.adam_threshold, preconditioned.gd_threshold) == pytest.approx((3800.0, 200.0))


def test_shifted_loss_is_transformers_loss():
    model = tiny_llama(VOCAB, seed=2)
    ids, labels = _batch()
    with torch.no_grad():
        ours = mean_next_token_loss(LogitsModule(model)(ids), labels)
        reference = model(input_ids=ids, labels=labels).loss
    assert float(ours) == pytest.approx(float(reference), rel=1e-6)


def _adam_run(path, tokenizer, steps=(3,), next_lr=5e-4):
    """A run whose checkpoints carry AdamW state as the LM trainer saves it (after a few real AdamW steps)."""
    import json

    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    from phasescope.run import RunDir, atomic_directory
    from phasescope.run.checkpoint import flatten_optimizer_state

    run = RunDir.create(path, "kind: lm\n")
    model = tiny_llama(len(tokenizer), seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    ids = torch.randint(0, len(tokenizer), (4, 12), generator=torch.Generator().manual_seed(1))
    done = 0
    for step in steps:
        model.train()
        while done < step:
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            done += 1
        model.eval()
        tensors, groups = flatten_optimizer_state(get_optimizer_state_dict(model, optimizer))
        with atomic_directory(run.checkpoint_dir(step)) as directory:
            model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "state.safetensors"))
            meta = {"step": step, "tokens": step * 48, "scheduler": {"name": "wsd", "step": step, "next_lr": next_lr},
                    "optimizer_param_groups": groups}
            (directory / "state.json").write_text(json.dumps(meta))
    return run.path, model, optimizer


def test_lm_sharpness_measure_with_saved_adam_state(tmp_path):
    from phasescope.curvature import adam_preconditioner
    from phasescope.measures.lm_quality import heldout_data
    from phasescope.measures.registry import MeasureContext, get_measure
    from phasescope.run.config import validate_config
    from phasescope.run.series import open_series
    from tests.lm_fixtures import SENTENCES, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    path, trained, optimizer = _adam_run(tmp_path / "run", tokenizer)
    (tmp_path / "en.txt").write_text("\n\n".join(SENTENCES[7:10]), encoding="utf-8")
    series = open_series(path)
    measure = get_measure("lm_sharpness")
    config = validate_config({"texts": {"en": str(tmp_path / "en.txt")}, "seq_len": 9, "sequences": 3,
                              "params": PARAMS, "tol": 1e-6}, measure.config_cls)
    cache = {}
    context = MeasureContext(series, series.checkpoints[0], cache=cache)
    rows = {row["metric"]: row["value"] for row in measure.compute(context, config)}

    ids = heldout_data(series, config, tokenizer)["en"]
    model = series.load_model(series.checkpoints[0]).double()
    hessian, named = dense_lm_hessian(model, ids, ids, PARAMS)
    assert rows["sharpness"] == pytest.approx(float(torch.linalg.eigvalsh(hessian)[-1]), rel=1e-4)
    diagonal = adam_preconditioner(optimizer, trained)  # from the live optimizer, not the saved file
    flat = torch.cat([diagonal[name].double().reshape(-1) for name in named])
    scaled = hessian / flat.sqrt()[:, None] / flat.sqrt()[None, :]
    assert rows["preconditioned_sharpness"] == pytest.approx(float(torch.linalg.eigvalsh(scaled)[-1]), rel=1e-4)
    assert rows["adam_threshold"] == pytest.approx(38 / 5e-4)
    assert rows["gd_threshold"] == pytest.approx(2 / 5e-4)

    again = {row["metric"]: row["value"] for row in measure.compute(context, config)}  # warm-started
    assert again["hvps"] < rows["hvps"]
    assert again["sharpness"] == pytest.approx(rows["sharpness"], rel=1e-5)
