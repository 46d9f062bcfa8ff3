"""The word-level translation (WLT) set: few-shot prompts over every directed language pair of a lexicon.

One item per (direction, concept) for the concepts the lexicon has in both languages. The prompt
follows the shared-concept-space studies (DESIGN.md): five exemplar lines of other concepts, then
the query line cut where the translation starts, with endonym language names::

    Français: "chien" - Deutsch: "Hund"
    ...
    English: "cat" - Deutsch: "

Translation is scored on the next-token distribution as the probability mass on the *first
tokens* of the valid translations, copying as the mass on the source word's first tokens. The
first tokens of a word ``w`` (:func:`first_token_ids`) are the first token of ``w`` and the first
token of ``" " + w``, each tokenized alone without special tokens; a first token that decodes to
whitespace only (SentencePiece's lone ``▁``) is passed over for the token after it. An item's
source and target *share a first token* when those sets intersect (source: its canonical word;
target: all valid variants): then copying and translating cannot be told apart (the ``overlap``
subset).

:func:`encode_wlt` tokenizes every prompt once into padded tensors that every checkpoint of a
series reuses; the scores themselves are in :mod:`phasescope.measures.translation`.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import pandas as pd
import torch
from torch import Tensor

from phasescope.data.languages import endonym, get_language
from phasescope.data.lexicon import Lexicon
from phasescope.errors import PhasescopeError

DEFAULT_TEMPLATE = '{src_name}: "{src_word}" - {tgt_name}: "{tgt_word}"'
TEMPLATE_FIELDS = ("src_name", "src_word", "tgt_name", "tgt_word")
SURFACE_FEATURES = ("identical", "shared_first_token", "token_jaccard", "edit_distance", "same_script")
PaddingSide = Literal["right", "left"]
ExemplarSampling = Literal["per_direction", "per_item"]


# --- the pairs ---------------------------------------------------------------------------------
def wlt_directions(languages: Sequence[str]) -> list[tuple[str, str]]:
    """Every ordered pair of distinct languages, source-major (72 for nine languages)."""
    return [(src, tgt) for src in languages for tgt in languages if src != tgt]


def check_template(template: str) -> str:
    """A prompt line template must use ``{src_word}`` and end its translation with ``{tgt_word}``, once each."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise PhasescopeError(f"WLT template {template!r}: not a format string ({error})") from None
    unknown = sorted(set(fields) - set(TEMPLATE_FIELDS))
    if unknown:
        raise PhasescopeError(f"WLT template {template!r}: unknown field(s) {unknown}; allowed: "
                              f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}")
    for required in ("src_word", "tgt_word"):
        if fields.count(required) != 1:
            raise PhasescopeError(f"WLT template {template!r}: expected {{{required}}} exactly once, "
                                  f"got {fields.count(required)}")
    if fields[-1] != "tgt_word":
        raise PhasescopeError(f"WLT template {template!r}: {{tgt_word}} must be the last field (the prompt ends there)")
    return template


def wlt_prompt(template: str, src: str, tgt: str, word: str, exemplars: Sequence[tuple[str, str]]) -> str:
    """Exemplar lines ``(source word, target word)`` then the query line cut before the translation."""
    names = {"src_name": endonym(src), "tgt_name": endonym(tgt)}
    lines = [template.format(**names, src_word=w, tgt_word=t) for w, t in exemplars]
    query_template = template[:template.index("{tgt_word}")]
    lines.append(query_template.format(**names, src_word=word))
    return "\n".join(lines)


def answer_suffix(template: str) -> str:
    """What follows the translation in a template line (``"`` by default): where a generated answer ends."""
    return template[template.index("{tgt_word}") + len("{tgt_word}"):]


