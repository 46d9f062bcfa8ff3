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

Many prompts run per forward pass, only the last position is unembedded, and a prompt set is
tokenized once for every checkpoint. Prompts of a direction share their exemplar lines
(``exemplars="per_direction"``): a batch runs its distinct exemplar heads once and then only each
item's query line on their key/value cache. The logit lens (:mod:`phasescope.measures.logit_lens`)
comes from the same pass: its last layer is these scores, and the two measures share it.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from phasescope.data.languages import language_codes_field
from phasescope.data.lexicon import Lexicon
from phasescope.data.wlt import (
    DEFAULT_TEMPLATE,
    EncodedWLT,
    ExemplarSampling,
    build_wlt_pairs,
    check_template,
    encode_wlt,
)
from phasescope.errors import PhasescopeError
from phasescope.measures.registry import Measure, MeasureContext, register_measure
from phasescope.models.adapters import get_adapter
from phasescope.run.config import StrictModel, config_hash
from phasescope.run.series import CheckpointSeries

Answer = Literal["target", "source"]


# --- forward passes ----------------------------------------------------------------------------
def model_device(model: nn.Module) -> torch.device:
    """The device of the model's (first) parameters."""
    return next(model.parameters()).device


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; full precision (no autocast) on the CPU."""
    if device.type == "cuda":
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
    """Float32 logits (..., vocab) of residual-stream states; ``normed=False`` applies the final norm first."""
    adapter = get_adapter(model)
    with autocast_for(states.device):
        if not normed:
            states = adapter.final_norm(states)
        return adapter.unembedding(states).float()


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
        (n,) float32 log probabilities, in item order (``indices`` order when given).
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


@dataclass
class LogitLens:
    """Answer scores per item and layer (n_items, num_layers + 1), on the CPU: probability mass and best
    rank (1 = top) of the target's valid first tokens and of the source's.

    Column ``l`` decodes the residual stream after ``l`` blocks (0 = embeddings); the last column is
    the model's own next-token distribution, i.e. the WLT scores.
    """

    p_target: Tensor
    rank_target: Tensor
    p_source: Tensor
    rank_source: Tensor

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
               for name in ("p_target", "rank_target", "p_source", "rank_source")},
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
              (("p_target", torch.float64), ("rank_target", torch.long), ("p_source", torch.float64),
               ("rank_source", torch.long))}
    for batch in encoded.batches(batch_size):
        final, streams = last_position_states(model, encoded, batch, all_layers=all_layers)
        for layer in range(layers):
            if layer == layers - 1:
                logits = unembed(model, final, normed=True)
            else:
                logits = unembed(model, streams[layer], normed=False)
            log_probs = torch.log_softmax(logits, dim=-1)
            for answer in ("target", "source"):
                ids, mask = getattr(encoded, f"{answer}_ids")[batch], getattr(encoded, f"{answer}_mask")[batch]
                values[f"p_{answer}"][batch, layer] = answer_log_probs(log_probs, ids, mask).exp().double().cpu()
                values[f"rank_{answer}"][batch, layer] = best_rank(logits, ids, mask).cpu()
    return LogitLens(**values)


@torch.inference_mode()
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
        lens: the :func:`~phasescope.measures.logit_lens.logit_lens` of the same encoded prompts and
            model: its last layer is the model's output, so the scores are read from it without
            another forward pass.

    Returns:
        The items (``src, tgt, concept, prompt, source_word, target_variants``, surface features
        ``identical, shared_first_token, token_jaccard, edit_distance, same_script``, ``heldout``)
        with ``subset`` (``overlap`` / ``no_overlap``), ``p_target``, ``p_source``,
        ``target_rank``, ``source_rank``, ``top1_correct``, ``copy_top1`` and, when generating,
        ``generated`` and ``exact_match``.
    """
    if isinstance(lexicon_or_pairs, Lexicon):
        pairs = build_wlt_pairs(lexicon_or_pairs, languages, shots=shots, seed=seed, max_concepts=max_concepts,
                                template=template, heldout_concepts=heldout_concepts, exemplars=exemplars)
        encoded = encode_wlt(pairs, tokenizer)
    elif isinstance(lexicon_or_pairs, pd.DataFrame):
        encoded = encode_wlt(lexicon_or_pairs, tokenizer)
    elif isinstance(lexicon_or_pairs, EncodedWLT):
        encoded = lexicon_or_pairs
    else:
        raise PhasescopeError("lexicon_or_pairs: expected a Lexicon, a DataFrame of WLT pairs or an EncodedWLT, "
                              f"got {type(lexicon_or_pairs).__name__}")
    frame = encoded.pairs.copy()
    frame["subset"] = ["overlap" if shared else "no_overlap" for shared in frame["shared_first_token"]]
    if lens is None:
        lens = score_layers(model, encoded, batch_size, all_layers=False)
    elif lens.p_target.shape[0] != len(encoded):
        raise PhasescopeError(f"the logit lens has {lens.p_target.shape[0]} items, the WLT prompts {len(encoded)}")
    for column, name in (("p_target", "p_target"), ("p_source", "p_source"), ("target_rank", "rank_target"),
                         ("source_rank", "rank_source")):
        frame[column] = getattr(lens, name)[:, -1].numpy()
    frame["top1_correct"] = frame["target_rank"] == 1
    frame["copy_top1"] = frame["source_rank"] == 1
    if generate:
        frame["generated"] = greedy_answers(model, tokenizer, encoded, batch_size, max_new_tokens)
        suffixes = frame["answer_suffix"] if "answer_suffix" in frame.columns else ['"'] * len(frame)
        frame["exact_match"] = [extract_answer(text, suffix) in variants for text, suffix, variants
                                in zip(frame["generated"], suffixes, frame["target_variants"])]
    return frame


