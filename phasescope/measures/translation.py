"""Word-level translation (WLT) and copying scores of a causal LM, and the ``wlt`` measure.

Each WLT prompt (:mod:`phasescope.data.wlt`) is scored from the next-token distribution at its
last position, as in the shared-concept-space studies and "Copy First, Translate Later"
(arXiv 2604.17633):

- ``p_target``: probability mass on the first tokens of every valid translation;
- ``p_source``: the same on the source word's first tokens (copying);
- ``target_rank``: rank (1 = top) of the best valid target token; ``top1_correct`` is rank 1,
  ``copy_top1`` the same for the source's tokens;
- optionally (``generate=True``) greedy decoding of up to ten tokens, with ``exact_match`` when
  the decoded answer is a valid variant (multi-token words).

The forward passes are :mod:`phasescope.measures.lm_forward`'s, the prompts
:mod:`phasescope.measures.wlt_inputs`'. The logit lens (:mod:`phasescope.measures.logit_lens`) comes
from the same pass: its last layer is these scores, and the two measures share it.
"""

from __future__ import annotations

import pandas as pd
import torch
from pydantic import Field
from torch import nn

from phasescope.data.lexicon import Lexicon, is_lexicon_table
from phasescope.data.wlt import DEFAULT_TEMPLATE, EncodedWLT, ExemplarSampling, build_wlt_pairs, encode_wlt
from phasescope.errors import PhasescopeError
from phasescope.measures.lm_forward import autocast_for, model_device
from phasescope.measures.logit_lens import LogitLens, checkpoint_logit_lens, score_layers
from phasescope.measures.registry import Measure, MeasureContext, register_measure
from phasescope.measures.wlt_inputs import WLTDataConfig, item_subsets, shared_wlt_encoding


def greedy_answers(model: nn.Module, tokenizer, encoded: EncodedWLT, batch_size: int = 32,
                   max_new_tokens: int = 10) -> list[str]:
    """Each prompt's greedy continuation of up to ``max_new_tokens`` tokens, decoded (batched, left-padded)."""
    from transformers import GenerationConfig

    device = model_device(model)
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                              eos_token_id=tokenizer.eos_token_id, use_cache=True)
    answers = [""] * len(encoded)
    for batch in encoded.batches(batch_size):
        lengths = encoded.lengths[batch]
        width = int(lengths.max())
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (item, length) in enumerate(zip(batch.tolist(), lengths.tolist())):
            prompt = (encoded.input_ids[item, :length] if encoded.padding_side == "right"
                      else encoded.input_ids[item, -length:])
            input_ids[row, width - length:] = prompt
            mask[row, width - length:] = 1
        with autocast_for(device):
            output = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                    generation_config=config)
        for item, tokens in zip(batch.tolist(), output[:, width:].tolist()):
            answers[item] = tokenizer.decode(tokens, skip_special_tokens=True)
    return answers


def extract_answer(continuation: str, suffix: str = '"') -> str:
    """The answer in a generated continuation: up to the template's closing text (or the line's end), stripped."""
    text = continuation.split("\n", 1)[0]
    if suffix.strip():
        text = text.split(suffix.strip()[0], 1)[0]
    return text.strip()


