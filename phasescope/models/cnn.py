"""A small convolutional network without normalization layers (so its Hessian is that of the loss)."""

from __future__ import annotations

from torch import Tensor, nn

from phasescope.errors import PhasescopeError
from phasescope.models.mlp import ACTIVATIONS, scale_initialization
from phasescope.models.parameterization import (
    Parameterization,
    ScaledConv2d,
    ScaledLinear,
    layer_scaling,
    width_ratio,
)


class CNN(nn.Module):
    """Conv-activation-pool blocks, then a linear read-out.

    Args:
        input_shape: (channels, height, width) of one image; a flat vector of a square image
            (e.g. 64 = 1 x 8 x 8 digits) is reshaped.
        channels: output channels of each block; each block halves the spatial size.
        parameterization: ``"standard"`` or ``"mup"`` (see :mod:`phasescope.models.parameterization`);
            muP widens every block together by ``channels[0] / base_width``.
        base_width: the first block's channel count at which muP equals standard parameterization.
    """

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, channels: tuple[int, ...] = (16, 32),
                 kernel_size: int = 3, activation: str = "relu", init_scale: float = 1.0,
                 parameterization: Parameterization = "standard", base_width: int = 16) -> None:
        super().__init__()
        self.image_shape = image_shape(input_shape, "a CNN")
        # Without blocks the read-out sees the image itself: nothing grows with width, so SP.
        ratio = width_ratio(channels[0], base_width) if channels else 1.0
        in_channels, height, width = self.image_shape
        blocks: list[nn.Module] = []
        for i, out_channels in enumerate(channels):
            scaling = layer_scaling("input" if i == 0 else "hidden", parameterization, ratio)
            blocks += [ScaledConv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, scaling=scaling),
                       ACTIVATIONS[activation](), nn.AvgPool2d(2)]
            in_channels, height, width = out_channels, height // 2, width // 2
        if height * width == 0:
            raise PhasescopeError(f"a CNN with {len(channels)} blocks halves the image {len(channels)} times and "
                                  f"needs images of at least {2 ** len(channels)} pixels a side, "
                                  f"got image shape {self.image_shape}")
        self.features = nn.Sequential(*blocks)
        self.readout = ScaledLinear(in_channels * height * width, num_outputs,
                                    scaling=layer_scaling("output", parameterization, ratio))
        scale_initialization(self, init_scale)

    def forward(self, inputs: Tensor) -> Tensor:
        images = inputs.reshape(inputs.shape[0], *self.image_shape)  # (B, C, H, W)
        return self.readout(self.features(images).flatten(1))


def image_shape(input_shape: tuple[int, ...], model: str = "a CNN") -> tuple[int, int, int]:
    """(C, H, W) of an image input; a flat square input of n^2 values is one channel.

    Args:
        model: how to name the model in the error, e.g. ``"a ViT"``.
    """
    if len(input_shape) == 3:
        return tuple(input_shape)  # type: ignore[return-value]
    if len(input_shape) == 1:
        side = round(input_shape[0] ** 0.5)
        if side * side == input_shape[0]:
            return (1, side, side)
    raise PhasescopeError(f"{model} needs image inputs (C, H, W) or flat square images, got shape {tuple(input_shape)}")
