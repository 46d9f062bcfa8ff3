"""Fully connected network for vectors or images (flattened)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from phasescope.models.parameterization import Parameterization, ScaledLinear, layer_scaling, width_ratio

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def scale_initialization(module: nn.Module, init_scale: float) -> None:
    """Multiply every parameter of ``module`` by ``init_scale`` (the initialization-scale knob)."""
    if init_scale != 1.0:
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(init_scale)


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units, then a linear read-out.

    Args:
        input_shape: shape of one example, e.g. (64,) or (1, 28, 28); it is flattened.
        num_outputs: width of the read-out (classes, or regression targets).
        activation: ``"relu"`` or ``"tanh"``.
        init_scale: factor applied to the initialization (PyTorch's default, or muP's).
        parameterization: ``"standard"`` or ``"mup"`` (see :mod:`phasescope.models.parameterization`).
        base_width: the width at which muP equals standard parameterization.
    """

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, depth: int = 2, width: int = 200,
                 activation: str = "tanh", init_scale: float = 1.0, parameterization: Parameterization = "standard",
                 base_width: int = 200) -> None:
        super().__init__()
        ratio = width_ratio(width, base_width)
        sizes = [math.prod(input_shape), *[width] * depth, num_outputs]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            role = "input" if i == 0 else "output" if i == depth else "hidden"
            layers.append(ScaledLinear(fan_in, fan_out, scaling=layer_scaling(role, parameterization, ratio)))
            if i < depth:
                layers.append(ACTIVATIONS[activation]())
        self.layers = nn.Sequential(*layers)
        scale_initialization(self, init_scale)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.layers(inputs.flatten(1))  # (B, num_outputs)