def build_wlt_pairs(lexicon: Lexicon, languages: Sequence[str] | None = None, *, shots: int = 5, seed: int = 0,
                    max_concepts: int | None = None, template: str = DEFAULT_TEMPLATE,
                    heldout_concepts: Iterable[str] = (), exemplars: ExemplarSampling = "per_direction"
                    ) -> pd.DataFrame:
    """The WLT items of a lexicon: one row per (direction, concept), with its prompt and surface features.

    Args:
        lexicon: words and valid variants per (concept, language).
        languages: the languages to pair (default: all of the lexicon's); every ordered pair is a direction.
        shots: exemplar lines per prompt, drawn from *other* concepts of the direction.
        seed: fixes the exemplars and the concepts kept by ``max_concepts``.
        exemplars: ``"per_direction"``: one seeded order of the direction's concepts, each prompt taking
            the first ``shots`` concepts of it other than its own, so all prompts of a direction but
            ``shots`` share their exemplar lines (item differences are not exemplar-draw noise, and
            the shared lines are computed once, see :func:`encode_wlt`); ``"per_item"``: an
            independent draw per (direction, concept).
        max_concepts: per direction, keep at most this many concepts: the first ones, in an order
            shuffled once by ``seed``, that the lexicon has in both languages (so directions share concepts).
        template: the line format (:data:`DEFAULT_TEMPLATE`); ``{tgt_word}`` must come last.
        heldout_concepts: concepts the model never saw translated; flagged in ``heldout`` and never
            used as exemplars.

    Returns:
        Columns ``src, tgt, concept, category, heldout, source_word, target_word, target_variants,
        exemplars`` (the exemplar concepts), ``prompt``, ``answer_suffix`` (what closes an answer,
        see :func:`answer_suffix`) and the tokenizer-free features
        ``identical`` (the source word is a valid translation), ``edit_distance`` (normalized
        Levenshtein distance of the two canonical words), ``same_script``.
    """
    languages = list(languages) if languages is not None else lexicon.languages
    if len(languages) < 2:
        raise PhasescopeError(f"WLT needs at least two languages, got {languages}")
    lexicon.complete_concepts(languages)  # raises naming a language the lexicon lacks
    for code in languages:
        get_language(code)  # prompts need the endonym
    if shots < 0:
        raise PhasescopeError(f"shots must be >= 0, got {shots}")
    if exemplars not in ("per_direction", "per_item"):
        raise PhasescopeError(f"exemplars must be 'per_direction' or 'per_item', got {exemplars!r}")
    check_template(template)
    heldout = set(heldout_concepts)
    categories = dict(zip(lexicon.frame["concept"], lexicon.frame["category"]))
    order = list(lexicon.concepts)
    random.Random(f"{seed}:concepts").shuffle(order)
    rows = []
    for src, tgt in wlt_directions(languages):
        shared = [c for c in lexicon.concepts if lexicon.has(c, src) and lexicon.has(c, tgt)]
        if max_concepts is not None:
            in_both = set(shared)
            kept = set([c for c in order if c in in_both][:max_concepts])
            chosen = [c for c in shared if c in kept]  # back to lexicon order
        else:
            chosen = shared
        exemplar_pool = [c for c in shared if c not in heldout]
        direction_order = random.Random(f"{seed}:{src}:{tgt}").sample(exemplar_pool, len(exemplar_pool))
        for concept in chosen:
            pool = [c for c in exemplar_pool if c != concept]
            if len(pool) < shots:
                raise PhasescopeError(f"WLT {src}->{tgt}: {shots} exemplars per prompt need {shots + 1} concepts "
                                      f"(not held out) in both languages, the lexicon has {len(pool) + 1}")
            if exemplars == "per_direction":
                drawn = [c for c in direction_order if c != concept][:shots]
            else:
                drawn = random.Random(f"{seed}:{src}:{tgt}:{concept}").sample(pool, shots)
            word = lexicon.word(concept, src)
            variants = lexicon.variants(concept, tgt)
            rows.append({
                "src": src, "tgt": tgt, "concept": concept, "category": categories[concept],
                "heldout": concept in heldout, "source_word": word, "target_word": variants[0],
                "target_variants": variants, "exemplars": drawn,
                "prompt": wlt_prompt(template, src, tgt, word,
                                     [(lexicon.word(c, src), lexicon.word(c, tgt)) for c in drawn]),
                "answer_suffix": answer_suffix(template),
                "identical": word in variants,
                "edit_distance": normalized_edit_distance(word, variants[0]),
                "same_script": get_language(src).script == get_language(tgt).script,
            })
    if not rows:
        raise PhasescopeError(f"the lexicon has no concept in two of the languages {', '.join(languages)}")
    return pd.DataFrame(rows)


