"""Architecture adapters: one name for each part of a Hugging Face causal LM, whatever its family.

Measures of study B (logit lens, path attribution, layer swaps, scaling and head ablations) need
the same handful of parts of every model: the transformer blocks, the embeddings, the final norm,
the unembedding, each block's attention (and its output projection) and MLP, and a partition of
the parameters into named groups. Their module paths differ by family::

    family      blocks              final norm                 unembedding  attention output
    llama       model.layers        model.norm                 lm_head      self_attn.o_proj
    gpt_neox    gpt_neox.layers     gpt_neox.final_layer_norm  lm_head      attention.dense
    gpt2        transformer.h       transformer.ln_f           lm_head      attn.c_proj (Conv1D)

``llama`` covers the Llama-style decoders that share Llama's module names (Llama, Qwen2/3,
Mistral, OLMo, OLMo-2/3). :func:`get_adapter` picks the adapter of a model from its config's
``model_type``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from phasescope.errors import PhasescopeError


@dataclass(frozen=True)
class ArchitectureSpec:
    """Module paths of one architecture family (relative to the causal-LM wrapper, or to a block).

    Attributes:
        family: the adapter's name.
        model_types: the ``config.model_type`` values it serves.
        backbone: the transformer without its LM head (``base_model``).
        layers: the ModuleList of blocks.
        embeddings: modules whose outputs are summed into the residual stream (token first).
        final_norm: the norm applied to the last block's output before the unembedding.
        unembedding: the LM head; alternatives in order of preference (GPT-NeoX's ``embed_out`` is
            ``lm_head`` since transformers 5).
        attention / attention_output / mlp: within a block.
        transposed_output: the attention output projection is GPT-2's ``Conv1D``, whose weight is
            stored (in_features, out_features), the transpose of ``nn.Linear``'s.
    """

    family: str
    model_types: tuple[str, ...]
    backbone: str
    layers: str
    embeddings: tuple[str, ...]
    final_norm: str
    unembedding: tuple[str, ...]
    attention: str
    attention_output: str
    mlp: str
    transposed_output: bool = False


SPECS: tuple[ArchitectureSpec, ...] = (
    ArchitectureSpec("llama", ("llama", "qwen2", "qwen3", "mistral", "olmo", "olmo2", "olmo3"),
                     backbone="model", layers="model.layers", embeddings=("model.embed_tokens",),
                     final_norm="model.norm", unembedding=("lm_head",), attention="self_attn",
                     attention_output="self_attn.o_proj", mlp="mlp"),
    ArchitectureSpec("gpt_neox", ("gpt_neox",), backbone="gpt_neox", layers="gpt_neox.layers",
                     embeddings=("gpt_neox.embed_in",), final_norm="gpt_neox.final_layer_norm",
                     unembedding=("lm_head", "embed_out"), attention="attention",
                     attention_output="attention.dense", mlp="mlp"),
    ArchitectureSpec("gpt2", ("gpt2",), backbone="transformer", layers="transformer.h",
                     embeddings=("transformer.wte", "transformer.wpe"), final_norm="transformer.ln_f",
                     unembedding=("lm_head",), attention="attn", attention_output="attn.c_proj", mlp="mlp",
                     transposed_output=True),
)
SUPPORTED_MODEL_TYPES: dict[str, ArchitectureSpec] = {t: spec for spec in SPECS for t in spec.model_types}

EMBEDDING_GROUP = "embedding"  # holds the unembedding too when the two share one matrix
FINAL_NORM_GROUP = "final_norm"
UNEMBEDDING_GROUP = "unembedding"


class ModelAdapter:
    """The named parts of one causal LM. Build it with :func:`get_adapter`.

    Modules are returned as the model's own objects, so hooks and in-place weight edits act on the model.
    """

    def __init__(self, model: nn.Module, spec: ArchitectureSpec) -> None:
        self.model = model
        self.spec = spec
        self.unembedding_path = next(path for path in spec.unembedding if _has_module(model, path))

    def __repr__(self) -> str:
        return f"ModelAdapter({type(self.model).__name__}, family={self.family!r}, layers={self.num_layers})"

    @property
    def family(self) -> str:
        return self.spec.family

    # --- modules -----------------------------------------------------------------------------
    @property
    def backbone(self) -> nn.Module:
        """The transformer without the LM head: ``backbone(input_ids).last_hidden_state`` is final-normed."""
        return self.model.get_submodule(self.spec.backbone)

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer blocks, in order."""
        return self.model.get_submodule(self.spec.layers)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def embeddings(self) -> dict[str, nn.Module]:
        """Embedding modules by path (token embedding first; GPT-2 adds learned positions)."""
        return {path: self.model.get_submodule(path) for path in self.spec.embeddings}

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.model.get_submodule(self.spec.embeddings[0])

    @property
    def final_norm(self) -> nn.Module:
        return self.model.get_submodule(self.spec.final_norm)

    @property
    def unembedding(self) -> nn.Linear:
        return self.model.get_submodule(self.unembedding_path)

    @property
    def tied_embeddings(self) -> bool:
        """Whether the unembedding shares its matrix with the token embedding."""
        return self.unembedding.weight is self.token_embedding.weight

    def layer_path(self, layer: int) -> str:
        """The module path of block ``layer`` (``model.layers.3``); parameter names start with it."""
        self._check_layer(layer)
        return f"{self.spec.layers}.{layer}"

    def attention(self, layer: int) -> nn.Module:
        return self.model.get_submodule(f"{self.layer_path(layer)}.{self.spec.attention}")

    def attention_output(self, layer: int) -> nn.Module:
        """The attention output projection of block ``layer``.

        Its input is the concatenation of the heads' outputs, shape (batch, seq, num_heads * head_dim),
        head ``h`` in columns ``h * head_dim : (h + 1) * head_dim`` (for ``nn.Linear`` and GPT-2's ``Conv1D``
        alike), so a forward pre-hook that zeroes those columns ablates head ``h``.
        """
        return self.model.get_submodule(f"{self.layer_path(layer)}.{self.spec.attention_output}")

    def attention_output_weight(self, layer: int) -> Tensor:
        """The output projection's matrix in ``nn.Linear`` layout, shape (hidden_size, num_heads * head_dim).

        A view of the parameter (GPT-2's ``Conv1D`` stores the transpose), so in-place edits change the model.
        """
        weight = self.attention_output(layer).weight
        return weight.t() if self.spec.transposed_output else weight

    def mlp(self, layer: int) -> nn.Module:
        return self.model.get_submodule(f"{self.layer_path(layer)}.{self.spec.mlp}")

    # --- shape -------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_heads(self) -> int:
        return int(self.model.config.num_attention_heads)

    @property
    def num_kv_heads(self) -> int:
        """Key/value heads (fewer than query heads under grouped-query attention)."""
        return int(getattr(self.model.config, "num_key_value_heads", None) or self.num_heads)

    @property
    def head_dim(self) -> int:
        return int(getattr(self.model.config, "head_dim", None) or self.hidden_size // self.num_heads)

    # --- parameter groups --------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[str]]:
        """Every parameter name of the model in exactly one named group, groups in model order.

        Groups: ``embedding`` (token and position embeddings; also the unembedding when tied, see
        :attr:`tied_embeddings`), per block ``layers.{i}.attention``, ``layers.{i}.mlp`` and
        ``layers.{i}.norms`` (the block's norms outside attention and MLP), ``final_norm``,
        ``unembedding`` (only when untied). Groups without parameters are left out (OLMo's
        non-parametric layer norms). Names are those of ``model.named_parameters()``, which lists
        a tied matrix once.
        """
        groups: dict[str, list[str]] = {}
        for name, _ in self.model.named_parameters():
            groups.setdefault(self.group_of(name), []).append(name)
        order = [EMBEDDING_GROUP]
        for layer in range(self.num_layers):
            order += [f"layers.{layer}.attention", f"layers.{layer}.mlp", f"layers.{layer}.norms"]
        order += [FINAL_NORM_GROUP, UNEMBEDDING_GROUP]
        return {group: groups[group] for group in order if group in groups}

    def group_of(self, parameter_name: str) -> str:
        """The group of one parameter name (see :meth:`parameter_groups`)."""
        module_path = parameter_name.rsplit(".", 1)[0]
        if any(_under(module_path, path) for path in self.spec.embeddings):
            return EMBEDDING_GROUP
        if _under(module_path, self.spec.final_norm):
            return FINAL_NORM_GROUP
        if _under(module_path, self.unembedding_path):
            return UNEMBEDDING_GROUP
        if _under(module_path, self.spec.layers):
            index_text, _, inner = module_path[len(self.spec.layers) + 1:].partition(".")
            layer = int(index_text)
            if _under(inner, self.spec.attention):
                return f"layers.{layer}.attention"
            if _under(inner, self.spec.mlp):
                return f"layers.{layer}.mlp"
            if "norm" in type(self.model.get_submodule(module_path)).__name__.lower():
                return f"layers.{layer}.norms"
        raise PhasescopeError(f"parameter {parameter_name!r} of {type(self.model).__name__} fits no group of the "
                              f"{self.family!r} adapter (expected embeddings, blocks' attention/MLP/norms, final norm "
                              "or unembedding)")

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.num_layers:
            raise PhasescopeError(f"layer {layer} out of range: the model has {self.num_layers} layers (0..."
                                  f"{self.num_layers - 1})")


def get_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter of a Hugging Face causal LM (``LlamaForCausalLM``, ``GPTNeoXForCausalLM``, ...)."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    spec = SUPPORTED_MODEL_TYPES.get(model_type)
    if spec is None or not any(_has_module(model, path) for path in spec.unembedding):
        supported = ", ".join(f"{s.family} ({'/'.join(s.model_types)})" for s in SPECS)
        raise PhasescopeError(f"no architecture adapter for {type(model).__name__} (model_type {model_type!r}); "
                              f"supported causal-LM families: {supported}")
    return ModelAdapter(model, spec)


def parameter_groups(model: nn.Module) -> dict[str, list[str]]:
    """Group name -> parameter names, covering every parameter once (see :meth:`ModelAdapter.parameter_groups`)."""
    return get_adapter(model).parameter_groups()


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def _has_module(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


__all__ = ["ArchitectureSpec", "ModelAdapter", "SPECS", "get_adapter", "parameter_groups"]
