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

import torch
from pydantic import Field
from torch import nn

from phasescope.data.wlt import EncodedWLT
from phasescope.measures.registry import Measure, MeasureContext, register_measure
from phasescope.measures.translation import (
    LogitLens,
    WLTDataConfig,
    checkpoint_logit_lens,
    item_subsets,
    score_layers,
    shared_wlt_encoding,
)


def logit_lens(model: nn.Module, encoded: EncodedWLT, batch_size: int = 32) -> LogitLens:
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


def logit_lens_rows(encoded: EncodedWLT, lens: LogitLens) -> list[dict]:
    """Tidy rows per (layer, subset) over all directions: mean ``p_target``/``p_source``, median ranks."""
    subsets = item_subsets(encoded.pairs)
    rows = []
    for subset, mask in subsets.items():
        chosen = torch.tensor(mask.to_numpy(dtype=bool))
        if not chosen.any():
            continue
        for layer in range(lens.num_layers + 1):
            for metric, how in (("p_target", "mean"), ("rank_target", "median"), ("p_source", "mean"),
                                ("rank_source", "median")):
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
