"""Terminal output: rich progress bars for long work, and results.

Progress and errors go to stderr (``console``); results (tables) to stdout (``output``), wide
enough when redirected to a file that tables are not wrapped.
"""

from __future__ import annotations

import sys
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

console = Console(stderr=True)
output = Console(width=None if sys.stdout.isatty() else 160)


@contextmanager
def progress_bar(description: str, total: int, transient: bool = False):
    """A progress bar on stderr; yields ``advance(n=1, **fields)``. Fields appear after the bar.

    ``transient`` bars vanish when done (a measure's inner loop under the executor's bar).
    """
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
