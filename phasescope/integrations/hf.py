"""A Hugging Face ``Trainer`` callback that records the run for phasescope (extra: ``phasescope[hf]``).

    from phasescope.integrations.hf import PhasescopeCallback
    trainer = Trainer(..., callbacks=[PhasescopeCallback("runs/mine", schedule="log_linear")])

Checkpoints (Hugging Face directories with the tokenizer the Trainer holds, the optimizer's state
beside them) are written after the optimizer steps the schedule names, and at step 0 before
training; the step is the Trainer's ``global_step``, the tokens its ``num_input_tokens_seen`` when
``include_num_input_tokens_seen`` is on (else ``tokens_per_step`` x step, if given). Only the main
process writes. A Trainer resumed from its own checkpoint continues the same directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from phasescope.integrations.recorder import Recorder


class PhasescopeCallback(TrainerCallback):
    """Records a ``transformers.Trainer`` run into a phasescope run directory (see the module docstring).

    Args:
        out: the run directory.
        schedule, measures, every, batch, loss_fn, tokens_per_step: as for
            :class:`~phasescope.integrations.Recorder`.
        tokenizer: saved into every checkpoint; default: the Trainer's ``processing_class``.
    """

    def __init__(self, out: str | Path, schedule: Any = "log_linear", measures=(), every: Any = None, *,
                 batch: Any = None, loss_fn=None, tokenizer=None, tokens_per_step: int | None = None) -> None:
        self.recorder = Recorder(out, schedule, measures, every, batch=batch, loss_fn=loss_fn, tokenizer=tokenizer,
                                 tokens_per_step=tokens_per_step, source="hf_trainer")

    def _record(self, state, model, optimizer, kwargs: dict) -> None:
        if self.recorder.tokenizer is None:
            self.recorder.tokenizer = kwargs.get("processing_class") or kwargs.get("tokenizer")
        tokens = getattr(state, "num_input_tokens_seen", None) or None
        self.recorder.step(model, optimizer, step=int(state.global_step), tokens=tokens)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._record(state, model, optimizer, kwargs)  # step 0, or the step a resumed Trainer starts from

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._record(state, model, optimizer, kwargs)
