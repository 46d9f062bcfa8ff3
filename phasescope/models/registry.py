"""Model configs and the one function that builds a model from them.

A checkpoint's ``config.json`` is the model config plus the data shape, so a model can be rebuilt
from a checkpoint alone.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from torch import nn

from phasescope.errors import PhasescopeError
from phasescope.models.cnn import CNN
from phasescope.models.diagonal import DiagonalLinearNetwork
from phasescope.models.mlp import MLP
from phasescope.run.config import StrictModel


class MLPConfig(StrictModel):
    arch: Literal["mlp"] = "mlp"
    depth: int = Field(2, ge=1)  # hidden layers
    width: int = Field(200, ge=1)
    activation: Literal["relu", "tanh"] = "tanh"
    init_scale: float = Field(1.0, gt=0)  # multiplies PyTorch's default initialization


class CNNConfig(StrictModel):
    arch: Literal["cnn"] = "cnn"
    channels: tuple[int, ...] = (16, 32)  # one conv-activation-avgpool block each
    kernel_size: int = Field(3, ge=1)
    activation: Literal["relu", "tanh"] = "relu"
    init_scale: float = Field(1.0, gt=0)


class DiagonalConfig(StrictModel):
    arch: Literal["diagonal"] = "diagonal"
    parameterization: Literal["ww", "uu-vv", "uv"] = "uu-vv"
    alpha: float = Field(0.1, gt=0)  # initialization scale: small alpha is the rich (sparse) regime


ModelConfig = Annotated[MLPConfig | CNNConfig | DiagonalConfig, Field(discriminator="arch")]


def build_model(config: MLPConfig | CNNConfig | DiagonalConfig, input_shape: tuple[int, ...],
                num_outputs: int) -> nn.Module:
    """A freshly initialized model for inputs of ``input_shape`` (one example) and ``num_outputs``."""
    if isinstance(config, MLPConfig):
        return MLP(input_shape, num_outputs, config.depth, config.width, config.activation, config.init_scale)
    if isinstance(config, CNNConfig):
        return CNN(input_shape, num_outputs, config.channels, config.kernel_size, config.activation,
                   config.init_scale)
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
