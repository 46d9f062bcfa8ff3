"""Standard and maximal-update (muP) parameterization, written with forward multipliers.

Yang, Hu et al., "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter
Transfer", 2022 (TP5). Table 3 there gives muP for SGD as per-layer initialization variances and
per-layer learning rates. phasescope trains with one global learning rate (full-batch GD, and
learning-rate grids vectorized with ``vmap``), so we use the equivalent "abc" form that needs no
per-layer learning rate: each stored parameter ``w`` enters the forward pass as ``W = c * w`` with
a constant multiplier ``c``. Plain GD with rate ``eta`` on ``w`` moves ``W`` as GD with rate
``c^2 * eta`` would, and ``W``'s initialization is ``c`` times ``w``'s. So a per-layer learning rate
``eta * r`` is the multiplier ``c = sqrt(r)``, and the stored initialization is divided by
``sqrt(r)`` to keep ``W``'s initialization unchanged (TP5 Section 3 / Appendix, the abc symmetry;
their Table 9 is the same form, written without a base width).

Width enters only through the ratio ``m = width / base_width``; at ``m = 1`` every multiplier and
every factor below is exactly 1, so muP *is* standard parameterization at the base width (same
seed, same parameters, same outputs), and widening moves away from it as muP prescribes.
"Standard" (SP) means each parameter's usual initialization: PyTorch's default for linear and
convolution layers (uniform with variance ``1/(3 fan_in)``, weights and biases), which is what
phasescope's MLP and CNN always used; gain 1 and bias 0 for LayerNorm; N(0, 0.02^2) for ViT
position embeddings.

Roles, with ``m = width / base_width`` (the fan_in of "input" layers and the fan_out of "output"
layers do not grow with width):

=========  ==================================  ==========  ==============  ==================  ===========
role       parameters                          multiplier  stored init     effective init      effective
                                                           (x SP init)     of ``c * w``        GD rate
=========  ==================================  ==========  ==============  ==================  ===========
input      first layer / stem / patch          sqrt(m)     1/sqrt(m)       SP                  eta * m
           embedding weights; position
           embeddings, class token; LayerNorm
           gains and biases (vector-like)
hidden     width -> width weights              1           1               SP                  eta
output     read-out weights                    1/sqrt(m)   1               SP variance / m     eta / m
bias of    input and hidden layers             sqrt(m)     1/sqrt(m) for   SP at base width    eta * m
                                                           input, 1 for    (does not shrink
                                                           hidden          with width)
bias of    the read-out                        1           sqrt(m)         SP at base width    eta
=========  ==================================  ==========  ==============  ==================  ===========

Against TP5 Table 3 (SGD): input weights and all biases have init variance 1/fan_in (fan_in = 1
for a bias, so width-independent) and learning rate ``eta * fan_out`` (``m`` for width-sized
vectors, 1 for the read-out bias); hidden weights have variance 1/fan_in and rate ``eta``; output
weights have variance 1/fan_in^2 (``1/(fan_in m)`` relative to the base) and rate ``eta / fan_in``.
Self-attention logits use ``1/d_head`` instead of ``1/sqrt(d_head)`` under muP (TP5 Section 4),
written ``sqrt(base_d_head) / d_head`` so that it is ``1/sqrt(d_head)`` at the base width (see
:func:`attention_scale`). TP5 also suggests zero-initializing the read-out and the query; we keep
SP's random initialization so that muP equals SP at the base width.

The model's parameters are the stored ``w``: GD, ``vmap``-ed learning-rate grids and Hessians all
see them, so the edge-of-stability threshold ``2/eta`` applies to the Hessian that phasescope's
curvature measures compute on ``model.named_parameters()``. :func:`forward_multipliers` gives the
``c`` of every parameter, for measures that want the effective weights ``c * w``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Parameterization = Literal["standard", "mup"]
Role = Literal["input", "hidden", "output"]


@dataclass(frozen=True)
class Scaling:
    """How one layer is parameterized: forward multipliers, and factors on its SP initialization."""

    weight_multiplier: float = 1.0
    weight_init: float = 1.0
    bias_multiplier: float = 1.0
    bias_init: float = 1.0


def layer_scaling(role: Role, parameterization: Parameterization, width_ratio: float) -> Scaling:
    """The :class:`Scaling` of a layer with ``role`` at ``width_ratio = width / base_width`` (module docstring)."""
    if parameterization == "standard":
        return Scaling()
    root = math.sqrt(width_ratio)
    if role == "input":
        return Scaling(weight_multiplier=root, weight_init=1 / root, bias_multiplier=root, bias_init=1 / root)
    if role == "hidden":
        return Scaling(bias_multiplier=root)
    if role == "output":
        return Scaling(weight_multiplier=1 / root, bias_init=root)
    raise AssertionError(f"unknown role {role!r}")


def width_ratio(width: int, base_width: int) -> float:
    """``m = width / base_width``; checked here so every model reports a bad base width the same way."""
    if base_width < 1:
        from phasescope.errors import PhasescopeError
        raise PhasescopeError(f"base_width must be a positive integer, got {base_width}")
    return width / base_width


def attention_scale(head_dim: int, base_head_dim: float, parameterization: Parameterization) -> float:
    """The factor on ``q . k``: ``1/sqrt(d_head)`` (SP) or ``sqrt(base_d_head)/d_head`` (muP, TP5 Sec. 4).

    Under muP, ``q`` and ``k`` become correlated during training, so ``q . k`` grows like ``d_head``
    rather than ``sqrt(d_head)``; dividing by ``d_head`` keeps the logits Theta(1) as width grows.
    """
    if parameterization == "standard":
        return 1 / math.sqrt(head_dim)
    return math.sqrt(base_head_dim) / head_dim


def forward_multipliers(model: nn.Module) -> dict[str, float]:
    """The constant each parameter is multiplied by in the forward pass, by parameter name (1 where none).

    A module declares the multiplier of its parameter ``p`` as the attribute ``p_multiplier``. GD with
    rate ``eta`` on a parameter with multiplier ``c`` moves its effective value ``c * p`` as GD with rate
    ``c^2 * eta`` would, so ``c^2`` is the parameter's per-layer learning-rate factor (TP5 Table 3).
    """
    multipliers = {}
    for name, _ in model.named_parameters():
        module_name, _, attribute = name.rpartition(".")
        multipliers[name] = float(getattr(model.get_submodule(module_name), f"{attribute}_multiplier", 1.0))
    return multipliers


def _rescale_initialization(module: nn.Module, scaling: Scaling) -> None:
    with torch.no_grad():
        if scaling.weight_init != 1.0:
            module.weight.mul_(scaling.weight_init)
        if module.bias is not None and scaling.bias_init != 1.0:
            module.bias.mul_(scaling.bias_init)


def _scaled(tensor: Tensor | None, multiplier: float) -> Tensor | None:
    # Skipping a multiplication by exactly 1 keeps SP bit-identical to the plain PyTorch layers.
    return tensor if tensor is None or multiplier == 1.0 else tensor * multiplier


class ScaledLinear(nn.Linear):
    """``nn.Linear`` whose weight and bias are multiplied by constants in the forward pass.

    Parameter names (``weight``, ``bias``) and PyTorch's default initialization are kept, then the
    stored parameters are multiplied by ``scaling.weight_init`` / ``scaling.bias_init``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, scaling: Scaling = Scaling()) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.weight_multiplier = scaling.weight_multiplier
        self.bias_multiplier = scaling.bias_multiplier
        _rescale_initialization(self, scaling)

    def forward(self, inputs: Tensor) -> Tensor:
        return F.linear(inputs, _scaled(self.weight, self.weight_multiplier), _scaled(self.bias, self.bias_multiplier))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_multiplier={self.weight_multiplier:g}, " \
               f"bias_multiplier={self.bias_multiplier:g}"


