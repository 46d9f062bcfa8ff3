"""How a gradient-descent run ends, one definition for single runs, sweeps and their analysis.

A run stops when its training loss is non-finite or above the divergence bound (``diverged``), below
the loss threshold epsilon (``reached_threshold``), or at the step budget (``max_steps``). Metric rows
are numeric, so a status is recorded as two 0/1 rows, ``diverged`` and ``reached_threshold``
(:func:`status_rows`), and read back with :func:`status_from_rows`.
"""

from __future__ import annotations

import math
from typing import Literal

RunStatus = Literal["reached_threshold", "max_steps", "diverged"]
FINISHED: tuple[RunStatus, ...] = ("reached_threshold", "max_steps", "diverged")


def run_status(loss: float, step: int, loss_threshold: float, max_steps: int,
               divergence_bound: float) -> RunStatus | None:
    """The status of a run whose training loss at ``step`` is ``loss``; None while it goes on."""
    if not math.isfinite(loss) or loss > divergence_bound:
        return "diverged"
    if loss < loss_threshold:
        return "reached_threshold"
    return "max_steps" if step >= max_steps else None


def status_rows(status: RunStatus) -> list[tuple[str, float]]:
    """(metric, value) rows recording ``status``."""
    return [("diverged", float(status == "diverged")), ("reached_threshold", float(status == "reached_threshold"))]


def status_from_rows(diverged: float, reached_threshold: float) -> RunStatus:
    """The status that :func:`status_rows` recorded."""
    return "diverged" if diverged else "reached_threshold" if reached_threshold else "max_steps"
