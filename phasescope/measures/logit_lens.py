"""The logit lens on WLT prompts: how much each layer's residual stream already says the translation.

The logit lens (nostalgebraist, "interpreting GPT: the logit lens", 2020; used layer by layer on
translation prompts by Wendler et al., "Do Llamas Work in English?", arXiv 2402.10588) decodes
the residual stream after the embeddings and after each block with the model's own final norm and
unembedding. At the last prompt position of every WLT item it gives, per layer, the probability
mass and best rank of the valid target first tokens and of the source's (copying), as in
"Copy First, Translate Later" (arXiv 2604.17633).

Layer ``l`` is the stream after ``l`` blocks: 0 = embeddings, L = the last block, whose lens is the
model's real next-token distribution (the final norm applied once). All layers come from one
forward pass per batch; the measure shares that pass with the ``wlt`` measure, whose scores are
the lens's last layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import Tensor, nn

from phasescope.data.wlt import EncodedWLT, encode_prompts, first_token_ids
from phasescope.errors import PhasescopeError
from phasescope.measures.lm_forward import answer_log_probs, best_rank, last_position_states, unembed
from phasescope.measures.registry import Measure, MeasureContext, register_measure
from phasescope.measures.wlt_inputs import WLTDataConfig, item_subsets, shared_wlt_encoding
from phasescope.models.adapters import get_adapter
from phasescope.run.config import config_hash


@dataclass
class LogitLens:
    """Answer scores per item and layer (n_items, num_layers + 1), on the CPU: probability mass and best
    rank (1-based: 1 = the most likely token) of the target's valid first tokens and of the source's,
    and the most likely token with its probability.

    Column ``l`` decodes the residual stream after ``l`` blocks (0 = embeddings); the last column is
    the model's own next-token distribution, i.e. the WLT scores.
    """

    p_target: Tensor
    target_rank: Tensor
    p_source: Tensor
    source_rank: Tensor
    top_id: Tensor
    p_top: Tensor

    @property
    def num_layers(self) -> int:
        """Blocks of the model (the lens has one more column: the embeddings)."""
        return self.p_target.shape[1] - 1

    def frame(self) -> pd.DataFrame:
        """Long table: one row per (item, layer) with the four values; ``item`` indexes the WLT items."""
        n_items, n_layers = self.p_target.shape
        return pd.DataFrame({
            "item": torch.arange(n_items).repeat_interleave(n_layers).numpy(),
            "layer": torch.arange(n_layers).repeat(n_items).numpy(),
            **{name: getattr(self, name).reshape(-1).numpy()
               for name in ("p_target", "target_rank", "p_source", "source_rank")},
        })


@torch.inference_mode()
def score_layers(model: nn.Module, encoded: EncodedWLT, batch_size: int = 32, all_layers: bool = True) -> LogitLens:
    """Target and source first-token mass and best rank of every item, from one forward pass per batch.

    With ``all_layers`` the final norm and unembedding decode the last position's residual stream
    after the embeddings and after every block (the logit lens, one column per layer); without, only
    the model's output (one column). The last column is the output either way: it is the final-normed
    ``last_hidden_state`` the model's own head reads, so the final norm is never applied twice.
    """
    n = len(encoded)
    layers = get_adapter(model).num_layers + 1 if all_layers else 1
    values = {name: torch.zeros((n, layers), dtype=dtype) for name, dtype in
              (("p_target", torch.float64), ("target_rank", torch.long), ("p_source", torch.float64),
               ("source_rank", torch.long), ("top_id", torch.long), ("p_top", torch.float64))}
    for batch in encoded.batches(batch_size):
        final, streams = last_position_states(model, encoded, batch, all_layers=all_layers)
        for layer in range(layers):
            if layer == layers - 1:
                logits = unembed(model, final, normed=True)
            else:
                logits = unembed(model, streams[layer], normed=False)
            log_probs = torch.log_softmax(logits, dim=-1)
            top = log_probs.max(dim=-1)
            values["top_id"][batch, layer] = top.indices.cpu()
            values["p_top"][batch, layer] = top.values.exp().double().cpu()
            for answer in ("target", "source"):
                ids, mask = getattr(encoded, f"{answer}_ids")[batch], getattr(encoded, f"{answer}_mask")[batch]
                values[f"p_{answer}"][batch, layer] = answer_log_probs(log_probs, ids, mask).exp().double().cpu()
                values[f"{answer}_rank"][batch, layer] = best_rank(logits, ids, mask).cpu()
    return LogitLens(**values)


@torch.inference_mode()
def checkpoint_logit_lens(context: MeasureContext, config: WLTDataConfig, batch_size: int = 64) -> LogitLens:
    """The logit lens of ``config``'s WLT prompts on this checkpoint, computed once for the ``wlt`` and
    ``logit_lens`` measures (its last layer is the WLT scores).

    Kept in the context's per-checkpoint slot ``wlt_logit_lens``, keyed by the WLT data fields of ``config``.
    """
    encoded = shared_wlt_encoding(context, config)
    data = WLTDataConfig.model_validate(config.model_dump(include=set(WLTDataConfig.model_fields)))
    return context.of_checkpoint("wlt_logit_lens", config_hash(data),
                                 lambda: score_layers(context.model, encoded, batch_size))


def encoded_logit_lens(model: nn.Module, encoded: EncodedWLT, batch_size: int = 32) -> LogitLens:
    """The logit lens of every WLT item at every layer (see the module doc), one forward pass per batch.

    Args:
        model: a causal LM with an adapter; bf16 autocast on CUDA.
        encoded: the prompts (:func:`phasescope.data.wlt.encode_wlt`).
        batch_size: prompts per forward pass.

    Returns:
        (n_items, num_layers + 1) target/source mass and best rank; the last column equals
        :func:`~phasescope.measures.translation.wlt_scores` (pass it as ``wlt_scores(..., lens=...)``).
    """
    return score_layers(model, encoded, batch_size, all_layers=True)


def prompt_logit_lens(model: nn.Module, tokenizer, prompts: str | Sequence[str],
                      targets: Sequence[str | int | Sequence[int]] | str | None = None,
                      batch_size: int = 32) -> pd.DataFrame:
    """The logit lens at the last position of any prompts: one tidy row per (prompt, layer).

    Args:
        model: a causal LM of a supported family (Llama, GPT-NeoX, GPT-2, Qwen2, OLMo...), on its
            device (bf16 autocast on CUDA).
        tokenizer: its tokenizer (prompts get its special tokens, as the model saw them in training).
        prompts: one text or a list.
        targets: optional, one per prompt: a string (its first token, with and without a leading
            space, as WLT scores words), a token id, or a list of token ids (their mass is summed).
        batch_size: prompts per forward pass.

    Returns:
        Columns ``prompt_index``, ``prompt`` (its text), ``layer`` (0 = embeddings, L = the model's
        output), ``top_token`` (the most likely token, decoded) and ``p_top``; with targets also
        ``target``, ``p_target`` (probability mass on the target's tokens) and ``target_rank`` (1-based
        rank of its most likely token: 1 = top).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if targets is not None:
        targets = [targets] if isinstance(targets, str) else list(targets)
        if len(targets) != len(prompts):
            raise PhasescopeError(f"{len(prompts)} prompts but {len(targets)} targets: give one target per prompt")
    ids = [_target_ids(tokenizer, target) for target in targets] if targets is not None else [[] for _ in prompts]
    encoded = encode_prompts(prompts, tokenizer, ids)
    lens = score_layers(model, encoded, batch_size)
    n_items, n_layers = lens.p_target.shape
    frame = pd.DataFrame({
        "prompt_index": torch.arange(n_items).repeat_interleave(n_layers).numpy(),
        "prompt": [str(prompt) for prompt in prompts for _ in range(n_layers)],
        "layer": torch.arange(n_layers).repeat(n_items).numpy(),
        "top_token": [tokenizer.decode([token]) for token in lens.top_id.reshape(-1).tolist()],
        "p_top": lens.p_top.reshape(-1).numpy()})
    if targets is not None:
        frame["target"] = [str(target) for target in targets for _ in range(n_layers)]
        frame["p_target"] = lens.p_target.reshape(-1).numpy()
        frame["target_rank"] = lens.target_rank.reshape(-1).numpy()
    return frame


