"""A small convolutional network without normalization layers (so its Hessian is that of the loss)."""

from __future__ import annotations

from torch import Tensor, nn

from phasescope.models.mlp import ACTIVATIONS, scale_initialization


class CNN(nn.Module):
    """Conv-activation-pool blocks, then a linear read-out.

    Args:
        input_shape: (channels, height, width) of one image; a flat vector of a square image
            (e.g. 64 = 1 x 8 x 8 digits) is reshaped.
        channels: output channels of each block; each block halves the spatial size.
    """

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, channels: tuple[int, ...] = (16, 32),
                 kernel_size: int = 3, activation: str = "relu", init_scale: float = 1.0) -> None:
        super().__init__()
        self.image_shape = image_shape(input_shape)
        in_channels, height, width = self.image_shape
        blocks: list[nn.Module] = []
        for out_channels in channels:
            blocks += [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                       ACTIVATIONS[activation](), nn.AvgPool2d(2)]
            in_channels, height, width = out_channels, height // 2, width // 2
        self.features = nn.Sequential(*blocks)
        self.readout = nn.Linear(in_channels * height * width, num_outputs)
        scale_initialization(self, init_scale)

    def forward(self, inputs: Tensor) -> Tensor:
        images = inputs.reshape(inputs.shape[0], *self.image_shape)  # (B, C, H, W)
        return self.readout(self.features(images).flatten(1))


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of an image input; a flat square input of n^2 values is one channel."""
    if len(input_shape) == 3:
        return tuple(input_shape)  # type: ignore[return-value]
    if len(input_shape) == 1:
        side = round(input_shape[0] ** 0.5)
        if side * side == input_shape[0]:
            return (1, side, side)
    from phasescope.errors import PhasescopeError
    raise PhasescopeError(f"a CNN needs image inputs (C, H, W) or flat square images, got shape {input_shape}")
