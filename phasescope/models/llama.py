"""Llama-style causal language models: Hugging Face ``LlamaForCausalLM`` built from named presets.

The presets span a laptop demo to the reference's model ("Copy First, Translate Later",
arXiv 2604.17633: a Llama-style decoder with 24 layers, hidden size 2048 and 16 heads, ~1.7B
parameters). The vocabulary size comes from the tokenizer of the run; any architecture field can
be overridden in the config. Models are plain ``transformers`` objects, so every checkpoint loads
with ``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, model_validator

from phasescope.run import StrictModel

if TYPE_CHECKING:  # transformers is imported where a model is built: importing phasescope stays light
    from transformers import LlamaConfig, LlamaForCausalLM

# Architecture of each preset. intermediate_size is the SwiGLU hidden width (Llama: ~8/3 x hidden,
# rounded up; 4 x hidden for paper-1.7b as in Llama-3.2's 2048-wide models: the reference gives
# layers, hidden size and heads only, and 8192 puts the model at ~1.7B parameters with a 32k vocabulary).
PRESETS: dict[str, dict] = {
    # ~1.1M parameters with a 2k vocabulary (0.85M outside the embedding): the CPU demo.
    "tiny": dict(num_layers=4, hidden_size=128, num_heads=4, intermediate_size=384,
                 max_position_embeddings=512, tie_word_embeddings=True),
    # ~9M parameters with an 8k vocabulary (6.8M outside the embedding): the benchmark's second size.
    "small": dict(num_layers=8, hidden_size=256, num_heads=8, intermediate_size=768,
                  max_position_embeddings=1024, tie_word_embeddings=True),
    # 24 x 1024, 16 heads of 64 (Pythia-410M's depth and width, SwiGLU at 3.25 d): ~346M parameters
    # outside the embeddings, ~350M with a 4k vocabulary: the GPU benchmark's training size.
    "350m": dict(num_layers=24, hidden_size=1024, num_heads=16, intermediate_size=3328,
                 max_position_embeddings=2048, tie_word_embeddings=True),
    # 24 x 2048, 16 heads of 128: 1.61B parameters outside the embeddings, ~1.74B with a 32k vocabulary.
    "paper-1.7b": dict(num_layers=24, hidden_size=2048, num_heads=16, intermediate_size=8192,
                       max_position_embeddings=4096, tie_word_embeddings=False),
}


class LlamaModelConfig(StrictModel):
    """A preset plus optional overrides of its architecture (None keeps the preset's value)."""

    arch: Literal["llama"] = "llama"
    preset: Literal["tiny", "small", "350m", "paper-1.7b"] = "tiny"
    num_layers: int | None = Field(None, ge=1)
    hidden_size: int | None = Field(None, ge=1)
    num_heads: int | None = Field(None, ge=1)
    num_kv_heads: int | None = Field(None, ge=1)  # None: as many as query heads (multi-head attention)
    intermediate_size: int | None = Field(None, ge=1)
    max_position_embeddings: int | None = Field(None, ge=1)  # must cover the training sequence length
    tie_word_embeddings: bool | None = None  # share the input embedding and the unembedding
    rope_theta: float = Field(10000.0, gt=0)  # Llama-2's RoPE base
    rms_norm_eps: float = Field(1e-5, gt=0)
    initializer_range: float = Field(0.02, gt=0)  # std of the normal init of every matrix (HF's Llama default)
    attention: Literal["sdpa", "eager"] = "sdpa"  # torch's fused scaled-dot-product attention; eager for hooks

    @model_validator(mode="after")
    def _heads_divide(self) -> LlamaModelConfig:
        shape = self.resolved()
        if shape["hidden_size"] % shape["num_heads"]:
            raise ValueError(f"hidden_size ({shape['hidden_size']}) must be a multiple of num_heads "
                             f"({shape['num_heads']})")
        if shape["num_heads"] % shape["num_kv_heads"]:
            raise ValueError(f"num_heads ({shape['num_heads']}) must be a multiple of num_kv_heads "
                             f"({shape['num_kv_heads']})")
        return self

    def resolved(self) -> dict:
        """The preset's architecture with the overrides applied (``num_kv_heads`` filled in)."""
        shape = dict(PRESETS[self.preset])
        for name in (*shape, "num_kv_heads"):
            value = getattr(self, name)
            if value is not None:
                shape[name] = value
        shape.setdefault("num_kv_heads", shape["num_heads"])
        return shape


def llama_config(config: LlamaModelConfig, vocab_size: int, bos_token_id: int | None = None,
                 eos_token_id: int | None = None, pad_token_id: int | None = None) -> LlamaConfig:
    """The Hugging Face config of ``config`` for a tokenizer of ``vocab_size`` tokens."""
    from transformers import LlamaConfig

    shape = config.resolved()
    hf_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_layers"],
        num_attention_heads=shape["num_heads"],
        num_key_value_heads=shape["num_kv_heads"],
        max_position_embeddings=shape["max_position_embeddings"],
        tie_word_embeddings=shape["tie_word_embeddings"],
        rope_theta=config.rope_theta,
        rms_norm_eps=config.rms_norm_eps,
        initializer_range=config.initializer_range,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        use_cache=False,  # training and scoring never decode token by token
    )
    hf_config._attn_implementation = config.attention
    hf_config.architectures = ["LlamaForCausalLM"]
    return hf_config


