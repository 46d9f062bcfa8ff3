"""A Hugging Face ``Trainer`` callback that records the run for phasescope (extra: ``phasescope[hf]``).

    from phasescope.integrations.hf import PhasescopeCallback
    trainer = Trainer(..., callbacks=[PhasescopeCallback("runs/mine", schedule="log_linear")])

Checkpoints (Hugging Face directories with the tokenizer the Trainer holds, the optimizer's state
beside them) are written after the optimizer steps the schedule names, at step 0 before training
and at the last step when training ends; the step is the Trainer's ``global_step``, the tokens its
``num_input_tokens_seen`` when ``include_num_input_tokens_seen`` is on (else ``tokens_per_step`` x
step, if given). What the Trainer logs (``loss``, ``learning_rate``, ``grad_norm``, at its
``logging_steps``: 1 gives every step) becomes the run's ``train`` rows (``loss``, ``lr``,
``grad_norm``), as ``phasescope train`` writes them. Only the main process writes.

Inline measures reach the Trainer's loggers (``report_to``: W&B, TensorBoard, MLflow, ...) as
``phasescope/<measure>/<metric>``: a measured step asks the Trainer to log, and the callback adds its
values to that log. The Trainer calls its reporting callbacks before the ones passed in
``callbacks=``, so place the recorder first with :meth:`PhasescopeCallback.add_to` for the values to
reach them; the Trainer's ``log_history`` (``trainer_state.json``) has them either way.

A Trainer resumed from its own checkpoint continues the same directory: records after the step it
resumed from move to ``superseded/``. With ``restore_callback_states_from_checkpoint=True`` the
schedule's position comes back from the Trainer's checkpoint (the sharpness warm start does not: it
is not JSON, and a cold start costs iterations, not accuracy).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, ClassVar

from phasescope.errors import PhasescopeError


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # a module blocked in sys.modules
        return False


if not _installed("accelerate"):  # the Trainer needs it; say so at import, not at the first Trainer
    raise PhasescopeError("the Hugging Face Trainer needs accelerate: pip install 'phasescope[hf]' (in this "
                          "repository: PHASESCOPE_EXTRAS=study,hf bash scripts/setup.sh)")

from transformers import TrainerCallback  # noqa: E402
from transformers.trainer_callback import ExportableState  # noqa: E402

from phasescope.integrations.recorder import Recorder  # noqa: E402

# the Trainer's log keys and the train rows' metric names (phasescope train's)
TRAINER_VALUES = {"loss": "loss", "learning_rate": "lr", "grad_norm": "grad_norm"}


class PhasescopeCallback(TrainerCallback, ExportableState):
    """Records a ``transformers.Trainer`` run into a phasescope run directory (see the module docstring).

    Args:
        out: the run directory.
        schedule, measures, every, batch, loss_fn, tokens_per_step: as for
            :class:`~phasescope.integrations.Recorder`.
        tokenizer: saved into every checkpoint; default: the Trainer's ``processing_class``.
    """

    _live: ClassVar[dict[str, PhasescopeCallback]] = {}  # by directory: what a restored callback takes over

    def __init__(self, out: str | Path, schedule: Any = "log_linear", measures=(), every: Any = None, *,
                 batch: Any = None, loss_fn=None, tokenizer=None, tokens_per_step: int | None = None) -> None:
        live = self._live.get(str(Path(out).resolve()))
        if live is not None and batch is None and loss_fn is None and isinstance(measures, list):
            # the Trainer re-creates a stateful callback from its JSON arguments on resume: the held
            # batch, the loss function, callable measures and settings come from the instance passed in
            recorder = live.recorder
            batch, loss_fn, tokenizer = recorder.builtin.batch, recorder.builtin.loss_fn, recorder.tokenizer
            measures = {name: recorder.measures.get(name) or recorder.settings.get(name) or None for name in measures}
        self._arguments = {"out": str(out), "schedule": _json_schedule(schedule), "every": _json_schedule(every),
                           "tokens_per_step": tokens_per_step, "measures": list(measures)}
        self.recorder = Recorder(out, schedule, measures, every, batch=batch, loss_fn=loss_fn, tokenizer=tokenizer,
                                 tokens_per_step=tokens_per_step, source="hf_trainer")
        self.schedule_state: dict = {}
        self._live[str(Path(out).resolve())] = self

    @classmethod
    def add_to(cls, trainer, *args, **kwargs) -> PhasescopeCallback:
        """``PhasescopeCallback.add_to(trainer, "runs/mine", ...)``: a recorder placed before the Trainer's
        reporting callbacks, so that its measures reach ``report_to``; returns it."""
        callback = cls(*args, **kwargs)
        trainer.callback_handler.callbacks.insert(0, callback)
        return callback

    # --- the Trainer's stateful-callback protocol (trainer_state.json) -------------------------------
    def state(self) -> dict:
        recorder = self.recorder
        position = {"last_tokens": recorder.schedule.last_tokens,
                    "measure_last_tokens": recorder.measure_schedule.last_tokens if recorder.measure_schedule
                    else None}
        return {"args": self._arguments, "attributes": {"schedule_state": position}}

    # --- events ---------------------------------------------------------------------------------------
    def _tokens(self, args, state) -> int | None:
        counting = getattr(args, "include_num_input_tokens_seen", False)
        if counting and counting != "no":
            return int(state.num_input_tokens_seen)
        return None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.recorder.tokenizer is None:
            self.recorder.tokenizer = kwargs.get("processing_class") or kwargs.get("tokenizer")
        self.recorder.builtin.check()
        if self.recorder.needs_tokens and self._tokens(args, state) is None:
            raise PhasescopeError("an every_tokens schedule needs the tokens seen: "
                                  "TrainingArguments(include_num_input_tokens_seen=True), or "
                                  "PhasescopeCallback(..., tokens_per_step=N)")
        if self.schedule_state:  # restored by the Trainer from its checkpoint
            self.recorder.load_state_dict(self.schedule_state)
        # step 0, or the step a resumed Trainer starts from
        self.recorder.step(model, optimizer, step=int(state.global_step), tokens=self._tokens(args, state))

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        record = self.recorder.finish if state.global_step >= state.max_steps else self.recorder.step
        record(model, optimizer, step=int(state.global_step), tokens=self._tokens(args, state))
        if self.recorder.last_measured:
            control.should_log = True  # the measures go out with the Trainer's next log, this step's
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        values = {TRAINER_VALUES[key]: logs[key] for key in TRAINER_VALUES if isinstance(logs.get(key), int | float)}
        if values:
            self.recorder.log_training(int(state.global_step), tokens=self._tokens(args, state), **values)
        if self.recorder.last_measured:
            measured = {f"phasescope/{key}": value for key, value in self.recorder.last_measured.items()}
            logs.update(measured)
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1].update(measured)
            self.recorder.last_measured = {}

    def on_train_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        # the last step (already recorded at max_steps; here when training stopped early)
        self.recorder.finish(model, optimizer, step=int(state.global_step), tokens=self._tokens(args, state))


def _json_schedule(schedule: Any) -> Any:
    """A schedule as the JSON the Trainer's state file holds (a model as its dict, a range as a list)."""
    if hasattr(schedule, "model_dump"):
        return schedule.model_dump(mode="json")
    return list(schedule) if isinstance(schedule, range | tuple) else schedule
