"""A small ResNet without normalization layers: stem, residual stages, global average pool, read-out.

No batch normalization: BatchNorm couples the examples of a batch and keeps running statistics
that change in the forward pass, which breaks ``torch.func`` (``functional_call``, ``vmap`` over a
learning-rate grid, forward-over-reverse Hessian-vector products) and makes the Hessian depend on
the batch. Stability comes from scaling each residual branch instead (see :class:`ResNet`).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from phasescope.errors import PhasescopeError
from phasescope.models.cnn import image_shape
from phasescope.models.mlp import ACTIVATIONS, scale_initialization
from phasescope.models.parameterization import (
    Parameterization,
    ScaledConv2d,
    ScaledLinear,
    Scaling,
    layer_scaling,
    width_ratio,
)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: ``skip(x) + residual_scale * conv(act(conv(act(x))))``.

    The skip is the identity, or a strided 1x1 convolution when the channels or the spatial size
    change (the first block of every stage after the first).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: str, residual_scale: float,
                 scaling: Scaling) -> None:
        super().__init__()
        self.activation = ACTIVATIONS[activation]()
        self.conv1 = ScaledConv2d(in_channels, out_channels, 3, stride=stride, padding=1, scaling=scaling)
        self.conv2 = ScaledConv2d(out_channels, out_channels, 3, padding=1, scaling=scaling)
        self.skip = (ScaledConv2d(in_channels, out_channels, 1, stride=stride, scaling=scaling)
                     if stride != 1 or in_channels != out_channels else nn.Identity())
        self.residual_scale = residual_scale

    def forward(self, inputs: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C_out, H / stride, W / stride)
        branch = self.conv2(self.activation(self.conv1(self.activation(inputs))))
        return self.skip(inputs) + self.residual_scale * branch


class ResNet(nn.Module):
    """Stem conv, ``num_blocks`` residual blocks per stage, global average pool, linear read-out.

    Every stage after the first halves the spatial size (stride 2 in its first block). Each
    residual branch is multiplied by the constant ``residual_scale``, by default
    ``1/sqrt(total blocks)``: without normalization, every block adds a branch whose variance is
    comparable to that of its input, so activations (and gradients) at initialization grow
    geometrically with depth; with branches scaled by ``1/sqrt(L)`` the variance after ``L`` blocks
    stays within a constant factor of the stem's, whatever the depth (Hayou et al., "Stable
    ResNet", AISTATS 2021; the same idea as SkipInit, De & Smith 2020, and Fixup, Zhang et al. 2019,
    without learnable scalars, which would add parameters to every norm and Hessian).

    Args:
        input_shape: (C, H, W) of one image, or a flat square image.
        stages: channels of each stage.
        num_blocks: residual blocks per stage.
        residual_scale: the constant on every residual branch; None for ``1/sqrt(len(stages) * num_blocks)``.
        parameterization: ``"standard"`` or ``"mup"`` (see :mod:`phasescope.models.parameterization`);
            muP widens every stage together by ``stages[0] / base_width``.
        base_width: the first stage's channel count at which muP equals standard parameterization.
    """

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, stages: tuple[int, ...] = (16, 32, 64),
                 num_blocks: int = 2, activation: str = "relu", init_scale: float = 1.0,
                 residual_scale: float | None = None, parameterization: Parameterization = "standard",
                 base_width: int = 16) -> None:
        super().__init__()
        self.image_shape = image_shape(input_shape, "a ResNet")
        if not stages or num_blocks < 1:
            raise PhasescopeError(f"a ResNet needs at least one stage and one block per stage, got stages={stages} "
                                  f"and num_blocks={num_blocks}")
        if residual_scale is None:
            residual_scale = 1 / math.sqrt(len(stages) * num_blocks)
        ratio = width_ratio(stages[0], base_width)
        hidden = layer_scaling("hidden", parameterization, ratio)
        self.stem = ScaledConv2d(self.image_shape[0], stages[0], 3, padding=1,
                                 scaling=layer_scaling("input", parameterization, ratio))
        blocks: list[nn.Module] = []
        in_channels = stages[0]
        for stage, channels in enumerate(stages):
            for block in range(num_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(ResidualBlock(in_channels, channels, stride, activation, residual_scale, hidden))
                in_channels = channels
        self.blocks = nn.Sequential(*blocks)
        self.activation = ACTIVATIONS[activation]()  # the last block's output is not yet activated
        self.readout = ScaledLinear(in_channels, num_outputs, scaling=layer_scaling("output", parameterization, ratio))
        scale_initialization(self, init_scale)

    def forward(self, inputs: Tensor) -> Tensor:
        images = inputs.reshape(inputs.shape[0], *self.image_shape)  # (B, C, H, W)
        features = self.activation(self.blocks(self.stem(images)))  # (B, stages[-1], H', W')
        return self.readout(features.mean(dim=(-2, -1)))  # global average pool, then (B, num_outputs)