def build_llama(config: LlamaModelConfig, vocab_size: int, seed: int, **special_token_ids: int | None
                ) -> LlamaForCausalLM:
    """A freshly initialized ``LlamaForCausalLM`` in float32; the same ``seed`` gives the same weights.

    Args:
        config: preset and overrides.
        vocab_size: the tokenizer's vocabulary size.
        seed: seeds torch's generator for the initialization.
        special_token_ids: ``bos_token_id``, ``eos_token_id``, ``pad_token_id`` (saved in config.json).
    """
    from transformers import LlamaForCausalLM

    hf_config = llama_config(config, vocab_size, **special_token_ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(hf_config)
    return model.float()


def count_parameters(model: torch.nn.Module, embeddings: bool = True) -> int:
    """Distinct parameters (tied ones once); ``embeddings=False`` leaves out the input embedding."""
    seen, total = set(), 0
    for name, parameter in model.named_parameters():  # named_parameters yields a tied tensor once
        if id(parameter) in seen or (not embeddings and name.endswith("embed_tokens.weight")):
            continue
        seen.add(id(parameter))
        total += parameter.numel()
    return total


def training_flops_per_token(model: LlamaForCausalLM, seq_len: int) -> float:
    """Forward + backward FLOPs per trained token: ``6 N + 6 L T d`` (Kaplan et al., arXiv 2001.08361;
    PaLM's MFU, Chowdhery et al., arXiv 2204.02311, Appendix B).

    ``N`` counts the parameters of every matrix multiplication (the unembedding included, the input
    embedding lookup excluded); ``6 L T d`` is the attention scores and their weighted sum under a
    causal mask (``12 L T d`` over the full square, halved because only the lower triangle is computed
    by a causal kernel), with ``L`` layers, ``T`` the sequence length and ``d`` the hidden size.
    """
    config = model.config
    matmul_parameters = count_parameters(model, embeddings=False)
    if config.tie_word_embeddings:  # the shared matrix is still multiplied once as the unembedding
        matmul_parameters += config.vocab_size * config.hidden_size
    return 6.0 * matmul_parameters + 6.0 * config.num_hidden_layers * seq_len * config.hidden_size


def tied_parameter_names(model: torch.nn.Module) -> set[str]:
    """Parameter paths that share their tensor with an earlier one (``lm_head.weight`` when tied)."""
    seen: set[int] = set()
    tied = set()
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in seen:
            tied.add(name)
        seen.add(id(parameter))
    return tied
