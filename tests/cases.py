"""Curvature test cases as data: each a small model, a loss and a dataset, in float64.

Every curvature test runs on every case (see the ``case`` fixture in conftest.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from phasescope.models import CNN, MLP
from phasescope.models.losses import cross_entropy, mean_squared_error


def _regression_targets(n: int, outputs: int, generator: torch.Generator) -> torch.Tensor:
    return F.one_hot(torch.randint(0, outputs, (n,), generator=generator), outputs).double()


def make_case(spec: dict) -> dict:
    """Materialize a case: model, loss_fn, inputs, targets (all float64, seeded)."""
    generator = torch.Generator().manual_seed(spec["seed"])
    torch.manual_seed(spec["seed"])
    model = spec["model"]().double()
    inputs = torch.randn(spec["n"], *spec["input_shape"], generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (spec["n"],), generator=generator)
    targets = F.one_hot(labels, 3).double() if spec["loss"] == "mse" else labels
    loss_fn = mean_squared_error if spec["loss"] == "mse" else cross_entropy
    return {**spec, "model": model, "loss_fn": loss_fn, "inputs": inputs, "targets": targets}


CASES = [
    {"name": "mlp-relu-mse", "model": lambda: MLP((6,), 3, depth=2, width=5, activation="relu"),
     "input_shape": (6,), "loss": "mse", "n": 20, "seed": 0},
    {"name": "mlp-tanh-mse", "model": lambda: MLP((6,), 3, depth=2, width=5, activation="tanh"),
     "input_shape": (6,), "loss": "mse", "n": 20, "seed": 1},
    {"name": "mlp-relu-ce", "model": lambda: MLP((6,), 3, depth=2, width=5, activation="relu"),
     "input_shape": (6,), "loss": "cross_entropy", "n": 20, "seed": 2},
    {"name": "mlp-tanh-ce", "model": lambda: MLP((6,), 3, depth=2, width=5, activation="tanh"),
     "input_shape": (6,), "loss": "cross_entropy", "n": 20, "seed": 3},
    {"name": "cnn-relu-mse", "model": lambda: CNN((1, 6, 6), 3, channels=(2, 3), activation="relu"),
     "input_shape": (1, 6, 6), "loss": "mse", "n": 12, "seed": 4},
    {"name": "cnn-tanh-ce", "model": lambda: CNN((1, 6, 6), 3, channels=(2, 3), activation="tanh"),
     "input_shape": (1, 6, 6), "loss": "cross_entropy", "n": 12, "seed": 5},
]


def dense_hessian(model: nn.Module, loss_fn, inputs: torch.Tensor, targets: torch.Tensor,
                  names: list[str] | None = None) -> torch.Tensor:
    """The reference: the full float64 Hessian by torch.autograd.functional.hessian on a flat vector."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    names = list(params) if names is None else names
    shapes = [params[k].shape for k in names]
    flat = torch.cat([params[k].reshape(-1) for k in names])

    def loss_of_flat(vector: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(vector, [math.prod(s) for s in shapes])
        current = dict(params)
        current.update({k: piece.view(s) for k, piece, s in zip(names, pieces, shapes)})
        return loss_fn(functional_call(model, current, (inputs,)), targets)

    return torch.autograd.functional.hessian(loss_of_flat, flat)
