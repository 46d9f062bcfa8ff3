"""A Lightning callback that records the run for phasescope (extra: ``phasescope[lightning]``).

    from phasescope.integrations.lightning import PhasescopeCallback
    trainer = lightning.pytorch.Trainer(..., callbacks=[PhasescopeCallback("runs/mine")])

The step is Lightning's ``global_step`` (optimizer steps, so gradient accumulation counts once per
update); the weights are the ``LightningModule``'s ``state_dict`` as ``model.safetensors`` (its
``load_state_dict`` reads them back), or a Hugging Face directory when the module is itself a
``PreTrainedModel``; the optimizer is the trainer's first. The final step is recorded when training
ends. Every optimizer step's loss (``training_step``'s, averaged over accumulated batches), learning
rate and gradient norm (before clipping) become the run's ``train`` rows, kept on the device until a
checkpoint. Inline measures go to the trainer's loggers (``trainer.loggers``: TensorBoard, W&B, CSV,
...) as ``phasescope/<measure>/<metric>``, from the global-zero process. Only that process writes.

A fit resumed from a Lightning checkpoint continues the same directory: records after its step
move to ``superseded/``, and the recorder's state (the schedule's position, the sharpness warm
start) comes back through the checkpoint (the callback's ``state_dict``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
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
        self._losses: list[torch.Tensor] = []  # this optimizer step's batch losses (accumulation)
        self._step_values: dict[str, Any] = {}

    def _record(self, trainer, module, final: bool = False) -> None:
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        step = int(trainer.global_step)
        if final:
            self.recorder.finish(module, optimizer, step=step)
        else:
            self.recorder.step(module, optimizer, step=step)
        if self.recorder.last_measured and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({f"phasescope/{key}": value for key, value in self.recorder.last_measured.items()},
                                   step=step)
            self.recorder.last_measured = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.recorder.builtin.check()
        self._record(trainer, pl_module)  # step 0, or the step a resumed fit starts from

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # after the (accumulated) backward passes, before clipping and the update: what this step applies
        gradients = [p.grad.detach() for p in pl_module.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gradients])) \
            if gradients else None
        self._step_values = {"lr": float(optimizer.param_groups[0]["lr"]), "grad_norm": norm}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._losses.append(loss.detach())
        if self._step_values:  # an optimizer step happened since the last batch: its values, once
            values = self._step_values
            if self._losses:
                values["loss"] = torch.stack(self._losses).mean()
            self.recorder.log_training(int(trainer.global_step), **values)
            self._losses, self._step_values = [], {}
        self._record(trainer, pl_module)  # a step already recorded (accumulation) is not handled again

    def on_train_end(self, trainer, pl_module) -> None:
        self._record(trainer, pl_module, final=True)

    def state_dict(self) -> dict[str, Any]:
        return self.recorder.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.recorder.load_state_dict(state_dict)
