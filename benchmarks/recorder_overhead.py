"""What recording costs: a Hugging Face Trainer run of the ``small`` Llama preset with and without
phasescope's callback, side by side in this one process.

Both runs train the same model (``build_llama``, seed 0) on the same packed batches of the built-in
controlled corpus, held in memory, for the same steps; the callback writes checkpoints on the
demo's schedule (log-linear: 0, 1, 2, 4, ..., 256, then every 25 steps; no inline measures): a
Hugging Face directory with the tokenizer and AdamW's state each time. Reported: the wall time of
``trainer.train()`` (best of the repeats, runs alternated), the overhead, and the time per checkpoint.

    python benchmarks/recorder_overhead.py                 # 260 steps, 2 repeats: ~8 minutes on 2 cores
    python benchmarks/recorder_overhead.py --steps 60 --repeats 1     # a smoke run
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import PrinterCallback, Trainer, TrainingArguments

from phasescope.data.controlled_corpus import ControlledCorpus, ControlledCorpusConfig
from phasescope.data.mixture import MixtureConfig, PackedStream
from phasescope.data.tokenizer import train_bpe_tokenizer
from phasescope.integrations.hf import PhasescopeCallback
from phasescope.models.llama import LlamaModelConfig, build_llama, count_parameters
from phasescope.run import RunDir

DEMO_SCHEDULE = {"schedule": "log_linear", "log_until": 256, "every": 25}


def train(rows: torch.Tensor, tokenizer, steps: int, batch_size: int, out: Path | None) -> float:
    """Seconds of ``trainer.train()``; with ``out``, the callback records into it."""

    class Rows(Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, index: int) -> dict:
            return {"input_ids": rows[index], "labels": rows[index]}

    model = build_llama(LlamaModelConfig(preset="small"), len(tokenizer), seed=0)
    callbacks = [PhasescopeCallback(out, schedule=DEMO_SCHEDULE)] if out is not None else []
    with tempfile.TemporaryDirectory() as scratch:
        arguments = TrainingArguments(output_dir=scratch, max_steps=steps, per_device_train_batch_size=batch_size,
                                      learning_rate=1e-3, use_cpu=True, report_to=[], save_strategy="no",
                                      logging_steps=10**6, disable_tqdm=True, log_level="error", seed=0)
        trainer = Trainer(model=model, args=arguments, train_dataset=Rows(), processing_class=tokenizer,
                          callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=260)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    corpus = ControlledCorpus(ControlledCorpusConfig())
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=4096, documents_per_language=500)
    stream = PackedStream(corpus, tokenizer, args.seq_len, args.batch_size, MixtureConfig(), seed=0)
    rows = torch.cat([stream.next_batch() for _ in range(args.steps)])
    plain, recorded, checkpoints = [], [], 0
    for _ in range(args.repeats):  # alternated, so that a noisy neighbour hits both
        plain.append(train(rows, tokenizer, args.steps, args.batch_size, None))
        with tempfile.TemporaryDirectory() as scratch:
            recorded.append(train(rows, tokenizer, args.steps, args.batch_size, Path(scratch) / "run"))
            checkpoints = len(RunDir.open(Path(scratch) / "run").list_checkpoints())
    parameters = count_parameters(build_llama(LlamaModelConfig(preset="small"), len(tokenizer), seed=0))
    best_plain, best_recorded = min(plain), min(recorded)
    overhead = best_recorded / best_plain - 1
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; Llama 'small' ({parameters / 1e6:.1f}M parameters), batch "
          f"{args.batch_size} x {args.seq_len} tokens, {args.steps} steps, {checkpoints} checkpoints "
          f"(the demo's schedule: 0, 1, 2, 4, ..., 256, every 25), best of {args.repeats}\n")
    print("| run | seconds | vs without |")
    print("|---|---:|---:|")
    print(f"| Trainer | {best_plain:.1f} | 1.00 |")
    print(f"| Trainer + PhasescopeCallback | {best_recorded:.1f} | {best_recorded / best_plain:.3f} |")
    print(f"\noverhead {100 * overhead:.1f}% ({(best_recorded - best_plain) / checkpoints * 1000:.0f} ms per "
          f"checkpoint); target <= 5%: {'met' if overhead <= 0.05 else 'not met'}")


if __name__ == "__main__":
    main()
