"""Forward passes of a causal LM over encoded WLT prompts, shared by the translation measures.

Many prompts run per forward pass and only the last position is unembedded. Prompts of a direction
share their exemplar lines (``exemplars="per_direction"``): a batch runs its distinct exemplar heads
once and then only each item's query line on their key/value cache. ``wlt_log_probs`` gives the
log-probability of a prompt's answer tokens, the objective of path attribution.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

import torch
from torch import Tensor, nn

from phasescope.data.wlt import EncodedWLT
from phasescope.errors import PhasescopeError
from phasescope.models.adapters import get_adapter
from phasescope.models.losses import upcast_logits

Answer = Literal["target", "source"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's (first) parameters."""
    return next(model.parameters()).device


_FULL_PRECISION: ContextVar[bool] = ContextVar("full_precision", default=False)


@contextlib.contextmanager
def full_precision():
    """Within it, :func:`autocast_for` autocasts nowhere: the model's own dtype throughout (attribution)."""
    token = _FULL_PRECISION.set(True)
    try:
        yield
    finally:
        _FULL_PRECISION.reset(token)


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; full precision (no autocast) on the CPU and inside :func:`full_precision`."""
    if device.type == "cuda" and not _FULL_PRECISION.get():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def last_position_states(model: nn.Module, encoded: EncodedWLT, indices: Tensor, all_layers: bool = False
                         ) -> tuple[Tensor, Tensor | None]:
    """The residual stream at each prompt's last position, from one forward pass of the backbone.

    Items with a shared prompt head (:func:`~phasescope.data.wlt.encode_wlt`) run the batch's distinct
    heads once, then only their own suffixes on the heads' key/value cache; the others run whole.

    Returns:
        ``final`` (batch, hidden): the last block's output after the final norm (what the
        unembedding reads); with ``all_layers``, ``streams`` (num_layers, batch, hidden): the
        residual stream after the embeddings and after blocks 1..L-1, *before* the final norm.
        (Hugging Face's ``hidden_states[-1]`` is the final-normed ``last_hidden_state`` in every
        supported family, so it is taken from ``final`` instead, never normed twice.)
    """
    indices = torch.as_tensor(indices, dtype=torch.long)
    shared = encoded.prefix_index[indices] >= 0
    if shared.all():
        return _states_after_heads(model, encoded, indices, all_layers)
    if not shared.any():
        return _whole_prompt_states(model, encoded, indices, all_layers)
    first = last_position_states(model, encoded, indices[shared], all_layers)
    second = last_position_states(model, encoded, indices[~shared], all_layers)
    order = torch.cat([shared.nonzero().flatten(), (~shared).nonzero().flatten()])
    back = torch.empty_like(order)
    back[order] = torch.arange(len(order))  # position of each item of ``indices`` in the concatenation
    back = back.to(first[0].device)
    final = torch.cat([first[0], second[0]])[back]
    streams = torch.cat([first[1], second[1]], dim=1)[:, back] if all_layers else None
    return final, streams


def _whole_prompt_states(model: nn.Module, encoded: EncodedWLT, indices: Tensor, all_layers: bool):
    adapter = get_adapter(model)
    device = model_device(model)
    inputs, last = encoded.model_inputs(indices, device)
    with autocast_for(device):
        outputs = adapter.backbone(**inputs, output_hidden_states=all_layers, use_cache=False)
    return _gather_last(outputs, last, adapter.num_layers, all_layers)


def _states_after_heads(model: nn.Module, encoded: EncodedWLT, indices: Tensor, all_layers: bool):
    adapter = get_adapter(model)
    device = model_device(model)
    head_inputs, rows, suffix_inputs, last = encoded.prefixed_inputs(indices, device)
    keyword = _cache_keyword(adapter.backbone)
    with autocast_for(device):
        cache = getattr(adapter.backbone(**head_inputs, use_cache=True), keyword)
        cache.batch_select_indices(rows)  # one copy of its head's keys and values per item
        outputs = adapter.backbone(**suffix_inputs, **{keyword: cache}, use_cache=True,
                                   output_hidden_states=all_layers)
    return _gather_last(outputs, last, adapter.num_layers, all_layers)


def _cache_keyword(backbone: nn.Module) -> str:
    """The key/value cache's name in the backbone's arguments and outputs: ``cache`` from transformers 5.x
    on (``past_key_values`` is deprecated there and warns on every call), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


