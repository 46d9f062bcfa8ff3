"""The GPU check's benchmark steps, one per call, each writing ``OUT/<step>.json``; ``collect`` joins them.

    python benchmarks/gpu/suite.py STEP OUT [--dry-run]     # STEP: lm_train, study_b, curvature, sweep
    python benchmarks/gpu/suite.py collect OUT              # OUT/results.json and OUT/results.md

``benchmarks/gpu/run.sh`` calls every step under its own time limit (one failing step does not
stop the rest) and then ``collect``. ``--dry-run`` runs the same code on the CPU at tiny sizes: it
checks the plumbing, and its numbers mean nothing. Every peer runs in the same process on the same
inputs; a missing peer package is reported in the step's notes and its rows are left out.

Steps (sizes: GPU / dry run):
- lm_train: phasescope's training loop against the Hugging Face Trainer on identical batches
  (``benchmarks/lm_train.py``), bf16 autocast on CUDA, presets ``small`` and ``350m`` (torch.compile
  off, and on for 350m) / ``tiny``; tokens/s and model FLOP utilization against the measured bf16
  matmul peak. Targets: >= 1.0x the Trainer and >= 40% MFU at 350m.
- study_b: the study-B measure suite at the paper's shape, a randomly initialized 24 x 2048 Llama
  (``paper-1.7b``, bf16 weights) / a 2 x 64 one: WLT (72 directions x 125 concepts, 5 shots) with
  the logit lens, layer swap and lm_quality, as ``phasescope measure`` runs them, seconds per
  checkpoint, and the projection to the reference's 200 checkpoints; the WLT + lens part against
  nnsight (``benchmarks/wlt_throughput.py``'s recipe) on a subset of the prompts, per prompt.
  Moonshot: 200 checkpoints of the 1.7B model in under one GPU-hour.
- curvature: the top Hessian eigenvalue of a CIFAR-10-shaped ResNet (random images of the real
  shape, 5,000 examples / 16 of 16 x 16, cross-entropy) by phasescope, PyHessian and curvlinops (its
  Hessian linear operator with scipy's eigsh), each at the loosest tolerance that is within 1e-4 of
  a tight phasescope reference: seconds, HVPs, relative error.
- sweep: 16 learning rates of a CIFAR-10-shaped fully connected network (3072-512-512-10, MSE,
  5,000 / 64 random examples) trained by full-batch GD as one vectorized computation against a
  loop over members (``benchmarks/lr_sweep.py``'s loops).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCHMARKS))  # lm_train.py, wlt_throughput.py, lr_sweep.py, timing.py

STEPS: dict[str, Callable[[argparse.Namespace], dict]] = {}


def step(function: Callable[[argparse.Namespace], dict]) -> Callable[[argparse.Namespace], dict]:
    STEPS[function.__name__] = function
    return function


def device_of(args: argparse.Namespace) -> torch.device:
    return torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def clocked(function: Callable[[], object], device: torch.device) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


def target(name: str, measured: float, threshold: float, unit: str = "", higher: bool = True) -> dict:
    met = measured >= threshold if higher else measured <= threshold
    return {"target": name, "measured": f"{measured:.3g}{unit}", "met": bool(met)}


def missing(package: str) -> str | None:
    """None when ``package`` imports, else a note naming it."""
    try:
        __import__(package)
        return None
    except ImportError as error:
        return f"{package} is not installed ({error}); its rows are left out"


# --- 1. LM training throughput -------------------------------------------------------------------
@step
def lm_train(args: argparse.Namespace) -> dict:
    from lm_train import lm_config, matmul_peak, phasescope_loop, trainer_loop

    from phasescope.data.controlled_corpus import ControlledCorpus, ControlledCorpusConfig
    from phasescope.data.mixture import MixtureConfig, PackedStream
    from phasescope.data.tokenizer import train_bpe_tokenizer
    from phasescope.models.llama import build_llama, count_parameters, training_flops_per_token

    device = device_of(args)
    if args.dry_run:
        runs, batch_size, seq_len, steps = [("tiny", False)], 4, 64, 20
    else:
        runs, batch_size, seq_len, steps = [("small", False), ("350m", False), ("350m", True)], 16, 1024, 40
    corpus = ControlledCorpus(ControlledCorpusConfig())
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=4096, documents_per_language=500)
    stream = PackedStream(corpus, tokenizer, seq_len, batch_size, MixtureConfig(), seed=0)
    batches = [stream.next_batch() for _ in range(steps)]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_peak(device, size=8192 if device.type == "cuda" else 1024, dtype=dtype)
    rows, targets, notes = [], [], [f"{str(dtype).removeprefix('torch.')} matmul peak {peak / 1e12:.1f} TFLOP/s; "
                                      f"batch {batch_size} x {seq_len} tokens, {steps} steps, one run each"]
    for preset, compiled in runs:
        config = lm_config(preset, steps, batch_size, seq_len, device.type, compile=compiled)
        ours, first = phasescope_loop(config, len(tokenizer), batches)
        try:
            theirs, their_first = trainer_loop(config, len(tokenizer), batches)
        except ImportError as error:
            notes.append(f"the Trainer did not run: {error}")
            theirs, their_first = math.nan, math.nan
        model = build_llama(config.model, len(tokenizer), seed=0)
        flops = training_flops_per_token(model, seq_len)
        rows.append({"preset": preset, "compile": compiled, "parameters": count_parameters(model),
                     "phasescope_tokens_per_s": ours, "trainer_tokens_per_s": theirs, "ratio": ours / theirs,
                     "phasescope_mfu": ours * flops / peak, "trainer_mfu": theirs * flops / peak,
                     "first_loss_phasescope": first, "first_loss_trainer": their_first})
    largest = [row for row in rows if row["preset"] == runs[-1][0]]
    best = max(largest, key=lambda row: row["phasescope_tokens_per_s"])
    targets.append(target(f">= 1.0x the Trainer ({best['preset']})", best["ratio"], 1.0, "x"))
    targets.append(target(f">= 40% MFU ({best['preset']})", 100 * best["phasescope_mfu"], 40.0, "%"))
    return {"rows": rows, "targets": targets, "notes": notes}


# --- 2. the study-B measure suite at the paper's shape -------------------------------------------
def _paper_series(root: Path, preset: dict, vocab_size: int, device: torch.device):
    """A local run of two checkpoints (random weights, the second a perturbed first), bf16 on disk,
    with the tokenizer and held-out text files of the controlled corpus."""
    from phasescope.data.controlled_corpus import ControlledCorpus, ControlledCorpusConfig
    from phasescope.data.tokenizer import train_bpe_tokenizer
    from phasescope.models.llama import LlamaModelConfig, build_llama
    from phasescope.run import RunDir, atomic_directory

    corpus = ControlledCorpus(ControlledCorpusConfig())
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=vocab_size, documents_per_language=300)
    run = RunDir.create(root / "run", "kind: lm\n")
    model = build_llama(LlamaModelConfig(**preset), len(tokenizer), seed=0, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = model.to(device=device, dtype=torch.bfloat16)
    for index, step_number in enumerate((0, 1000)):
        if index:
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.add_(torch.randn_like(parameter), alpha=1e-3)
        with atomic_directory(run.checkpoint_dir(step_number)) as directory:
            model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)
            (directory / "state.json").write_text(json.dumps({"step": step_number, "tokens": step_number * 10**6}))
    texts = {}
    for language in corpus.languages:
        path = run.path / "data" / f"{language}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n\n".join(doc for _, doc in zip(range(40), corpus.documents(language, "heldout"))),
                        encoding="utf-8")
        texts[language] = str(path)
    del model
    return run.path, texts


MEASURES = "wlt,logit_lens,layer_swap,lm_quality"


@step
def study_b(args: argparse.Namespace) -> dict:
    from phasescope.execute import plan_measures, run_measures
    from phasescope.run import MetricStore
    from phasescope.run.series import open_series

    device = device_of(args)
    if args.dry_run:
        preset = {"preset": "tiny", "num_layers": 2, "hidden_size": 64, "num_heads": 4, "intermediate_size": 128}
        concepts, peer_concepts, vocab_size, batch_size = 3, 1, 1000, 32
    else:
        preset, concepts, peer_concepts, vocab_size, batch_size = {"preset": "paper-1.7b"}, 125, 2, 32000, 128
    notes = [f"model: {preset}, random weights saved in bf16, vocabulary {vocab_size}; WLT 72 directions x "
             f"{concepts} concepts, 5 shots; measures wlt, logit_lens, layer_swap (sliding windows), lm_quality "
             "(8 x 128 held-out tokens per language)"]
    with tempfile.TemporaryDirectory() as scratch:
        seconds, (path, texts) = clocked(lambda: _paper_series(Path(scratch), preset, vocab_size, device), device)
        notes.append(f"building and writing the two checkpoints took {seconds:.0f} s (not counted)")
        settings = [f"{name}.max_concepts={concepts}" for name in ("wlt", "logit_lens", "layer_swap")]
        settings += [f"{name}.batch_size={batch_size}" for name in ("wlt", "logit_lens", "layer_swap")]
        settings += [f"lm_quality.texts.{language}={file}" for language, file in texts.items()]
        plan = plan_measures(MEASURES, settings=settings)
        series = open_series(path)
        per_checkpoint = []
        for checkpoint in series.checkpoints:  # the first also tokenizes the prompts; the second is steady state
            seconds, _ = clocked(lambda checkpoint=checkpoint: run_measures(
                series, plan, [checkpoint], device=device.type, show_progress=False), device)
            per_checkpoint.append(seconds)
        written = MetricStore(series.run).read().groupby("measure").size()
        if set(written.index) != set(MEASURES.split(",")):
            raise RuntimeError(f"the measures wrote rows for {sorted(written.index)} only")
        notes.append("metric rows written: " + ", ".join(f"{name} {count:,}" for name, count in written.items()))
        rows = [{"what": "measure suite, first checkpoint (tokenizes the prompts)", "seconds": per_checkpoint[0]},
                {"what": "measure suite, each later checkpoint", "seconds": per_checkpoint[1]},
                {"what": "projected: 200 checkpoints", "seconds": per_checkpoint[0] + 199 * per_checkpoint[1]}]
        targets = [target("moonshot: 200 checkpoints in <= 1 GPU-hour", rows[-1]["seconds"] / 3600, 1.0, " h",
                          higher=False)]
        peer = missing("nnsight")
        if peer:
            notes.append(peer)
        else:
            try:
                rows += _against_nnsight(series, path, peer_concepts, batch_size, device, notes)
            except Exception as error:  # the suite's rows stand without the peer's
                notes.append(f"the nnsight comparison failed: {type(error).__name__}: {error}")
                traceback.print_exc()
    return {"rows": rows, "targets": targets, "notes": notes}


def _against_nnsight(series, path: Path, concepts: int, batch_size: int, device: torch.device,
                     notes: list[str]) -> list[dict]:
    """WLT + logit lens per prompt, phasescope against nnsight's one trace per prompt, on a subset."""
    from nnsight import TransformersModel
    from transformers import AutoTokenizer
    from wlt_throughput import check_agreement, run_nnsight, run_phasescope

    from phasescope.data.lexicon_sources import build_cldr_lexicon
    from phasescope.data.wlt import build_wlt_pairs, encode_wlt

    checkpoint = series.checkpoints[-1]
    directory = str(checkpoint.path)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    pairs = build_wlt_pairs(build_cldr_lexicon(), shots=5, seed=0, max_concepts=concepts)
    # both sides: float32 weights, bf16 autocast on CUDA (as benchmarks/wlt_throughput.py)
    model = series.load_model(checkpoint, device=device.type, dtype=torch.float32)
    encoded = encode_wlt(pairs, tokenizer)
    lm = TransformersModel(directory, task="text-generation", tokenizer=tokenizer, dispatch=True,
                           device_map=device.type, dtype=torch.float32)
    _, scores, lens = run_phasescope(model, tokenizer, pairs, batch_size, encoded)
    peer = run_nnsight(lm, encoded.pairs, device)
    agreement = check_agreement(lens, scores, peer, device)
    ours, _ = clocked(lambda: run_phasescope(model, tokenizer, pairs, batch_size, encoded), device)
    theirs, _ = clocked(lambda: run_nnsight(lm, encoded.pairs, device), device)
    n = len(pairs)
    notes.append(f"nnsight comparison on {n} prompts ({concepts} concepts per direction); ranks agree on "
                 f"{100 * agreement['target_rank']:.1f}% of (item, layer)")
    return [{"what": "WLT + logit lens, phasescope, per prompt", "seconds": ours / n},
            {"what": "WLT + logit lens, nnsight, per prompt", "seconds": theirs / n,
             "ratio": theirs / ours}]


