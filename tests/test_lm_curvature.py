"""Curvature of a causal LM's loss against a dense float64 Hessian on a few restricted parameters."""

import math

import pytest
import torch
from torch.func import functional_call

from phasescope.measures.lm_curvature import (
    LogitsModule,
    lm_preconditioned_sharpness,
    lm_sharpness,
    shifted_cross_entropy,
)
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
        ours = shifted_cross_entropy(LogitsModule(model)(ids), labels)
        reference = model(input_ids=ids, labels=labels).loss
    assert float(ours) == pytest.approx(float(reference), rel=1e-6)
