"""Interrupts: Ctrl-C (SIGINT) and SIGTERM (what SLURM and Kubernetes send) stop work at a safe point.

The command line runs inside :func:`termination_handled`: both signals then raise
:class:`KeyboardInterrupt` in the main thread, so long work unwinds through its ``finally`` blocks
and every atomic writer discards its temporary. Work that should not be cut in half, a checkpoint
being gathered and written, runs inside :func:`interrupts_deferred`: a signal that arrives there is
held and raised when the block ends, so the checkpoint is published first.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator

_state = {"depth": 0, "pending": None, "received": None}  # deferral nesting, held signal, last signal seen


def _raise_interrupt(signum: int, frame) -> None:
    _state["received"] = signal.Signals(signum).name
    if _state["depth"] > 0:
        _state["pending"] = signum  # raised when the deferred block ends
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def termination_handled() -> Iterator[None]:
    """Inside, SIGINT and SIGTERM raise KeyboardInterrupt (held inside :func:`interrupts_deferred`);
    the previous handlers come back on exit.

    Only the main thread can install handlers; elsewhere this changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    _state["received"] = None
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def received_signal() -> str:
    """The name of the last interrupting signal (``SIGINT`` when none was seen: a plain Ctrl-C)."""
    return _state["received"] or "SIGINT"


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends (a checkpoint or shard being written), then raise.

    Only signals handled by :func:`termination_handled` are held; without it (library use) this is a
    no-op and Python's default Ctrl-C behaviour applies.
    """
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    pending = _state["pending"]  # reached only when the block ended normally
    if _state["depth"] == 0 and pending is not None:
        _state["pending"] = None
        raise KeyboardInterrupt(signal.Signals(pending).name)


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during a command; the message says what was kept and how to resume."""


@contextlib.contextmanager
def resumable(kept: Callable[[], str]) -> Iterator[None]:
    """Turn an interrupt of the block into :class:`Interrupted` with ``kept()``'s account of the run."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(kept()) from None


def rerun_command() -> str:
    """This very command line, to paste for resuming."""
    return "phasescope " + " ".join(shlex.quote(argument) for argument in sys.argv[1:])