# --- 3. curvature ------------------------------------------------------------------------------------
@step
def curvature(args: argparse.Namespace) -> dict:
    from torch import nn

    from phasescope.curvature import sharpness
    from phasescope.models.resnet import ResNet

    device = device_of(args)
    examples, stages, side = (16, (8, 16), 16) if args.dry_run else (5000, (16, 32, 64), 32)
    torch.manual_seed(0)
    model = ResNet((3, side, side), 10, stages=stages).to(device)
    inputs = torch.randn(examples, 3, side, side, device=device)
    labels = torch.randint(0, 10, (examples,), device=device)
    loss = nn.functional.cross_entropy
    notes = [f"phasescope ResNet (stages {stages}, 2 blocks each, {sum(p.numel() for p in model.parameters()):,} "
             f"parameters), {examples} random {side}x{side} RGB examples, cross-entropy, float32; each method at "
             "the loosest of tolerances 1e-4, 1e-5, 1e-6 that puts it within 1e-4 of the reference"]
    _, reference = clocked(lambda: sharpness(model, loss, (inputs, labels), tol=1e-9, criterion="eigenvalue"), device)
    expected = float(reference.eigenvalues[0])
    rows = []

    def add(method: str, solve: Callable[[float], tuple[float, int]]) -> None:
        """The loosest tolerance on 1e-4, 1e-5, 1e-6 whose eigenvalue is within 1e-4 of the reference."""
        for tol in (1e-4, 1e-5, 1e-6):
            seconds, (value, hvps) = clocked(lambda tol=tol: solve(tol), device)
            error = abs(value - expected) / abs(expected)
            if error <= 1e-4:
                break
        rows.append({"method": method, "tolerance": tol, "seconds": seconds, "hvps": hvps, "relative_error": error})

    def ours(tol: float) -> tuple[float, int]:
        result = sharpness(model, loss, (inputs, labels), tol=tol, criterion="eigenvalue")
        return float(result.eigenvalues[0]), result.num_hvps

    add("phasescope sharpness (Lanczos, eigenvalue error bound)", ours)
    for package, method, function in (("pyhessian", "PyHessian power iteration", _pyhessian),
                                      ("curvlinops", "curvlinops HessianLinearOperator + scipy eigsh", _curvlinops)):
        note = missing(package)
        if note:
            notes.append(note)
        else:
            add(method, lambda tol, function=function: function(model, loss, inputs, labels, device, tol))
    notes.append(f"reference: phasescope at tol 1e-9, top eigenvalue {expected:.6g}")
    base = rows[0]["seconds"]
    for row in rows:
        row["vs_phasescope"] = row["seconds"] / base
    return {"rows": rows, "targets": [], "notes": notes}


