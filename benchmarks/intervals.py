"""Arguments shared by the attribution benchmarks: a run and checkpoint intervals of it."""

from __future__ import annotations

import argparse


def interval(text: str) -> tuple[int, int]:
    """``FROM:TO`` -> (FROM, TO)."""
    first, _, last = text.partition(":")
    if not first.isdigit() or not last.isdigit() or int(first) >= int(last):
        raise argparse.ArgumentTypeError(f"an interval is FROM:TO with FROM < TO, got {text!r}")
    return int(first), int(last)


def interval_parser(description: str) -> argparse.ArgumentParser:
    """A parser with ``--run``, ``--intervals`` and ``--concepts`` (WLT concepts per direction in f)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--run", default="runs/demo/lm")
    parser.add_argument("--intervals", type=interval, nargs="+", default=[(375, 400), (400, 425)],
                        help="FROM:TO checkpoint steps (default: the demo's two intervals where translation starts)")
    parser.add_argument("--concepts", type=int, default=4, help="WLT concepts per direction in f (the demo's)")
    return parser
