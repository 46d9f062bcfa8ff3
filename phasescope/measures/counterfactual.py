"""Counterfactual removal: what f would have been at a checkpoint had a part of the data been left out.

Completeness says that an attribution's parts add up to the change; it does not say that a part of
the data predicts what happens without that data. The test data-attribution methods are judged by
(the linear datamodeling score of TRAK, Park et al. 2023, and dattri) is removal: replay the interval
from the same resume state with that part's tokens left out of every step's loss, all else equal (the
same batches in the same order; :func:`~phasescope.train.replay.replay_steps` with ``leave_out``), and
measure f at its end. The part's *removal effect* is ``f(trained end) - f(end without the part)``: what
the part did to f, to set beside its attributed share.

Removal is not first-order: without the part, AdamW's second moments and the clipping factor change
too, and so does every later gradient, where the attribution holds the trained path fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from phasescope.measures.attribution import GradientAt, Objective
from phasescope.train.data_split import DataDimension
from phasescope.train.replay import replay_device, replay_steps, saved_weight_files


@dataclass
class RemovalEffect:
    """f at the interval's end as trained and as replayed without one part of the data."""

    part: str  # "<dimension>=<value>", the label the attribution's data rows use
    f_trained: float
    f_removed: float
    steps_changed: int  # replayed steps whose batch had tokens of the part

    @property
    def effect(self) -> float:
        """``f_trained - f_removed``: what the part's tokens did to f over the interval."""
        return self.f_trained - self.f_removed


def removal_effects(run_path: Path | str, objective: Objective, from_step: int, to_step: int, model: nn.Module,
                    parts: Sequence[tuple[DataDimension, str]]) -> list[RemovalEffect]:
    """Replay ``from_step -> to_step`` once per part with that part's tokens left out, and measure f at the end.

    Args:
        run_path: a ``phasescope train`` language-model run with resume state at ``from_step``.
        objective: ``f(model)``, as for attribution; evaluated on ``model`` (its dtype is f's).
        from_step, to_step: two checkpoints of the run.
        model: a model of the run's architecture; its parameters hold the last removal's end on return.
        parts: ``(dimension, value)`` pairs, e.g. ``("kind", "glossary")``.

    Raises:
        PhasescopeError: no resume state at ``from_step`` (one line, naming the run and the step), or a
            part the run's data does not have.
    """
    device = replay_device(run_path, from_step, to_step)  # where the run trained
    evaluate = GradientAt(model, objective)
    f_trained = evaluate.value_at_checkpoint(saved_weight_files(run_path, to_step))
    effects = []
    for dimension, value in parts:
        changed, end = 0, None
        for replayed in replay_steps(run_path, from_step, to_step, device=device, leave_out=[(dimension, value)]):
            changed += int(any((dimension == "language" and source.language == value) for source in replayed.sources)
                           or (dimension == "kind" and value in replayed.kinds))
            end = replayed.after
        f_removed = evaluate.value({name: end[name] for name in evaluate.named})
        effects.append(RemovalEffect(f"{dimension}={value}", f_trained, f_removed, changed))
    return effects
