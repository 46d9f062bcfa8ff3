"""A tiny Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021).

Patch embedding, learned position embeddings, a class token or mean pooling, ``depth`` pre-LN
transformer blocks, a linear read-out. Self-attention is written out (q, k, v projections and a
softmax) rather than taken from ``nn.MultiheadAttention`` or ``F.scaled_dot_product_attention``:
the attention scale is ours to set (``1/d_head`` under muP), and the fused CPU kernel behind
``scaled_dot_product_attention`` has no forward-mode AD (torch 2.13: ``jvp(grad(...))`` raises
NotImplementedError), which Hessian-vector products need. LayerNorm keeps no running statistics,
so it is safe under ``torch.func``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from phasescope.errors import PhasescopeError
from phasescope.models.cnn import image_shape
from phasescope.models.mlp import ACTIVATIONS, scale_initialization
from phasescope.models.parameterization import (
    Parameterization,
    ScaledConv2d,
    ScaledLayerNorm,
    ScaledLinear,
    attention_scale,
    layer_scaling,
    width_ratio,
)

POSITION_STD = 0.02  # position embeddings start as N(0, 0.02^2), as in ViT / timm
# The class token starts as N(0, 1), like a token embedding (variance 1/fan_in with fan_in 1, TP5 Table 3), not
# tiny as in timm: it is the only content of its slot, and a tiny vector entering LayerNorm makes LayerNorm's
# Jacobian (~ 1/std of its input) huge, so the first GD steps would move the class token's output violently.
CLASS_TOKEN_STD = 1.0


class SelfAttention(nn.Module):
    """Multi-head softmax self-attention over all tokens (no mask)."""

    def __init__(self, width: int, num_heads: int, base_width: int, parameterization: Parameterization,
                 ratio: float) -> None:
        super().__init__()
        hidden = layer_scaling("hidden", parameterization, ratio)
        self.num_heads = num_heads
        self.query = ScaledLinear(width, width, scaling=hidden)
        self.key = ScaledLinear(width, width, scaling=hidden)
        self.value = ScaledLinear(width, width, scaling=hidden)
        self.output = ScaledLinear(width, width, scaling=hidden)
        self.scale = attention_scale(width // num_heads, base_width / num_heads, parameterization)

    def forward(self, tokens: Tensor) -> Tensor:  # (B, T, D) -> (B, T, D)
        batch, length, width = tokens.shape

        def heads(projected: Tensor) -> Tensor:  # (B, T, D) -> (B, nh, T, hs)
            return projected.reshape(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)

        query, key, value = heads(self.query(tokens)), heads(self.key(tokens)), heads(self.value(tokens))
        weights = torch.softmax((query @ key.transpose(-2, -1)) * self.scale, dim=-1)  # (B, nh, T, T)
        attended = (weights @ value).transpose(1, 2).reshape(batch, length, width)  # (B, T, D)
        return self.output(attended)


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: int, activation: str, base_width: int,
                 parameterization: Parameterization, ratio: float) -> None:
        super().__init__()
        vector = layer_scaling("input", parameterization, ratio)  # LayerNorm gains and biases are vector-like
        hidden = layer_scaling("hidden", parameterization, ratio)
        self.attention_norm = ScaledLayerNorm(width, scaling=vector)
        self.attention = SelfAttention(width, num_heads, base_width, parameterization, ratio)
        self.mlp_norm = ScaledLayerNorm(width, scaling=vector)
        self.mlp = nn.Sequential(ScaledLinear(width, mlp_ratio * width, scaling=hidden), ACTIVATIONS[activation](),
                                 ScaledLinear(mlp_ratio * width, width, scaling=hidden))

    def forward(self, tokens: Tensor) -> Tensor:  # (B, T, D)
        tokens = tokens + self.attention(self.attention_norm(tokens))
        return tokens + self.mlp(self.mlp_norm(tokens))


class ViT(nn.Module):
    """A tiny ViT classifier / regressor on images.

    Args:
        input_shape: (C, H, W) of one image, or a flat square image; ``patch_size`` must divide H and W.
        width: the embedding dimension (d_model); a multiple of ``num_heads``.
        depth: transformer blocks.
        mlp_ratio: hidden units of each block's MLP per embedding dimension.
        pooling: ``"cls"`` (read out a learned class token) or ``"mean"`` (average the patch tokens).
        parameterization: ``"standard"`` or ``"mup"`` (see :mod:`phasescope.models.parameterization`).
        base_width: the width at which muP equals standard parameterization.
    """

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, patch_size: int = 4, width: int = 64,
                 depth: int = 2, num_heads: int = 4, mlp_ratio: int = 4, activation: str = "gelu",
                 pooling: str = "mean", init_scale: float = 1.0, parameterization: Parameterization = "standard",
                 base_width: int = 64) -> None:
        super().__init__()
        self.image_shape = image_shape(input_shape, "a ViT")
        channels, height, image_width = self.image_shape
        if patch_size < 1 or height % patch_size or image_width % patch_size:
            raise PhasescopeError(f"a ViT with patch_size {patch_size} needs image height and width divisible by "
                                  f"{patch_size}, got image shape {self.image_shape}")
        if num_heads < 1 or width % num_heads:
            raise PhasescopeError(f"a ViT's width must be a multiple of num_heads, got width {width} and "
                                  f"num_heads {num_heads}")
        if pooling not in ("cls", "mean"):
            raise PhasescopeError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        ratio = width_ratio(width, base_width)
        embedding = layer_scaling("input", parameterization, ratio)
        self.pooling = pooling
        self.patch_embedding = ScaledConv2d(channels, width, patch_size, stride=patch_size, scaling=embedding)
        num_tokens = (height // patch_size) * (image_width // patch_size) + (pooling == "cls")
        # Free parameters follow the "input" role; ``<name>_multiplier`` is read by forward_multipliers.
        self.position_embedding_multiplier = self.class_token_multiplier = embedding.weight_multiplier
        self.position_embedding = nn.Parameter(
            torch.randn(1, num_tokens, width) * POSITION_STD * embedding.weight_init)  # (1, T, D)
        if pooling == "cls":
            self.class_token = nn.Parameter(torch.randn(1, 1, width) * CLASS_TOKEN_STD * embedding.weight_init)
        self.blocks = nn.Sequential(*[TransformerBlock(width, num_heads, mlp_ratio, activation, base_width,
                                                       parameterization, ratio) for _ in range(depth)])
        self.final_norm = ScaledLayerNorm(width, scaling=embedding)
        self.readout = ScaledLinear(width, num_outputs, scaling=layer_scaling("output", parameterization, ratio))
        scale_initialization(self, init_scale)

    def forward(self, inputs: Tensor) -> Tensor:
        images = inputs.reshape(inputs.shape[0], *self.image_shape)  # (B, C, H, W)
        tokens = self.patch_embedding(images).flatten(2).transpose(1, 2)  # (B, T_patches, D)
        if self.pooling == "cls":
            class_token = self.class_token.expand(tokens.shape[0], -1, -1) * self.class_token_multiplier
            tokens = torch.cat([class_token, tokens], dim=1)  # (B, T, D)
        tokens = self.final_norm(self.blocks(tokens + self.position_embedding * self.position_embedding_multiplier))
        pooled = tokens[:, 0] if self.pooling == "cls" else tokens.mean(dim=1)  # (B, D)
        return self.readout(pooled)  # (B, num_outputs)
