"""Record a Hugging Face Trainer run with phasescope, measure its checkpoints and write the report.

Offline, on the CPU, in about a minute: a tiny Llama trained by the real ``transformers.Trainer`` on
phasescope's built-in multilingual corpus, with ``PhasescopeCallback`` writing log-linear
checkpoints (and the held-out loss inline); then WLT translation and the logit lens on every
checkpoint, and the HTML report.

    python examples/trainer_example.py [OUT]      # default runs/trainer-example
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from phasescope.data.controlled_corpus import ControlledCorpus, ControlledCorpusConfig
from phasescope.data.mixture import MixtureConfig, PackedStream
from phasescope.data.tokenizer import train_bpe_tokenizer
from phasescope.errors import PhasescopeError

try:
    from phasescope.integrations.hf import PhasescopeCallback
except PhasescopeError as error:  # the hf extra is not installed: one line, not a traceback
    sys.exit(f"error: {error}")

STEPS, BATCH, SEQ_LEN = 300, 16, 128


class Packed(Dataset):
    """Fixed-length rows of packed text; the labels are the inputs (the model shifts them)."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.rows[index], "labels": self.rows[index]}


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/trainer-example")
    corpus = ControlledCorpus(ControlledCorpusConfig())
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=2048, documents_per_language=300)
    stream = PackedStream(corpus, tokenizer, SEQ_LEN, BATCH, MixtureConfig(), seed=0)
    rows = torch.cat([stream.next_batch() for _ in range(STEPS)])
    held_out = stream.next_batch()[:8]

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=192,
                                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=SEQ_LEN,
                                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                         pad_token_id=tokenizer.pad_token_id))
    callback = PhasescopeCallback(out, schedule={"schedule": "log_linear", "log_until": 128, "every": 50},
                                  measures=["loss"], batch={"input_ids": held_out, "labels": held_out})
    arguments = TrainingArguments(output_dir=str(out / "trainer"), max_steps=STEPS, per_device_train_batch_size=BATCH,
                                  learning_rate=3e-3, warmup_steps=20, use_cpu=True, report_to=[],
                                  save_strategy="no", logging_steps=50, seed=0)
    Trainer(model=model, args=arguments, train_dataset=Packed(rows), processing_class=tokenizer,
            callbacks=[callback]).train()
    corpus.lexicon.save(out / "data" / "lexicon.parquet")  # the corpus's concepts: what WLT asks for

    phasescope = [sys.executable, "-m", "phasescope.cli"]
    subprocess.run([*phasescope, "measure", str(out), "--measures", "wlt,logit_lens", "--device", "cpu",
                    "--set", "wlt.max_concepts=4", "--set", "logit_lens.max_concepts=4"], check=True)
    subprocess.run([*phasescope, "report", str(out)], check=True)


if __name__ == "__main__":
    main()