class ScaledConv2d(nn.Conv2d):
    """``nn.Conv2d`` with constant forward multipliers on weight and bias (see :class:`ScaledLinear`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 scaling: Scaling = Scaling()) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.weight_multiplier = scaling.weight_multiplier
        self.bias_multiplier = scaling.bias_multiplier
        _rescale_initialization(self, scaling)

    def forward(self, inputs: Tensor) -> Tensor:
        return self._conv_forward(inputs, _scaled(self.weight, self.weight_multiplier),
                                  _scaled(self.bias, self.bias_multiplier))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_multiplier={self.weight_multiplier:g}, " \
               f"bias_multiplier={self.bias_multiplier:g}"


class ScaledLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (no running statistics) with constant forward multipliers on gain and bias.

    Gain and bias are vector-like parameters: give them the ``"input"`` role.
    """

    def __init__(self, width: int, scaling: Scaling = Scaling()) -> None:
        super().__init__(width)
        self.weight_multiplier = scaling.weight_multiplier
        self.bias_multiplier = scaling.bias_multiplier
        _rescale_initialization(self, scaling)

    def forward(self, inputs: Tensor) -> Tensor:
        return F.layer_norm(inputs, self.normalized_shape, _scaled(self.weight, self.weight_multiplier),
                            _scaled(self.bias, self.bias_multiplier), self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_multiplier={self.weight_multiplier:g}, " \
               f"bias_multiplier={self.bias_multiplier:g}"