def _pyhessian(model, loss, inputs, labels, device, tol: float) -> tuple[float, int]:
    from sharpness import pyhessian_top_eigenvalue

    value, hvps, _ = pyhessian_top_eigenvalue(model, inputs, labels, tol=tol, max_iter=1000, seed=0, loss=loss,
                                              cuda=device.type == "cuda")
    return value, hvps


def _curvlinops(model, loss, inputs, labels, device, tol: float) -> tuple[float, int]:
    """curvlinops' Hessian operator (its determinism check at construction off) exported to scipy's eigsh."""
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import LinearOperator, eigsh
    from torch import nn

    if loss is not nn.functional.cross_entropy:
        raise ValueError(f"no loss module for {loss}")
    parameters = [p for p in model.parameters() if p.requires_grad]
    operator = HessianLinearOperator(model, nn.CrossEntropyLoss(), parameters, [(inputs, labels)],
                                     check_deterministic=False).to_scipy()
    calls = [0]

    def counted(vector):
        calls[0] += 1
        return operator.matvec(vector)

    counting = LinearOperator(operator.shape, matvec=counted, dtype=operator.dtype)
    value = eigsh(counting, k=1, which="LA", tol=tol, return_eigenvectors=False)
    return float(value[0]), calls[0]


# --- 4. a vectorized learning-rate sweep --------------------------------------------------------------
@step
def sweep(args: argparse.Namespace) -> dict:
    from lr_sweep import gd_loop
    from torch import nn

    from phasescope.models.mlp import MLP
    from phasescope.train.functional import StackedObjective, stack_parameters

    device = device_of(args)
    examples, steps = (64, 5) if args.dry_run else (5000, 100)
    torch.manual_seed(0)
    model = MLP((3, 32, 32), 10, depth=2, width=512, activation="relu").to(device)
    inputs = torch.randn(examples, 3, 32, 32, device=device)
    targets = nn.functional.one_hot(torch.randint(0, 10, (examples,), device=device), 10).float()
    lrs = torch.logspace(-3, -1, 16, device=device)
    params = stack_parameters([model] * len(lrs))
    loss = nn.functional.mse_loss
    fast = StackedObjective(model, loss, inputs, targets)
    loop = StackedObjective(model, loss, inputs, targets, vectorized=False)
    a, b = gd_loop(fast, dict(params), lrs, 3), gd_loop(loop, dict(params), lrs, 3)
    worst = max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in a)
    vectorized, _ = clocked(lambda: gd_loop(fast, dict(params), lrs, steps), device)
    sequential, _ = clocked(lambda: gd_loop(loop, dict(params), lrs, steps), device)
    rows = [{"grid": "16 rates, FCN 3072-512-512-10", "steps": steps, "loop_seconds": sequential,
             "vectorized_seconds": vectorized, "speedup": sequential / vectorized}]
    notes = [f"{examples} random CIFAR-10-shaped examples, full-batch GD, MSE; the two paths agree to "
             f"{worst:.1e} relative after 3 steps"]
    return {"rows": rows, "targets": [], "notes": notes}


