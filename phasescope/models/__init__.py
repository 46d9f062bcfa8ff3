"""Models: MLP, CNN, ResNet, ViT and diagonal linear networks, built from typed configs."""

from phasescope.models.adapters import ModelAdapter, get_adapter, parameter_groups
from phasescope.models.cnn import CNN
from phasescope.models.diagonal import DiagonalLinearNetwork
from phasescope.models.llama import (
    LlamaModelConfig,
    build_llama,
    count_parameters,
    llama_config,
    tied_parameter_names,
    training_flops_per_token,
)
from phasescope.models.mlp import MLP
from phasescope.models.parameterization import Parameterization, ScaledConv2d, ScaledLayerNorm, ScaledLinear
from phasescope.models.registry import (
    CNNConfig,
    DiagonalConfig,
    MLPConfig,
    ModelConfig,
    ResNetConfig,
    ViTConfig,
    build_model,
    model_checkpoint_config,
    model_from_checkpoint_config,
)
from phasescope.models.resnet import ResNet
from phasescope.models.vit import ViT

__all__ = ["CNN", "CNNConfig", "DiagonalConfig", "DiagonalLinearNetwork", "MLP", "MLPConfig", "ModelConfig",
           "Parameterization", "ResNet", "ResNetConfig", "ScaledConv2d", "ScaledLayerNorm", "ScaledLinear", "ViT",
           "ViTConfig", "build_model", "model_checkpoint_config", "model_from_checkpoint_config",
           "ModelAdapter", "get_adapter", "parameter_groups", "LlamaModelConfig", "build_llama", "count_parameters",
           "llama_config", "tied_parameter_names", "training_flops_per_token"]