def _gather_last(outputs, last: Tensor, num_layers: int, all_layers: bool) -> tuple[Tensor, Tensor | None]:
    rows = torch.arange(len(last), device=last.device)
    final = outputs.last_hidden_state[rows, last]
    if not all_layers:
        return final, None
    hidden = outputs.hidden_states
    assert len(hidden) == num_layers + 1, f"{len(hidden)} hidden states for {num_layers} layers"
    return final, torch.stack([state[rows, last] for state in hidden[:-1]])


def unembed(model: nn.Module, states: Tensor, normed: bool) -> Tensor:
    """Logits (..., vocab) of residual-stream states, in at least float32 (a float64 model's stay float64);
    ``normed=False`` applies the final norm first."""
    adapter = get_adapter(model)
    with autocast_for(states.device):
        if not normed:
            states = adapter.final_norm(states)
        return upcast_logits(adapter.unembedding(states))


def answer_log_probs(log_probs: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    """log of the probability mass on each row's answer tokens: (batch, vocab), (batch, k), (batch, k) -> (batch,)."""
    gathered = log_probs.gather(-1, ids.to(log_probs.device)).masked_fill(~mask.to(log_probs.device), -torch.inf)
    return torch.logsumexp(gathered, dim=-1)


def best_rank(logits: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    """Rank (1 = most likely) of each row's most likely answer token: 1 + tokens with a strictly higher logit."""
    best = logits.gather(-1, ids.to(logits.device)).masked_fill(~mask.to(logits.device), -torch.inf).amax(-1)
    return 1 + (logits > best.unsqueeze(-1)).sum(-1)


def _item_batches(encoded: EncodedWLT, batch_size: int, indices: Tensor | None) -> Iterator[Tensor]:
    if indices is None:
        yield from encoded.batches(batch_size)
    else:
        yield from torch.split(torch.as_tensor(indices, dtype=torch.long), batch_size)


def wlt_log_probs(model: nn.Module, encoded: EncodedWLT, batch_size: int = 32, answer: Answer = "target",
                  indices: Tensor | None = None) -> Tensor:
    """Differentiable log probability mass on the answer's first tokens at each prompt's last position.

    Autograd is left on (path attribution differentiates this); wrap in ``torch.no_grad()`` when
    only values are needed.

    Args:
        model: a causal LM with an adapter (:func:`phasescope.models.adapters.get_adapter`).
        encoded: the prompts (:func:`phasescope.data.wlt.encode_wlt`).
        batch_size: prompts per forward pass.
        answer: ``"target"`` (translation) or ``"source"`` (copying).
        indices: score only these items, in this order (default: all).

    Returns:
        (n,) log probabilities in at least float32 (float64 for a float64 model), in item order
        (``indices`` order when given).
    """
    if answer not in ("target", "source"):
        raise PhasescopeError(f"answer must be 'target' or 'source', got {answer!r}")
    ids, mask = (encoded.target_ids, encoded.target_mask) if answer == "target" else (encoded.source_ids,
                                                                                       encoded.source_mask)
    count = len(encoded) if indices is None else len(indices)
    pieces, order = [], []
    for batch in _item_batches(encoded, batch_size, indices):
        final, _ = last_position_states(model, encoded, batch)
        log_probs = torch.log_softmax(unembed(model, final, normed=True), dim=-1)
        pieces.append(answer_log_probs(log_probs, ids[batch], mask[batch]))
        order.append(batch)
    values = torch.cat(pieces)
    if indices is not None:
        return values
    position = torch.empty(count, dtype=torch.long)
    position[torch.cat(order)] = torch.arange(count)
    return values[position.to(values.device)]