def item_subsets(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """Boolean masks of the reporting subsets: all, overlap, no_overlap, and the held-out ones when any."""
    overlap = frame["shared_first_token"].astype(bool)
    subsets = {"all": pd.Series(True, index=frame.index), "overlap": overlap, "no_overlap": ~overlap}
    if "heldout" in frame.columns and frame["heldout"].any():
        heldout = frame["heldout"].astype(bool)
        subsets |= {"heldout_overlap": heldout & overlap, "heldout_no_overlap": heldout & ~overlap}
    return subsets


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
class WLTDataConfig(StrictModel):
    """Which WLT prompts: shared by the ``wlt`` and ``logit_lens`` measures (equal fields, one tokenization)."""

    languages: list[str] | None = None  # None: every language of the lexicon
    lexicon: str | None = None  # Parquet file; None: the run's data/lexicon.parquet, else the built-in CLDR lexicon
    shots: int = Field(5, ge=0)  # exemplar lines per prompt, as in the shared-concept-space studies
    seed: int = 0  # draws the exemplars (and the concepts kept by max_concepts)
    max_concepts: int | None = Field(None, ge=1)  # per direction; None keeps every shared concept
    template: str = DEFAULT_TEMPLATE  # line format; {tgt_word} last
    # per_direction: one exemplar set per direction (its shared lines run once per batch); per_item: a draw per item
    exemplars: ExemplarSampling = "per_direction"

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value):
        if value is None:
            return value
        return language_codes_field(value)

    @field_validator("template")
    @classmethod
    def _valid_template(cls, value):
        try:
            return check_template(value)
        except PhasescopeError as error:
            raise ValueError(str(error)) from None


class WLTConfig(WLTDataConfig):
    """Config of the ``wlt`` measure."""

    generation: bool = False  # greedy-decode answers for exact match of multi-token words (slower)
    max_new_tokens: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)  # prompts per forward pass


def resolve_lexicon(series: CheckpointSeries, path: str | None) -> Lexicon:
    """The lexicon file given, else the run's ``data/lexicon.parquet``, else the built-in CLDR lexicon."""
    if path is not None:
        return Lexicon.load(path)
    own = series.run.path / "data" / "lexicon.parquet"
    if own.is_file():
        return Lexicon.load(own)
    from phasescope.data.lexicon_sources import build_cldr_lexicon

    return build_cldr_lexicon()


def heldout_concepts(series: CheckpointSeries) -> list[str]:
    """The concepts the run held out of every bilingual signal (``data/heldout_concepts.json``), or none."""
    path = series.run.path / "data" / "heldout_concepts.json"
    if not path.is_file():
        return []
    try:
        concepts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise PhasescopeError(f"{path}: expected a JSON list of concept ids ({error})") from None
    if not isinstance(concepts, list) or not all(isinstance(c, str) for c in concepts):
        raise PhasescopeError(f"{path}: expected a JSON list of concept ids, got {type(concepts).__name__}")
    return concepts


def shared_wlt_encoding(context: MeasureContext, config: WLTDataConfig) -> EncodedWLT:
    """The tokenized WLT prompts of ``config``, built once per executor run and reused for every checkpoint."""
    tokenizer = context.tokenizer  # checks this checkpoint's tokenizer against the series' every time
    data = WLTDataConfig.model_validate(config.model_dump(include=set(WLTDataConfig.model_fields)))

    def build() -> EncodedWLT:
        lexicon = resolve_lexicon(context.series, data.lexicon)
        held = [c for c in heldout_concepts(context.series) if c in set(lexicon.concepts)]
        pairs = build_wlt_pairs(lexicon, data.languages, shots=data.shots, seed=data.seed,
                                max_concepts=data.max_concepts, template=data.template, heldout_concepts=held,
                                exemplars=data.exemplars)
        return encode_wlt(pairs, tokenizer)

    return context.shared(f"wlt_encoding:{config_hash(data)}", build)


def checkpoint_logit_lens(context: MeasureContext, config: WLTDataConfig, batch_size: int = 64) -> LogitLens:
    """The logit lens of ``config``'s WLT prompts on this checkpoint, computed once for the ``wlt`` and
    ``logit_lens`` measures (its last layer is the WLT scores).

    Only the latest checkpoint's lens is kept (one slot of ``context.cache``), keyed by the checkpoint
    and the WLT data fields of ``config``.
    """
    encoded = shared_wlt_encoding(context, config)
    data = WLTDataConfig.model_validate(config.model_dump(include=set(WLTDataConfig.model_fields)))
    key = (context.checkpoint.name, config_hash(data))
    kept = context.cache.get("wlt_logit_lens:last")
    if kept is None or kept[0] != key:
        kept = (key, score_layers(context.model, encoded, batch_size))
        context.cache["wlt_logit_lens:last"] = kept
    return kept[1]


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
