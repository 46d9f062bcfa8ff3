"""Model configs and the one function that builds a model from them.

A checkpoint's ``config.json`` is the model config plus the data shape, so a model can be rebuilt
from a checkpoint alone.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator
from torch import nn

from phasescope.errors import PhasescopeError
from phasescope.models.cnn import CNN
from phasescope.models.diagonal import DiagonalLinearNetwork
from phasescope.models.mlp import MLP
from phasescope.models.parameterization import Parameterization
from phasescope.models.resnet import ResNet
from phasescope.models.vit import ViT
from phasescope.run.config import StrictModel


class MLPConfig(StrictModel):
    arch: Literal["mlp"] = "mlp"
    depth: int = Field(2, ge=1)  # hidden layers
    width: int = Field(200, ge=1)
    activation: Literal["relu", "tanh"] = "tanh"
    init_scale: float = Field(1.0, gt=0)  # multiplies the initialization (PyTorch's default, or muP's)
    parameterization: Parameterization = "standard"  # or "mup": see phasescope.models.parameterization
    base_width: int = Field(200, ge=1)  # muP only: the width at which muP equals "standard" (the default width)


class CNNConfig(StrictModel):
    arch: Literal["cnn"] = "cnn"
    channels: tuple[int, ...] = (16, 32)  # one conv-activation-avgpool block each
    kernel_size: int = Field(3, ge=1)
    activation: Literal["relu", "tanh"] = "relu"
    init_scale: float = Field(1.0, gt=0)
    parameterization: Parameterization = "standard"
    # muP only: channels[0] at which muP equals "standard"; all blocks widen by channels[0] / base_width
    base_width: int = Field(16, ge=1)


class ResNetConfig(StrictModel):
    arch: Literal["resnet"] = "resnet"
    stages: tuple[int, ...] = Field((16, 32, 64), min_length=1)  # channels per stage; each later stage halves H, W
    num_blocks: int = Field(2, ge=1)  # residual blocks per stage
    activation: Literal["relu", "tanh"] = "relu"
    init_scale: float = Field(1.0, gt=0)
    # constant on every residual branch (no normalization layers); None: 1/sqrt(len(stages) * num_blocks)
    residual_scale: float | None = Field(None, gt=0)
    parameterization: Parameterization = "standard"
    base_width: int = Field(16, ge=1)  # muP only: stages[0] at which muP equals "standard"


class ViTConfig(StrictModel):
    arch: Literal["vit"] = "vit"
    patch_size: int = Field(4, ge=1)  # must divide the image height and width (4: 8x8 digits -> 4 patches)
    width: int = Field(64, ge=1)  # embedding dimension d_model
    depth: int = Field(2, ge=1)  # transformer blocks
    num_heads: int = Field(4, ge=1)  # must divide width
    mlp_ratio: int = Field(4, ge=1)  # MLP hidden units per embedding dimension
    activation: Literal["gelu", "relu", "tanh"] = "gelu"  # in the blocks' MLPs
    # "mean": average the patch tokens; "cls": read out a learned class token (original ViT), whose output is
    # more sensitive to the first GD steps on tiny images with few patches
    pooling: Literal["mean", "cls"] = "mean"
    init_scale: float = Field(1.0, gt=0)
    parameterization: Parameterization = "standard"  # muP also uses 1/d_head attention scaling
    base_width: int = Field(64, ge=1)  # muP only: the width at which muP equals "standard"

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ViTConfig:
        if self.width % self.num_heads:
            raise ValueError(f"width ({self.width}) must be a multiple of num_heads ({self.num_heads})")
        return self


class DiagonalConfig(StrictModel):
    arch: Literal["diagonal"] = "diagonal"
    parameterization: Literal["ww", "uu-vv", "uv"] = "uu-vv"
    alpha: float = Field(0.1, gt=0)  # initialization scale: small alpha is the rich (sparse) regime


AnyModelConfig = MLPConfig | CNNConfig | ResNetConfig | ViTConfig | DiagonalConfig
ModelConfig = Annotated[AnyModelConfig, Field(discriminator="arch")]


def build_model(config: AnyModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """A freshly initialized model for inputs of ``input_shape`` (one example) and ``num_outputs``.

    Raises:
        PhasescopeError: the model does not fit the data (e.g. a CNN, ResNet or ViT on inputs that
            are not images, or a ViT patch size that does not divide the image).
    """
    if isinstance(config, MLPConfig):
        return MLP(input_shape, num_outputs, config.depth, config.width, config.activation, config.init_scale,
                   config.parameterization, config.base_width)
    if isinstance(config, CNNConfig):
        return CNN(input_shape, num_outputs, config.channels, config.kernel_size, config.activation,
                   config.init_scale, config.parameterization, config.base_width)
    if isinstance(config, ResNetConfig):
        return ResNet(input_shape, num_outputs, config.stages, config.num_blocks, config.activation,
                      config.init_scale, config.residual_scale, config.parameterization, config.base_width)
    if isinstance(config, ViTConfig):
        return ViT(input_shape, num_outputs, config.patch_size, config.width, config.depth, config.num_heads,
                   config.mlp_ratio, config.activation, config.pooling, config.init_scale, config.parameterization,
                   config.base_width)
    if isinstance(config, DiagonalConfig):
        if len(input_shape) != 1 or num_outputs != 1:
            raise PhasescopeError("a diagonal linear network needs vector inputs and one output (regression), "
                                  f"got inputs {input_shape} and {num_outputs} outputs")
        return DiagonalLinearNetwork(input_shape[0], config.parameterization, config.alpha)
    raise PhasescopeError(f"unknown model config {type(config).__name__}")


def model_checkpoint_config(config: StrictModel, input_shape: tuple[int, ...], num_outputs: int) -> dict:
    """What a checkpoint's config.json holds: the model config and the data shape."""
    return {**config.model_dump(mode="json"), "input_shape": list(input_shape), "num_outputs": num_outputs}


def model_from_checkpoint_config(saved: dict) -> nn.Module:
    """Rebuild the (untrained) model described by a checkpoint's config.json."""
    from pydantic import TypeAdapter, ValidationError

    fields = {k: v for k, v in saved.items() if k not in ("input_shape", "num_outputs")}
    try:
        config = TypeAdapter(ModelConfig).validate_python(fields)
        return build_model(config, tuple(saved["input_shape"]), int(saved["num_outputs"]))
    except (ValidationError, KeyError) as error:
        raise PhasescopeError(f"checkpoint config.json does not describe a phasescope model: {error}") from None
