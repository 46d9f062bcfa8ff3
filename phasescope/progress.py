"""Terminal output: progress of long work, and results.

Progress and errors go to stderr (``console``); results (tables) to stdout (``output``), wide
enough when redirected to a file that tables are not wrapped. On a terminal, progress is a rich
live bar; when stderr is a file or a pipe (a cluster job's log, ``nohup``, CI) it is a plain line
every :data:`LOG_SECONDS` seconds, as training loops on clusters write.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, soft_wrap=not sys.stderr.isatty())  # a log file keeps each message on one line
output = Console(width=None if sys.stdout.isatty() else 160)
# Seconds between two plain progress lines in a log file (PHASESCOPE_LOG_SECONDS overrides): often
# enough to see a job move, rare enough that a day-long run writes a few thousand lines
LOG_SECONDS = 30.0


@contextmanager
def progress_bar(description: str, total: int, transient: bool = False):
    """Progress of ``total`` units on stderr; yields ``advance(n=1, info="")``. ``info`` follows the count.

    On a terminal: a rich live bar; ``transient`` bars (a measure's inner loop under the executor's
    bar) vanish when done. Otherwise: plain lines (see :class:`PlainProgress`); transient ones write none.
    """
    if not console.is_terminal:
        plain = PlainProgress(description, total, enabled=not transient)
        yield plain.advance
        plain.finish()
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=console, transient=transient) as progress:
        task = progress.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str = "") -> None:
            progress.update(task, advance=n, info=info)

        try:
            yield advance
        except BaseException:
            progress.live.transient = True  # an error message, not a half-done bar, is the last word
            raise


def format_tokens(tokens: float | None) -> str:
    """1234567 -> '1.23M'; None -> '?'."""
    if tokens is None or not math.isfinite(tokens):
        return "?"
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(tokens) >= scale:
            return f"{tokens / scale:.3g}{unit}"
    return f"{tokens:.0f}"


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class PlainProgress:
    """Progress as plain lines for a log file: the first advance, then one line every ``interval``
    seconds, then the last: ``LM steps 340/1300 (26%) | <info> | elapsed 1:02, left 3:05``.

    Time left extrapolates the rate since the first advance (a resumed run starts counting there).
    """

    def __init__(self, description: str, total: int, enabled: bool = True, interval: float | None = None,
                 clock=time.monotonic) -> None:
        self.description, self.total, self.enabled = description, total, enabled
        self.interval = interval if interval is not None else float(os.environ.get("PHASESCOPE_LOG_SECONDS",
                                                                                    LOG_SECONDS))
        self.clock = clock
        self.started = clock()
        self.completed, self.info = 0, ""
        self.baseline: tuple[float, int] | None = None  # (time, completed) at the first advance
        self.last_line: float | None = None
        self.written = 0  # units done at the last line

    def advance(self, n: int = 1, info: str = "") -> None:
        self.completed += n
        self.info = info or self.info
        now = self.clock()
        if self.baseline is None:
            self.baseline = (now, self.completed)
            self.write(now)
        elif now - self.last_line >= self.interval:
            self.write(now)

    def finish(self) -> None:
        if self.last_line is not None and self.completed != self.written:
            self.write(self.clock())

    def write(self, now: float) -> None:
        self.last_line, self.written = now, self.completed
        if not self.enabled:
            return
        share = f" ({self.completed / self.total:.0%})" if self.total else ""
        parts = [f"{self.description} {self.completed}/{self.total}{share}"]
        if self.info:
            parts.append(self.info)
        timing = f"elapsed {_clock(now - self.started)}"
        since, done = self.baseline
        if self.completed > done and self.completed < self.total:
            timing += f", left {_clock((now - since) / (self.completed - done) * (self.total - self.completed))}"
        parts.append(timing)
        console.print(" | ".join(parts), markup=False, highlight=False, soft_wrap=True)
