"""Models: MLP, CNN and diagonal linear networks, built from typed configs."""

from phasescope.models.cnn import CNN
from phasescope.models.diagonal import DiagonalLinearNetwork
from phasescope.models.mlp import MLP
from phasescope.models.registry import (
    CNNConfig,
    DiagonalConfig,
    MLPConfig,
    ModelConfig,
    build_model,
    model_checkpoint_config,
    model_from_checkpoint_config,
)

__all__ = ["CNN", "CNNConfig", "DiagonalConfig", "DiagonalLinearNetwork", "MLP", "MLPConfig", "ModelConfig",
           "build_model", "model_checkpoint_config", "model_from_checkpoint_config"]