# --- the public entry point --------------------------------------------------------------------
def wlt_scores(model: nn.Module, tokenizer, lexicon_or_pairs: Lexicon | pd.DataFrame | EncodedWLT, shots: int = 5,
               seed: int = 0, *, languages: list[str] | None = None, max_concepts: int | None = None,
               template: str = DEFAULT_TEMPLATE, heldout_concepts: list[str] | tuple = (),
               exemplars: ExemplarSampling = "per_direction", batch_size: int = 32, generate: bool = False,
               max_new_tokens: int = 10, lens: LogitLens | None = None) -> pd.DataFrame:
    """Word-level translation and copying scores of ``model``, one row per (direction, concept).

    Args:
        model: a Hugging Face causal LM of a supported family, on its device (bf16 autocast on CUDA).
        tokenizer: its tokenizer.
        lexicon_or_pairs: a :class:`Lexicon` (the WLT set is built from it with ``shots``, ``seed``,
            ``languages``, ``max_concepts``, ``template``, ``heldout_concepts``, ``exemplars``), pairs from
            :func:`phasescope.data.wlt.build_wlt_pairs`, or an :class:`EncodedWLT` to reuse one
            tokenization across checkpoints.
        shots, seed: exemplar lines per prompt and the seed that draws them.
        batch_size: prompts per forward pass.
        generate: also decode greedily up to ``max_new_tokens`` tokens and score exact matches.
        lens: the :func:`~phasescope.measures.logit_lens.encoded_logit_lens` of the same encoded prompts and
            model: its last layer is the model's output, so the scores are read from it without
            another forward pass.

    Returns:
        The items (``src, tgt, concept, prompt, source_word, target_variants``, surface features
        ``identical, shared_first_token, token_jaccard, edit_distance, same_script``, ``heldout``)
        with ``subset`` (``overlap`` / ``no_overlap``), ``p_target``, ``p_source``,
        ``target_rank``, ``source_rank``, ``top1_correct``, ``copy_top1`` and, when generating,
        ``generated`` and ``exact_match``.
    """
    if isinstance(lexicon_or_pairs, pd.DataFrame) and is_lexicon_table(lexicon_or_pairs) \
            and "prompt" not in lexicon_or_pairs.columns:
        lexicon_or_pairs = Lexicon(lexicon_or_pairs)  # a user's (concept, language, word) table
    if isinstance(lexicon_or_pairs, Lexicon):
        pairs = build_wlt_pairs(lexicon_or_pairs, languages, shots=shots, seed=seed, max_concepts=max_concepts,
                                template=template, heldout_concepts=heldout_concepts, exemplars=exemplars)
        encoded = encode_wlt(pairs, tokenizer)
    elif isinstance(lexicon_or_pairs, pd.DataFrame):
        if "prompt" not in lexicon_or_pairs.columns:
            raise PhasescopeError("lexicon_or_pairs: a DataFrame must be a lexicon table with columns concept, "
                                  "language, word (category, variants optional) or WLT pairs from build_wlt_pairs; "
                                  f"it has {', '.join(map(str, lexicon_or_pairs.columns)) or 'no columns'}")
        encoded = encode_wlt(lexicon_or_pairs, tokenizer)
    elif isinstance(lexicon_or_pairs, EncodedWLT):
        encoded = lexicon_or_pairs
    else:
        raise PhasescopeError("lexicon_or_pairs: expected a Lexicon, a table of (concept, language, word) rows, "
                              f"WLT pairs from build_wlt_pairs or an EncodedWLT, got {type(lexicon_or_pairs).__name__}")
    frame = encoded.pairs.copy()
    frame["subset"] = ["overlap" if shared else "no_overlap" for shared in frame["shared_first_token"]]
    if lens is None:
        lens = score_layers(model, encoded, batch_size, all_layers=False)
    elif lens.p_target.shape[0] != len(encoded):
        raise PhasescopeError(f"the logit lens has {lens.p_target.shape[0]} items, the WLT prompts {len(encoded)}")
    for column in ("p_target", "p_source", "target_rank", "source_rank"):
        frame[column] = getattr(lens, column)[:, -1].numpy()
    frame["top1_correct"] = frame["target_rank"] == 1
    frame["copy_top1"] = frame["source_rank"] == 1
    if generate:
        frame["generated"] = greedy_answers(model, tokenizer, encoded, batch_size, max_new_tokens)
        suffixes = frame["answer_suffix"] if "answer_suffix" in frame.columns else ['"'] * len(frame)
        frame["exact_match"] = [extract_answer(text, suffix) in variants for text, suffix, variants
                                in zip(frame["generated"], suffixes, frame["target_variants"])]
    return frame


WLT_METRICS = {  # metric -> (score column, aggregation)
    "p_target": ("p_target", "mean"), "top1_accuracy": ("top1_correct", "mean"),
    "target_rank": ("target_rank", "median"), "p_source": ("p_source", "mean"),
    "copy_top1": ("copy_top1", "mean"), "exact_match": ("exact_match", "mean"), "n_items": ("p_target", "size"),
}


def wlt_metric_rows(scores: pd.DataFrame) -> list[dict]:
    """Tidy rows of :func:`wlt_scores`: each metric per (src, tgt, subset) and over all directions per subset.

    Empty subsets give no rows; ``exact_match`` only when the scores were generated.
    """
    metrics = {m: spec for m, spec in WLT_METRICS.items() if spec[0] in scores.columns}
    rows = []
    for subset, mask in item_subsets(scores).items():
        chosen = scores[mask]
        if chosen.empty:
            continue
        groups = [((None, None), chosen), *chosen.groupby(["src", "tgt"], sort=False)]
        for (src, tgt), group in groups:
            for metric, (column, how) in metrics.items():
                value = float(group[column].astype(float).agg(how)) if how != "size" else float(len(group))
                rows.append({"metric": metric, "value": value, "src": src, "tgt": tgt, "subset": subset})
    return rows


# --- the measure -------------------------------------------------------------------------------
class WLTConfig(WLTDataConfig):
    """Config of the ``wlt`` measure."""

    generation: bool = False  # greedy-decode answers for exact match of multi-token words (slower)
    max_new_tokens: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)  # prompts per forward pass


def compute_wlt(context: MeasureContext, config: WLTConfig) -> list[dict]:
    encoded = shared_wlt_encoding(context, config)
    scores = wlt_scores(context.model, context.tokenizer, encoded, batch_size=config.batch_size,
                        generate=config.generation, max_new_tokens=config.max_new_tokens,
                        lens=checkpoint_logit_lens(context, config, config.batch_size))
    return wlt_metric_rows(scores)


WLT_MEASURE = register_measure(Measure(
    name="wlt", config_cls=WLTConfig, compute=compute_wlt,
    description="word-level translation and copying: probability mass on valid target / source first tokens",
))