def normalized_edit_distance(first: str, second: str) -> float:
    """Levenshtein distance over characters divided by the longer length (0 identical, 1 nothing shared)."""
    if not first and not second:
        return 0.0
    previous = list(range(len(second) + 1))
    for i, a in enumerate(first, 1):
        current = [i]
        for j, b in enumerate(second, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1] / max(len(first), len(second))


# --- tokenization ------------------------------------------------------------------------------
def first_token_ids(tokenizer, word: str) -> list[int]:
    """The first tokens of ``word`` and of ``" " + word`` (sorted, without duplicates); see the module doc."""
    ids = set()
    for text in (word, " " + word):
        tokens = tokenizer.encode(text, add_special_tokens=False)
        while len(tokens) > 1 and not tokenizer.decode(tokens[:1]).strip():
            tokens = tokens[1:]
        if tokens:
            ids.add(int(tokens[0]))
    return sorted(ids)


def token_jaccard(first: Sequence[int], second: Sequence[int]) -> float:
    """|A & B| / |A | B| of two token-id sets (1 for identical tokenizations)."""
    a, b = set(first), set(second)
    return len(a & b) / len(a | b) if a | b else 1.0


@dataclass
class EncodedWLT:
    """WLT prompts tokenized once, as padded tensors, with the answer tokens of each item.

    Attributes:
        pairs: the items (from :func:`build_wlt_pairs`) plus the tokenizer features ``shared_first_token``
            and ``token_jaccard`` and the id lists ``target_first_ids``, ``source_first_ids``.
        input_ids: (n_items, max_len) prompt tokens, padded on ``padding_side``.
        attention_mask: (n_items, max_len) 1 on prompt tokens, 0 on padding.
        lengths: (n_items,) prompt lengths in tokens.
        target_ids / target_mask: (n_items, k) valid target first tokens, padded (mask False) to the
            longest list.
        source_ids / source_mask: (n_items, j) the source word's first tokens.
        padding_side: ``"right"`` (prompts start at position 0) or ``"left"`` (prompts end at the last column).
        prefix_index: (n_items,) the item's shared prompt head in ``prefix_ids``, -1 for none.
        suffix_ids / suffix_lengths: (n_items, s) right-padded and (n_items,): the prompt tokens after
            its shared head (zero length for items without one).
        prefix_ids: shared prompt heads (every line but the query, with the special tokens the
            tokenizer prepends), each (head_len,); an item's tokens are its head's then its suffix's.
    """

    pairs: pd.DataFrame
    input_ids: Tensor
    attention_mask: Tensor
    lengths: Tensor
    target_ids: Tensor
    target_mask: Tensor
    source_ids: Tensor
    source_mask: Tensor
    padding_side: PaddingSide = "right"
    prefix_index: Tensor | None = None
    suffix_ids: Tensor | None = None
    suffix_lengths: Tensor | None = None
    prefix_ids: tuple[Tensor, ...] = ()

    def __post_init__(self) -> None:
        if self.prefix_index is None:  # no shared heads: every item runs whole
            n = len(self.input_ids)
            self.prefix_index = torch.full((n,), -1, dtype=torch.long)
            self.suffix_ids = torch.zeros((n, 1), dtype=torch.long)
            self.suffix_lengths = torch.zeros(n, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.pairs)

    def subset(self, indices: Sequence[int] | Tensor) -> EncodedWLT:
        """The items at ``indices`` (in that order), tensors sliced alike."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return replace(self, pairs=self.pairs.iloc[index.tolist()].reset_index(drop=True),
                       **{name: getattr(self, name)[index] for name in _TENSOR_FIELDS})

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        """Item indices in batches covering every item once: items with a shared head grouped by head
        (heads of similar length together), then the others by length (longest first)."""
        if batch_size < 1:
            raise PhasescopeError(f"batch_size must be >= 1, got {batch_size}")
        shared = (self.prefix_index >= 0).nonzero().flatten()
        if len(shared):
            head_lengths = torch.tensor([len(ids) for ids in self.prefix_ids])[self.prefix_index[shared]]
            keys = sorted(range(len(shared)), key=lambda i: (-int(head_lengths[i]), int(self.prefix_index[shared[i]]),
                                                             -int(self.suffix_lengths[shared[i]])))
            yield from torch.split(shared[torch.tensor(keys)], batch_size)
        alone = (self.prefix_index < 0).nonzero().flatten()
        if len(alone):
            yield from torch.split(alone[torch.argsort(self.lengths[alone], descending=True, stable=True)], batch_size)

    def prefixed_inputs(self, indices: Tensor, device: torch.device | str
                        ) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor], Tensor]:
        """Two forward passes over items that all have a shared head: the heads once, then the suffixes.

        Returns:
            ``head_inputs`` for the distinct heads of the batch (left-padded, with mask and position
            ids); ``rows`` (batch,): each item's row among them (to expand the heads' key/value
            cache); ``suffix_inputs`` (input ids, the mask over head and suffix columns, positions
            continuing each head); the last suffix position of each item (batch,).
        """
        heads, rows = torch.unique(self.prefix_index[indices], return_inverse=True)
        head_lengths = torch.tensor([len(self.prefix_ids[h]) for h in heads.tolist()])
        width = int(head_lengths.max())
        head_ids = torch.zeros((len(heads), width), dtype=torch.long)
        head_mask = torch.zeros((len(heads), width), dtype=torch.long)
        for row, head in enumerate(heads.tolist()):
            head_ids[row, width - len(self.prefix_ids[head]):] = self.prefix_ids[head]
            head_mask[row, width - len(self.prefix_ids[head]):] = 1
        head_inputs = {"input_ids": head_ids, "position_ids": (head_mask.cumsum(-1) - 1).clamp(min=0)}
        lengths = self.suffix_lengths[indices]
        suffix_width = int(lengths.max())
        suffix_inputs = {"input_ids": self.suffix_ids[indices, :suffix_width],
                         "position_ids": head_lengths[rows][:, None] + torch.arange(suffix_width)}
        if not bool((head_lengths == width).all()):  # left pads of shorter heads must be masked
            head_inputs["attention_mask"] = head_mask
            suffix_inputs["attention_mask"] = torch.cat(
                [head_mask[rows], torch.ones((len(indices), suffix_width), dtype=torch.long)], dim=1)
        move = lambda inputs: {key: value.to(device) for key, value in inputs.items()}  # noqa: E731
        return move(head_inputs), rows.to(device), move(suffix_inputs), (lengths - 1).to(device)

    def model_inputs(self, indices: Tensor, device: torch.device | str) -> tuple[dict[str, Tensor], Tensor]:
        """Keyword arguments of a forward pass over the items ``indices`` and each row's last prompt position.

        Columns that are padding in every row of the batch are cut off. Right padding needs no mask
        (a causal model's positions never attend to the pads after them) and keeps the fused causal
        attention path; left padding passes the mask and position ids counted from each prompt's
        first token, so a prompt gets the same positions as when it runs alone.

        Returns:
            (inputs for ``model(**inputs)``, last positions (batch,)).
        """
        lengths = self.lengths[indices]
        width = int(lengths.max())
        if self.padding_side == "right":
            input_ids = self.input_ids[indices, :width]
            return {"input_ids": input_ids.to(device)}, (lengths - 1).to(device)
        input_ids = self.input_ids[indices, -width:]
        mask = self.attention_mask[indices, -width:]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        inputs = {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids}
        last = torch.full((len(indices),), width - 1, dtype=torch.long)
        return {key: value.to(device) for key, value in inputs.items()}, last.to(device)


_TENSOR_FIELDS = ("input_ids", "attention_mask", "lengths", "target_ids", "target_mask", "source_ids", "source_mask",
                  "prefix_index", "suffix_ids", "suffix_lengths")


def encode_wlt(pairs: pd.DataFrame, tokenizer, padding_side: PaddingSide = "right",
               share_prefixes: bool = True) -> EncodedWLT:
    """Tokenize every prompt and answer of ``pairs`` once (prompts with the tokenizer's special tokens).

    With ``share_prefixes``, prompts that share every line but the query (the exemplars of a
    direction, see ``build_wlt_pairs(exemplars="per_direction")``) are split into that shared head
    and their own suffix, so the scores run the head once per batch and only the query line per
    item. A prompt is split only where its tokens are exactly the head's tokens followed by more,
    so the split never changes the tokens the model reads.

    Raises:
        PhasescopeError: a language whose words the tokenizer cannot encode (empty encodings or its
            unknown token), named with an example word.
    """
    missing = [c for c in ("src", "tgt", "prompt", "source_word", "target_variants") if c not in pairs.columns]
    if missing:
        raise PhasescopeError(f"WLT pairs lack column(s) {', '.join(missing)}; build them with build_wlt_pairs")
    if pairs.empty:
        raise PhasescopeError("no WLT items to encode")
    _check_encodable(pairs, tokenizer)
    pairs = pairs.reset_index(drop=True).copy()
    words = {w for w in pairs["source_word"]} | {v for variants in pairs["target_variants"] for v in variants}
    first = {word: first_token_ids(tokenizer, word) for word in words}  # each word tokenized once
    tokens = {word: tokenizer.encode(word, add_special_tokens=False) for word in words}
    target_first = [sorted({t for v in variants for t in first[v]}) for variants in pairs["target_variants"]]
    source_first = [first[word] for word in pairs["source_word"]]
    pairs["target_first_ids"] = target_first
    pairs["source_first_ids"] = source_first
    pairs["shared_first_token"] = [bool(set(s) & set(t)) for s, t in zip(source_first, target_first)]
    pairs["token_jaccard"] = [token_jaccard(tokens[w], tokens[v[0]])
                              for w, v in zip(pairs["source_word"], pairs["target_variants"])]
    return encode_prompts(pairs["prompt"].tolist(), tokenizer, target_first, source_first, items=pairs,
                          padding_side=padding_side, share_prefixes=share_prefixes)


def encode_prompts(prompts: Sequence[str], tokenizer, targets: Sequence[Sequence[int]],
                   sources: Sequence[Sequence[int]] | None = None, items: pd.DataFrame | None = None,
                   padding_side: PaddingSide = "right", share_prefixes: bool = True) -> EncodedWLT:
    """Any prompts tokenized once (with the tokenizer's special tokens), with the answer token ids to
    score at each prompt's last position: the encoding behind :func:`encode_wlt` and the plain
    :func:`phasescope.measures.logit_lens.prompt_logit_lens`.

    Args:
        prompts: the texts.
        tokenizer: a Hugging Face tokenizer.
        targets: per prompt, the token ids whose probability mass and best rank are scored.
        sources: per prompt, a second set of ids scored alike (WLT: the source word's); default none.
        items: one row per prompt carried along as ``pairs`` (default: a ``prompt`` column).
        padding_side, share_prefixes: as for :func:`encode_wlt`.
    """
    if padding_side not in ("right", "left"):
        raise PhasescopeError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    prompts = list(prompts)
    if not prompts:
        raise PhasescopeError("no prompts to encode")
    sources = [[] for _ in prompts] if sources is None else sources
    if not len(targets) == len(sources) == len(prompts):
        raise PhasescopeError(f"{len(prompts)} prompts but {len(targets)} target and {len(sources)} source id lists")
    encoded = tokenizer(prompts)["input_ids"]  # one batched call
    lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.long)
    if int(lengths.min()) == 0:
        raise PhasescopeError(f"prompt {int(lengths.argmin())} encodes to no tokens")
    width = int(lengths.max())
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        columns = slice(0, len(ids)) if padding_side == "right" else slice(width - len(ids), width)
        input_ids[row, columns] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, columns] = 1
    target_ids, target_mask = _padded([list(ids) for ids in targets])
    source_ids, source_mask = _padded([list(ids) for ids in sources])
    heads = _shared_heads(prompts, encoded, tokenizer) if share_prefixes else None
    items = pd.DataFrame({"prompt": prompts}) if items is None else items
    return EncodedWLT(items, input_ids, attention_mask, lengths, target_ids, target_mask, source_ids, source_mask,
                      padding_side, *(heads or ()))


def _shared_heads(texts: list[str], prompts: list[list[int]], tokenizer):
    """(prefix_index, suffix_ids, suffix_lengths, prefix_ids) for prompts sharing all lines but the last."""
    members: dict[str, list[int]] = {}
    for item, text in enumerate(texts):
        if "\n" in text:
            members.setdefault(text[:text.rindex("\n") + 1], []).append(item)
    candidates = [(head, items) for head, items in members.items() if len(items) > 1]
    if not candidates:
        return None
    head_tokens = tokenizer([head for head, _ in candidates])["input_ids"]
    prefix_index = torch.full((len(texts),), -1, dtype=torch.long)
    suffixes: dict[int, list[int]] = {}
    prefix_ids = []
    for (_, items), ids in zip(candidates, head_tokens):
        split = [i for i in items if len(prompts[i]) > len(ids) and prompts[i][:len(ids)] == ids]
        if len(split) < 2:
            continue
        for item in split:
            prefix_index[item] = len(prefix_ids)
            suffixes[item] = prompts[item][len(ids):]
        prefix_ids.append(torch.tensor(ids, dtype=torch.long))
    if not prefix_ids:
        return None
    suffix_lengths = torch.tensor([len(suffixes.get(i, [])) for i in range(len(texts))], dtype=torch.long)
    suffix_ids = torch.zeros((len(texts), int(suffix_lengths.max())), dtype=torch.long)
    for item, ids in suffixes.items():
        suffix_ids[item, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return prefix_index, suffix_ids, suffix_lengths, tuple(prefix_ids)


def _padded(lists: list[list[int]]) -> tuple[Tensor, Tensor]:
    width = max(1, max(len(ids) for ids in lists))
    ids = torch.zeros((len(lists), width), dtype=torch.long)
    mask = torch.zeros((len(lists), width), dtype=torch.bool)
    for row, values in enumerate(lists):
        ids[row, :len(values)] = torch.tensor(values, dtype=torch.long)
        mask[row, :len(values)] = True
    return ids, mask


def _check_encodable(pairs: pd.DataFrame, tokenizer) -> None:
    """Every word and language name must encode to known tokens."""
    words: dict[str, set[str]] = {}
    for row in pairs.itertuples(index=False):
        words.setdefault(row.src, set()).add(row.source_word)
        words.setdefault(row.tgt, set()).update(row.target_variants)
    unknown_id = tokenizer.unk_token_id
    for language, forms in words.items():
        for form in sorted(forms) + [endonym(language)]:
            ids = tokenizer.encode(form, add_special_tokens=False)
            if not ids or (unknown_id is not None and unknown_id in ids):
                problem = "no tokens" if not ids else "the unknown token"
                raise PhasescopeError(f"the tokenizer cannot encode language {language!r}: {form!r} gives {problem} "
                                      f"(a tokenizer trained without {get_language(language).english_name} text?)")
