"""A Lightning callback that records the run for phasescope (extra: ``phasescope[lightning]``).

    from phasescope.integrations.lightning import PhasescopeCallback
    trainer = lightning.pytorch.Trainer(..., callbacks=[PhasescopeCallback("runs/mine")])

The step is Lightning's ``global_step`` (optimizer steps, so gradient accumulation counts once per
update); the weights are the ``LightningModule``'s ``state_dict`` as ``model.safetensors`` (its
``load_state_dict`` reads them back), or a Hugging Face directory when the module is itself a
``PreTrainedModel``; the optimizer is the trainer's first. Only the global-zero process writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from phasescope.integrations.recorder import Recorder


class PhasescopeCallback(Callback):
    """Records a Lightning ``Trainer`` run into a phasescope run directory (see the module docstring).

    Args: as for :class:`~phasescope.integrations.Recorder`.
    """

    def __init__(self, out: str | Path, schedule: Any = "log_linear", measures=(), every: Any = None, *,
                 batch: Any = None, loss_fn=None, tokenizer=None, tokens_per_step: int | None = None) -> None:
        self.recorder = Recorder(out, schedule, measures, every, batch=batch, loss_fn=loss_fn, tokenizer=tokenizer,
                                 tokens_per_step=tokens_per_step, source="lightning")

    def _record(self, trainer, module) -> None:
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        self.recorder.step(module, optimizer, step=int(trainer.global_step))

    def on_train_start(self, trainer, pl_module) -> None:
        self._record(trainer, pl_module)  # step 0, or the step a resumed fit starts from

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._record(trainer, pl_module)  # a step already recorded (accumulation) is not written again
