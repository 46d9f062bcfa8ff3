"""Language-model training throughput: phasescope's loop against the Hugging Face Trainer, side by side.

Both train the identical model (the same ``build_llama`` initialization) on the identical packed
batches (drawn once from ``PackedStream`` over the built-in controlled corpus and held in memory,
so neither loop pays for data), with the same optimizer object type and rates (fused AdamW, weight
decay 0.01 on matrices, betas 0.9/0.95, the same warmup-stable-decay rates handed to the Trainer
as a LambdaLR), gradient clipping at 1.0, float32 on the CPU (bf16 on CUDA), in this one process,
in alternating repeats; their first losses are checked to agree. Reported: tokens per second
(median over log intervals after a warm-up, best repeat), their ratio, and the model FLOP
utilization: training FLOPs per token (6 N + attention, ``training_flops_per_token``) times
tokens/s, against a measured float32 matmul peak (a large ``torch.matmul``, same threads).

    python benchmarks/lm_train.py            # tiny and small presets
    python benchmarks/lm_train.py --quick    # fewer steps and repeats (a smoke run)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from phasescope.data.controlled_corpus import ControlledCorpus, ControlledCorpusConfig
from phasescope.data.mixture import MixtureConfig, PackedStream
from phasescope.data.tokenizer import train_bpe_tokenizer
from phasescope.models.llama import build_llama, count_parameters, training_flops_per_token
from phasescope.progress import output
from phasescope.run import RunDir, dump_config
from phasescope.train.distributed import DistributedConfig, init_distributed
from phasescope.train.lm import LMRunConfig, run_training
from phasescope.train.schedules import wsd_learning_rate
from phasescope.train.step import build_optimizer

LR, WARMUP, LOG_EVERY = 1e-3, 5, 5


class MemoryStream:
    """Pre-drawn batches served in order (the same ones to both loops)."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches, self.position = batches, 0
        self.tokens_per_batch = batches[0].numel()

    def next_batch(self) -> torch.Tensor:
        self.position += 1
        return self.batches[self.position - 1]

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def matmul_peak(device: torch.device, size: int = 4096, repeats: int = 10, dtype: torch.dtype = torch.float32
                ) -> float:
    """FLOP/s of a large square matmul in ``dtype`` (the best of ``repeats``)."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 2):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def lm_config(preset: str, steps: int, batch_size: int, seq_len: int, device: str, compile: bool = False
              ) -> LMRunConfig:
    return LMRunConfig.model_validate({
        "device": device, "model": {"preset": preset},
        "train": {"max_steps": steps, "batch_size": batch_size, "seq_len": seq_len, "lr": LR, "log_every": LOG_EVERY,
                  "compile": compile,
                  "lr_schedule": {"warmup_steps": WARMUP, "decay_fraction": 0.0}},
        "checkpoints": {"schedule": "steps", "steps": [steps]}})


def phasescope_loop(config: LMRunConfig, vocab_size: int, batches: list[torch.Tensor]) -> tuple[float, float]:
    """(tokens/s: median over log intervals after the first, mean loss of the first interval) of ``run_training``."""
    model = build_llama(config.model, vocab_size, seed=0)
    rates, first_loss = [], []
    with tempfile.TemporaryDirectory() as root:
        run = RunDir.create(Path(root) / "run", dump_config(config))
        tokenizer_dir = Path(root) / "tokenizer"
        tokenizer_dir.mkdir()

        def on_progress(step: int, total: int, info: dict) -> None:
            if info:
                rates.append(info["tokens_per_second"])

        context = init_distributed(config.device, DistributedConfig())
        run_training(config, run, model, MemoryStream(batches), tokenizer_dir, context, on_progress)
        from phasescope.run import MetricStore

        log = MetricStore(run).read("train")
        first_loss = log[(log.metric == "loss") & (log.step < LOG_EVERY)].value.mean()
    return statistics.median(rates[1:]), float(first_loss)


def trainer_loop(config: LMRunConfig, vocab_size: int, batches: list[torch.Tensor]) -> tuple[float, float]:
    """(tokens/s over the same intervals, mean loss of the first interval) of transformers' Trainer on the same rows."""
    from torch.utils.data import Dataset, SequentialSampler
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    rows = torch.cat(batches)
    train = config.train

    class Rows(Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, index: int) -> dict:
            return {"input_ids": rows[index], "labels": rows[index]}

    class InOrder(Trainer):  # batch k is rows [k B, (k+1) B): the batches phasescope sees
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    stamps, losses = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % LOG_EVERY == 0:
                _sync(torch.device(config.device))
                stamps.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and not losses:
                losses.append(logs["loss"])

    model = build_llama(config.model, vocab_size, seed=0)
    # the same AdamW (groups, fused kernel) and the same warmup-stable-decay rates as phasescope's loop
    optimizer = build_optimizer(model, train)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: wsd_learning_rate(min(step, train.total_steps - 1), 1.0, train.total_steps,
                                                  train.lr_schedule))
    with tempfile.TemporaryDirectory() as root:
        arguments = TrainingArguments(
            output_dir=root, per_device_train_batch_size=train.batch_size, max_steps=train.total_steps,
            max_grad_norm=train.grad_clip, logging_steps=LOG_EVERY, save_strategy="no", report_to=[],
            use_cpu=config.device == "cpu", bf16=config.device == "cuda", dataloader_num_workers=0,
            torch_compile=train.compile,
            disable_tqdm=True, log_level="error", seed=0)
        trainer = InOrder(model=model, args=arguments, train_dataset=Rows(), callbacks=[Clock()],
                          optimizers=(optimizer, schedule))
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    tokens = LOG_EVERY * train.tokens_per_step
    rates = [tokens / (b - a) for a, b in zip(stamps, stamps[1:])]
    return statistics.median(rates[1:]), losses[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and one repeat")
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    steps, repeats = (20, 1) if args.quick else (40, 3)
    torch.manual_seed(0)
    corpus = ControlledCorpus(ControlledCorpusConfig())
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=4096, documents_per_language=500)
    stream = PackedStream(corpus, tokenizer, args.seq_len, args.batch_size, MixtureConfig(), seed=0)
    batches = [stream.next_batch() for _ in range(steps)]
    peak = matmul_peak(torch.device(device))
    output.print(f"device {device}, {torch.get_num_threads()} threads, float32 matmul peak {peak / 1e9:.1f} GFLOP/s; "
                 f"batch {args.batch_size} x {args.seq_len} tokens, vocabulary {len(tokenizer)}, {steps} steps, "
                 f"best of {repeats}")
    from rich.table import Table

    table = Table("preset", "parameters", "phasescope tok/s", "Trainer tok/s", "phasescope / Trainer",
                  "phasescope GFLOP/s", "MFU vs matmul peak", "Trainer MFU")
    for preset in args.presets.split(","):
        config = lm_config(preset, steps, args.batch_size, args.seq_len, device)
        ours, theirs = [], []
        for _ in range(repeats):  # alternate, so that a noisy neighbour hits both
            ours.append(phasescope_loop(config, len(tokenizer), batches))
            theirs.append(trainer_loop(config, len(tokenizer), batches))
        # the same model on the same batches: the same losses (up to the order of floating-point sums)
        assert abs(ours[0][1] - theirs[0][1]) < 1e-3 * ours[0][1], (ours[0][1], theirs[0][1])
        model = build_llama(config.model, len(tokenizer), seed=0)
        flops = training_flops_per_token(model, args.seq_len)
        best_ours, best_theirs = max(r for r, _ in ours), max(r for r, _ in theirs)
        table.add_row(preset, f"{count_parameters(model) / 1e6:.2f}M", f"{best_ours:,.0f}", f"{best_theirs:,.0f}",
                      f"{best_ours / best_theirs:.2f}x", f"{best_ours * flops / 1e9:.1f}",
                      f"{best_ours * flops / peak:.0%}", f"{best_theirs * flops / peak:.0%}")
    output.print(table)


if __name__ == "__main__":
    main()