def _target_ids(tokenizer, target: str | int | Sequence[int]) -> list[int]:
    if isinstance(target, str):
        ids = first_token_ids(tokenizer, target)
        if not target or not ids:
            raise PhasescopeError(f"target {target!r} encodes to no tokens")
        return ids
    ids = [int(target)] if isinstance(target, int | np.integer) else [int(token) for token in target]
    vocabulary = len(tokenizer)
    bad = [token for token in ids if not 0 <= token < vocabulary]
    if not ids or bad:
        raise PhasescopeError(f"target token ids {ids} are not ids of a {vocabulary}-token vocabulary")
    return ids


def logit_lens_rows(encoded: EncodedWLT, lens: LogitLens) -> list[dict]:
    """Tidy rows per (layer, subset) over all directions: mean ``p_target``/``p_source``, median ranks."""
    subsets = item_subsets(encoded.pairs)
    rows = []
    for subset, mask in subsets.items():
        chosen = torch.tensor(mask.to_numpy(dtype=bool))
        if not chosen.any():
            continue
        for layer in range(lens.num_layers + 1):
            for metric, how in (("p_target", "mean"), ("target_rank", "median"), ("p_source", "mean"),
                                ("source_rank", "median")):
                column = getattr(lens, metric)[chosen, layer].double()
                value = column.mean() if how == "mean" else column.quantile(0.5)
                rows.append({"metric": metric, "value": float(value), "layer": layer, "subset": subset})
    return rows


class LogitLensConfig(WLTDataConfig):
    """Config of the ``logit_lens`` measure (the WLT prompts, and how many run at once)."""

    batch_size: int = Field(64, ge=1)  # prompts per forward pass


def compute_logit_lens(context: MeasureContext, config: LogitLensConfig) -> list[dict]:
    encoded = shared_wlt_encoding(context, config)
    return logit_lens_rows(encoded, checkpoint_logit_lens(context, config, config.batch_size))  # shared with wlt


LOGIT_LENS_MEASURE = register_measure(Measure(
    name="logit_lens", config_cls=LogitLensConfig, compute=compute_logit_lens,
    description="logit lens on WLT prompts: target and source first-token mass and rank after every layer",
))
