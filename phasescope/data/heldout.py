"""Held-out documents of a source without a held-out split: a deterministic share of its documents.

With share p/q (an exact fraction), document ``k`` of the stream is held out when
``floor((k+1) p/q) > floor(k p/q)``, i.e. evenly spread, one in q/p; train documents are the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from typing import Literal

Split = Literal["train", "heldout"]



def heldout_fraction(share: float) -> Fraction:
    """The share as an exact fraction (denominator at most 10^6), so positions never depend on rounding."""
    return Fraction(share).limit_denominator(1_000_000)


def is_heldout_position(position: int, share: Fraction) -> bool:
    """Whether raw document ``position`` belongs to the held-out split."""
    p, q = share.numerator, share.denominator
    return (position + 1) * p // q > position * p // q


def train_documents_before(position: int, share: Fraction) -> int:
    """How many train documents precede raw position ``position``."""
    return position - position * share.numerator // share.denominator


def raw_position_of_train(start: int, share: Fraction) -> int:
    """The smallest raw position preceded by ``start`` train documents (where train document ``start`` is)."""
    low, high = start, start + start * share.numerator // max(share.denominator - share.numerator, 1) + 2
    while train_documents_before(high, share) < start:
        high *= 2
    while low < high:  # train_documents_before is non-decreasing: bisect
        middle = (low + high) // 2
        if train_documents_before(middle, share) < start:
            low = middle + 1
        else:
            high = middle
    while is_heldout_position(low, share):  # the positions right before the next train document
        low += 1
    return low


def split_positions(raw_documents: Iterable[tuple[int, str]], split: Split, share: Fraction) -> Iterator[str]:
    """Keep the documents of ``split`` from (raw position, text) pairs."""
    want_heldout = split == "heldout"
    for position, text in raw_documents:
        if share and is_heldout_position(position, share) == want_heldout:
            yield text
        elif not share and not want_heldout:
            yield text