# --- the results --------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict:
    return {"machine": platform.node(), "processor": platform.processor() or platform.machine(),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "python": platform.python_version()}


def run_step(name: str, args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        result = {"status": "ok", **STEPS[name](args)}
    except Exception as error:  # fail-soft: the step is reported failed and the suite goes on
        result = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc()}
        print(result["traceback"], file=sys.stderr)
    result.update(step=name, seconds=time.perf_counter() - start, dry_run=args.dry_run,
                  environment=environment(device_of(args)))
    (out / f"{name}.json").write_text(json.dumps(result, indent=1, default=float))
    print(f"{name}: {result['status']} in {result['seconds']:.0f} s", file=sys.stderr)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def collect(out: Path) -> str:
    """results.json (every step's record) and results.md (a table per step, targets met or not)."""
    out.mkdir(parents=True, exist_ok=True)
    order = ["tests", *STEPS]
    paths = sorted((path for path in out.glob("*.json") if path.stem != "results"),
                   key=lambda path: (order.index(path.stem) if path.stem in order else len(order), path.stem))
    results = {path.stem: json.loads(path.read_text()) for path in paths}
    lines = ["# phasescope on a GPU", ""]
    for name, result in results.items():
        environment_line = ", ".join(f"{k} {v}" for k, v in result.get("environment", {}).items())
        lines += [f"## {name}: {result['status']} ({result.get('seconds', 0):.0f} s)"
                  + (" (dry run on the CPU: numbers mean nothing)" if result.get("dry_run") else ""), "",
                  f"- {environment_line}"]
        lines += [f"- {note}" for note in result.get("notes", [])]
        if result["status"] != "ok":
            lines += [f"- error: {result.get('error', 'see the log')}"]
        rows = result.get("rows", [])
        if rows:
            headers = list(dict.fromkeys(key for row in rows for key in row))
            lines += ["", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(_cell(row.get(key, "")) for key in headers) + " |" for row in rows]
        for item in result.get("targets", []):
            lines.append(f"- target {item['target']}: {'met' if item['met'] else 'not met'} ({item['measured']})")
        lines.append("")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    text = "\n".join(lines)
    (out / "results.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=[*STEPS, "collect"])
    parser.add_argument("out", type=Path, help="folder for STEP.json (and results.md / results.json)")
    parser.add_argument("--dry-run", action="store_true", help="the CPU at tiny sizes: the plumbing, not numbers")
    args = parser.parse_args()
    if args.step == "collect":
        print(collect(args.out))
    else:
        run_step(args.step, args)


if __name__ == "__main__":
    main()
