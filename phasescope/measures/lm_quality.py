"""Basic linguistic ability of a causal LM: held-out loss and next-token accuracy per language, and
minimal-pair accuracy (MultiBLiMP and the built-in pairs).

The reference ("Copy First, Translate Later", arXiv 2604.17633) finds that basic linguistic
ability, measured on MultiBLiMP minimal pairs (Jumelet et al., 2025, arXiv 2504.02768), arrives
early, together with token-level copying. A minimal pair is scored the standard way (BLiMP,
Warstadt et al. 2020): the model is right when the grammatical sentence has the higher summed
token log-probability.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from phasescope.errors import PhasescopeError


def bf16_autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; nothing (float32) on the CPU."""
    device = torch.device(device)
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --- held-out loss and accuracy ------------------------------------------------------------------
def heldout_scores(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None, batch_size: int = 16,
                   autocast: bool = True) -> dict[str, float]:
    """Mean next-token cross-entropy and top-1 accuracy over a fixed batch of sequences.

    Every position but the last predicts the next token; with ``attention_mask`` (right padding),
    only targets that are real tokens count.

    Args:
        input_ids: (rows, seq_len) token ids.
        attention_mask: (rows, seq_len) 1 for real tokens, 0 for padding (default: all real).

    Returns:
        ``loss`` (nats per predicted token), ``accuracy``, ``tokens`` (predicted tokens counted).
    """
    if input_ids.ndim != 2 or input_ids.shape[1] < 2:
        raise PhasescopeError(f"held-out batch: expected token ids (rows, seq_len >= 2), got shape "
                              f"{tuple(input_ids.shape)}")
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    device = model_device(model)
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, input_ids.shape[0], batch_size):
            ids = input_ids[start:start + batch_size].to(device)
            rows_mask = mask[start:start + batch_size].to(device)
            with bf16_autocast(device, autocast):
                logits = model(input_ids=ids, attention_mask=rows_mask).logits
            logits = logits[:, :-1].float()  # (B, T-1, V)
            targets = ids[:, 1:]
            keep = rows_mask[:, 1:].bool()
            log_probs = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            loss_sum -= float(log_probs[keep].double().sum())
            correct += int((logits.argmax(-1) == targets)[keep].sum())
            count += int(keep.sum())
    if count == 0:
        raise PhasescopeError("held-out batch has no token to predict")
    return {"loss": loss_sum / count, "accuracy": correct / count, "tokens": count}


# --- sentence log-probabilities and minimal pairs -----------------------------------------------
def sentence_token_ids(tokenizer, sentences: Sequence[str]) -> list[list[int]]:
    """Token ids of each sentence behind a start token; the sentence's tokens are those after the first id.

    The start token (BOS, else EOS as GPT-2 and Pythia use it) makes the first word scorable; a
    tokenizer with neither scores from the sentence's second token on.
    """
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prefix = [start] if start is not None else []
    return [prefix + tokenizer.encode(sentence, add_special_tokens=False) for sentence in sentences]


def sequence_log_probs(model: nn.Module, token_ids: Sequence[Sequence[int]], context: int = 1,
                       batch_size: int = 32, autocast: bool = True, pad_id: int = 0) -> np.ndarray:
    """Summed log-probability of the tokens after the first ``context`` of each sequence.

    Sequences are sorted by length, right-padded (a causal model's real tokens never see the
    padding behind them) and run ``batch_size`` at a time; the result is in the input order.

    Returns:
        (n,) float64: ``sum_{i >= context} log p(x_i | x_<i)``.
    """
    device = model_device(model)
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    scores = np.zeros(len(token_ids))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(token_ids[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, index in enumerate(chunk):
                sequence = token_ids[index]
                ids[row, :len(sequence)] = torch.tensor(sequence, dtype=torch.long)
                mask[row, :len(sequence)] = 1
            ids, mask = ids.to(device), mask.to(device)
            with bf16_autocast(device, autocast):
                logits = model(input_ids=ids, attention_mask=mask).logits
            log_probs = logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            scored = mask[:, 1:].clone()
            scored[:, :context - 1] = 0  # target i+1 is scored when i + 1 >= context
            totals = (log_probs.double() * scored).sum(1)
            scores[chunk] = totals.cpu().numpy()
    return scores


def minimal_pair_correct(model: nn.Module, tokenizer, good: Sequence[str], bad: Sequence[str],
                         batch_size: int = 32, autocast: bool = True) -> np.ndarray:
    """Per pair, whether the grammatical sentence gets the higher summed log-probability.

    Returns:
        (n,) bool. Ties count as wrong.
    """
    if len(good) != len(bad):
        raise PhasescopeError(f"minimal pairs: {len(good)} good sentences but {len(bad)} bad ones")
    ids = sentence_token_ids(tokenizer, [*good, *bad])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = sequence_log_probs(model, ids, batch_size=batch_size, autocast=autocast, pad_id=pad_id)
    return scores[:len(good)] > scores[len(good):]
