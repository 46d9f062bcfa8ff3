"""Benchmark: WLT translation/copying scores plus the logit lens, phasescope against nnsight, in prompts/s.

Both sides score the same WLT prompts (the 72 directions of the nine built-in languages, CLDR
lexicon, five shots) on the same local model: the ``small`` Llama preset of
``phasescope.models.llama`` with random weights and an ~8k vocabulary (a byte-level BPE trained here
on the prompts' text), saved as safetensors and loaded from disk by each side.

- nnsight (peer): the usual logit-lens recipe, one ``trace`` per prompt, saving the output of the
  embeddings and of every decoder layer and applying the final norm and ``lm_head`` at the last
  position inside the trace; the probability mass and best rank of the target's and source's
  first tokens are then taken from those logits.
- phasescope: ``encode_wlt`` (tokenized once), ``logit_lens`` (batched forward passes, all layers at
  once, only the last position unembedded) and ``wlt_scores(..., lens=lens)``, which reads the
  scores from the lens's last layer (the model's output) as the ``wlt`` and ``logit_lens``
  measures do. The second phasescope row reuses the tokenization, as every checkpoint after the
  first of a series does; the third runs every prompt whole (``share_prefixes=False``), to show
  what batching alone gives and what running a direction's shared exemplar lines once adds.

The two sides' per-layer values are checked to agree before anything is timed. On CUDA both run
under bf16 autocast. Run from the repository root:

    python benchmarks/wlt_throughput.py --quick      # 2 concepts per direction (144 prompts), ~1 minute
    python benchmarks/wlt_throughput.py              # 20 concepts per direction (1,440 prompts), fastest of 3

The full run took ~19 minutes on 2 shared cores (load average ~10), nearly all of it nnsight's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch

from phasescope.data.lexicon_sources import build_cldr_lexicon
from phasescope.data.tokenizer import train_bpe_tokenizer
from phasescope.data.wlt import build_wlt_pairs, encode_wlt
from phasescope.device import resolve_device
from phasescope.measures.logit_lens import encoded_logit_lens
from phasescope.measures.translation import wlt_scores
from phasescope.models.llama import LlamaModelConfig, build_llama, count_parameters

VOCAB_SIZE = 8000


class PromptCorpus:
    """An in-memory corpus (``phasescope.data.corpora.CorpusSource``): WLT prompt lines by source language."""

    def __init__(self, texts: dict[str, list[str]]) -> None:
        self.texts = texts
        self.languages = list(texts)

    def documents(self, language: str, split: str = "train", start: int = 0):
        return iter(self.texts[language][start:])

    def size_hint(self, language: str) -> float:
        return float(len(self.texts[language]))


def build_assets(directory: Path, concepts: int):
    """The WLT pairs, and the small Llama with its tokenizer saved in ``directory``."""
    lexicon = build_cldr_lexicon()
    pairs = build_wlt_pairs(lexicon, shots=5, seed=0, max_concepts=concepts)
    # The tokenizer's text: prompts of every concept, exemplars drawn per item (more varied than the scored set).
    all_pairs = build_wlt_pairs(lexicon, shots=5, seed=1, exemplars="per_item")
    corpus = PromptCorpus({language: group["prompt"].tolist() for language, group in all_pairs.groupby("src")})
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=VOCAB_SIZE, documents_per_language=10**6, min_frequency=2)
    model = build_llama(LlamaModelConfig(preset="small"), vocab_size=VOCAB_SIZE, seed=0,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return pairs, len(tokenizer), count_parameters(model)


def autocast_for(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# --- the two sides -----------------------------------------------------------------------------
def run_phasescope(model, tokenizer, pairs, batch_size: int, encoded=None):
    """The logit lens, then the WLT scores read from its last layer (one forward pass per batch, as the
    ``wlt`` and ``logit_lens`` measures share it); tokenizes first unless ``encoded`` is given."""
    encoded = encoded if encoded is not None else encode_wlt(pairs, tokenizer)
    lens = encoded_logit_lens(model, encoded, batch_size=batch_size)
    scores = wlt_scores(model, tokenizer, encoded, lens=lens)
    return encoded, scores, lens


def run_nnsight(lm, pairs, device: torch.device):
    """One trace per prompt: every layer's last-position lens logits, then mass and rank of the answers.

    Returns (n_items, layers + 1) tensors: p_target, target_rank, p_source, source_rank.
    """
    results = {name: [] for name in ("p_target", "target_rank", "p_source", "source_rank")}
    with torch.no_grad(), autocast_for(device):
        for row in pairs.itertuples():
            lens_logits = []
            with lm.trace(row.prompt):
                lens_logits.append(lm.lm_head(lm.model.norm(lm.model.embed_tokens.output[:, -1])).save())
                for layer in lm.model.layers:
                    lens_logits.append(lm.lm_head(lm.model.norm(layer.output[:, -1])).save())
            logits = torch.cat(lens_logits).float()  # (layers + 1, vocab)
            probs = logits.softmax(-1)
            for answer, ids in (("target", row.target_first_ids), ("source", row.source_first_ids)):
                ids = torch.tensor(ids, device=logits.device)
                results[f"p_{answer}"].append(probs[:, ids].sum(-1).double().cpu())
                best = logits[:, ids].max(-1).values
                results[f"{answer}_rank"].append((1 + (logits > best[:, None]).sum(-1)).cpu())
    return {name: torch.stack(values) for name, values in results.items()}


def check_agreement(lens, scores, peer, device: torch.device) -> dict[str, float]:
    """Raise unless phasescope's lens (and WLT scores = its last layer) match nnsight's per item and layer."""
    tolerance = {"rtol": 5e-2, "atol": 1e-4} if device.type == "cuda" else {"rtol": 1e-3, "atol": 1e-7}
    for name in ("p_target", "p_source"):
        torch.testing.assert_close(getattr(lens, name), peer[name], **tolerance, msg=f"logit lens {name} differs")
        torch.testing.assert_close(torch.tensor(scores[name].to_numpy()), peer[name][:, -1], **tolerance,
                                   msg=f"WLT {name} differs")
    agreement = {name: float((getattr(lens, name) == peer[name]).double().mean())
                 for name in ("target_rank", "source_rank")}
    # A random model's logits are nearly flat: rounding (batched vs one prompt) reorders near-ties.
    if min(agreement.values()) < (0.95 if device.type == "cuda" else 0.99):
        raise AssertionError(f"ranks differ too often: agreement {agreement}")
    return agreement


def timed(function, device: torch.device, repeats: int):
    """(fastest wall time over ``repeats`` runs, the last run's result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = function()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 concepts per direction (144 prompts), one repeat")
    parser.add_argument("--concepts", type=int, default=None, help="concepts per direction (default 20; quick 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="phasescope prompts per forward pass")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method, fastest kept (default 3)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for both sides")
    parser.add_argument("--out", type=Path, default=None, help="keep the model here (default: a temporary folder)")
    args = parser.parse_args()
    concepts = args.concepts or (2 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    from nnsight import TransformersModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.out or Path(scratch) / "small-llama"
        wall = time.perf_counter()
        pairs, vocabulary, parameters = build_assets(directory, concepts)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, use_safetensors=True).to(device).eval()
        lm = TransformersModel(str(directory), task="text-generation",
                               tokenizer=AutoTokenizer.from_pretrained(directory), dispatch=True,
                               device_map=str(device))
        n = len(pairs)

        # Agree first (untimed), on the full prompt set.
        encoded, scores, lens = run_phasescope(model, tokenizer, pairs, args.batch_size)
        peer = run_nnsight(lm, encoded.pairs, device)
        agreement = check_agreement(lens, scores, peer, device)

        nnsight_seconds, _ = timed(lambda: run_nnsight(lm, encoded.pairs, device), device, repeats)
        first_seconds, _ = timed(lambda: run_phasescope(model, tokenizer, pairs, args.batch_size), device, repeats)
        later_seconds, _ = timed(lambda: run_phasescope(model, tokenizer, pairs, args.batch_size, encoded), device,
                                 repeats)
        whole = encode_wlt(pairs, tokenizer, share_prefixes=False)
        whole_seconds, _ = timed(lambda: run_phasescope(model, tokenizer, pairs, args.batch_size, whole), device,
                                 repeats)

    print("# WLT + logit lens throughput: phasescope vs nnsight\n")
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f", {torch.get_num_threads()} threads")
          + f", load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"- software: torch {torch.__version__}, transformers {version('transformers')}, "
          f"nnsight {version('nnsight')}")
    print(f"- model: Llama preset 'small' ({model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}, "
          f"{model.config.num_attention_heads} heads, {parameters / 1e6:.1f}M parameters), vocabulary {VOCAB_SIZE} "
          f"(tokenizer {vocabulary}), random weights")
    print(f"- prompts: {n} = 72 directions x {concepts} concepts, 5 shots, "
          f"{float(encoded.lengths.float().mean()):.0f} tokens on average; phasescope batch size {args.batch_size}; "
          f"fastest of {repeats} run(s)")
    print(f"- agreement: per-layer p_target/p_source equal within tolerance; ranks equal on "
          f"{100 * agreement['target_rank']:.1f}% (target) / {100 * agreement['source_rank']:.1f}% (source) of "
          "(item, layer)\n")
    print("| method | what is timed | seconds | prompts/s | vs nnsight |")
    print("|---|---|---:|---:|---:|")
    print(f"| nnsight {version('nnsight')} | a trace per prompt, lens on every layer | {nnsight_seconds:.2f} | "
          f"{n / nnsight_seconds:.1f} | 1.0x |")
    print(f"| phasescope | tokenize + logit_lens + wlt_scores | {first_seconds:.2f} | {n / first_seconds:.1f} | "
          f"{nnsight_seconds / first_seconds:.1f}x |")
    print(f"| phasescope | logit_lens + wlt_scores (tokenization reused) | {later_seconds:.2f} | "
          f"{n / later_seconds:.1f} | {nnsight_seconds / later_seconds:.1f}x |")
    print(f"| phasescope | the same, whole prompts (exemplar heads not shared) | {whole_seconds:.2f} | "
          f"{n / whole_seconds:.1f} | {nnsight_seconds / whole_seconds:.1f}x |")
    print(f"\ntarget: >= 3x nnsight (reported, not asserted); total wall time {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    main()
