"""Quadrature on a segment of weight space: the one home of the rules that attribution integrates with.

Along a segment ``theta(t) = theta_0 + t delta``, ``t`` in [0, 1] (one optimizer step of the replayed
path, or the chord between two checkpoints), the change of f splits over the parameters as

    f(theta(1)) - f(theta(0)) = sum over parameters p of  [integral_0^1 d_p f(theta(t)) dt] delta_p,

and every rule here returns the bracket, the *mean gradient* ``G`` along the segment (``part_p =
G_p . delta_p``; a part of the update, such as one kind of document's, gets ``G . update_part``).

Fixed rules (:func:`quadrature_nodes`): the midpoint rule (ExPLAIND's, arXiv 2505.20076) and
Gauss-Legendre. The adaptive rule (:func:`adaptive_mean_gradient`) uses what a fixed rule throws
away: f is known at both ends of every piece, so the error of a piece's sum, ``G . delta - (f(b) -
f(a))``, is known exactly, not estimated. It takes the trapezoid rule on the segment (no gradient
beyond the two ends, which neighbouring steps share), then Simpson's with the midpoint (one more),
then halves the piece whose gap is largest (Simpson's on each half, two more), until the segment's
gap is within its tolerance or the budget of gradients is spent. The per-parameter parts are as accurate as the
rule that met the tolerance (the gap bounds their sum, not each part).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from phasescope.errors import PhasescopeError

QuadratureRule = Literal["midpoint", "gauss_legendre"]
QUADRATURE_RULES: tuple[str, ...] = ("midpoint", "gauss_legendre")


def quadrature_nodes(points: int, rule: QuadratureRule = "midpoint") -> tuple[np.ndarray, np.ndarray]:
    """Nodes in (0, 1) (increasing) and weights summing to 1 of an open ``points``-point rule on [0, 1]."""
    if points < 1:
        raise PhasescopeError(f"the quadrature needs at least one point, got {points}")
    if rule == "midpoint":
        return (np.arange(points) + 0.5) / points, np.full(points, 1.0 / points)
    if rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(points)
        return (nodes + 1) / 2, weights / 2
    raise PhasescopeError(f"quadrature rule must be one of {', '.join(QUADRATURE_RULES)}, got {rule!r}")


@dataclass
class Point:
    """f and its gradient (per parameter name) at ``t`` on the segment."""

    t: float
    value: float
    gradient: dict[str, Tensor]


Evaluate = Callable[[float], Point]  # t -> f and its gradient at theta_0 + t delta


def dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """``sum_p a_p . b_p`` over the names of ``a``, each product summed in float64."""
    return math.fsum(float(torch.sum(a[name] * b[name].to(a[name].dtype), dtype=torch.float64)) for name in a)


def _combine(terms: list[tuple[float, Mapping[str, Tensor]]]) -> dict[str, Tensor]:
    """``sum_j w_j g_j`` per parameter."""
    (first_weight, first), rest = terms[0], terms[1:]
    total = {name: tensor * first_weight for name, tensor in first.items()}
    for weight, gradient in rest:
        for name, tensor in gradient.items():
            total[name].add_(tensor, alpha=weight)
    return total


class GradientBudget:
    """Gradients of f an attribution may still spend; ``reserved`` of them are kept for later segments."""

    def __init__(self, total: int | None) -> None:
        self.left = math.inf if total is None else total
        self.reserved = 0
        self.spent = 0

    def can_spend(self) -> bool:
        return self.left - self.reserved >= 1

    def spend(self) -> None:
        self.left -= 1
        self.spent += 1


@dataclass
class SegmentIntegral:
    """The mean gradient along a segment, with the signed error of its sum and the gradients it took.

    Attributes:
        mean_gradient: ``integral_0^1 grad f(theta(t)) dt`` per parameter, by the rule that met the tolerance.
        gap: ``mean_gradient . delta - (f(1) - f(0))``: the exact error of the parts' sum on this segment.
        gradients: gradients of f taken inside the segment (its two ends not counted).
    """

    mean_gradient: dict[str, Tensor]
    gap: float
    gradients: int


@dataclass
class _Piece:
    """A piece ``[a, b]`` of a segment: its share of the mean gradient by the trapezoid rule or, once its
    midpoint is known, Simpson's, and the exact signed error of that share's sum."""

    a: Point
    b: Point
    middle: Point | None
    mean: dict[str, Tensor]
    gap: float


def _piece(a: Point, b: Point, middle: Point | None, delta: Mapping[str, Tensor]) -> _Piece:
    width = b.t - a.t
    if middle is None:
        mean = _combine([(width / 2, a.gradient), (width / 2, b.gradient)])
    else:
        mean = _combine([(width / 6, a.gradient), (4 * width / 6, middle.gradient), (width / 6, b.gradient)])
    return _Piece(a, b, middle, mean, dot(mean, delta) - (b.value - a.value))


def adaptive_mean_gradient(evaluate: Evaluate, start: Point, end: Point, delta: Mapping[str, Tensor],
                           tolerance: float, budget: GradientBudget, limit: float = math.inf,
                           carried: float = 0.0) -> SegmentIntegral:
    """The mean gradient along the segment, refined until the exact error of its sum is within ``tolerance``,
    the budget is spent or this segment has taken ``limit`` gradients (see the module docstring).

    The piece with the largest |gap| is refined first: a trapezoid piece gets its midpoint (one gradient)
    and becomes Simpson's; a Simpson piece is halved, each half Simpson's with its own midpoint (two).

    Args:
        evaluate: f and its gradient at a ``t`` inside the segment (one gradient of the budget each).
        start, end: the two ends (``t`` = 0 and 1), already evaluated.
        delta: the segment's direction ``theta(1) - theta(0)``.
        tolerance: the largest accepted |carried + gap| (>= 0).
        budget: shared by every segment of an attribution.
        limit: the most gradients this segment may take.
        carried: the signed gap of the segments before this one, which this one's gap adds to.
    """
    spent = budget.spent
    pieces = [_piece(start, end, None, delta)]

    def affordable(cost: int) -> bool:
        return budget.left - budget.reserved >= cost and budget.spent - spent + cost <= limit

    while abs(carried + math.fsum(piece.gap for piece in pieces)) > tolerance:
        worst = max(range(len(pieces)), key=lambda index: abs(pieces[index].gap))
        piece = pieces[worst]
        if piece.middle is None and affordable(1):
            budget.spend()
            pieces[worst] = _piece(piece.a, piece.b, evaluate((piece.a.t + piece.b.t) / 2), delta)
        elif piece.middle is not None and affordable(2):
            halves = []
            for a, b in ((piece.a, piece.middle), (piece.middle, piece.b)):
                budget.spend()
                halves.append(_piece(a, b, evaluate((a.t + b.t) / 2), delta))
            pieces[worst:worst + 1] = halves
        else:
            break
    mean = pieces[0].mean
    for piece in pieces[1:]:
        for name, tensor in piece.mean.items():
            mean[name].add_(tensor)
    return SegmentIntegral(mean, math.fsum(piece.gap for piece in pieces), budget.spent - spent)


def fixed_mean_gradient(evaluate: Evaluate, start: Point, end: Point, delta: Mapping[str, Tensor], points: int,
                        rule: QuadratureRule, budget: GradientBudget) -> SegmentIntegral:
    """The mean gradient on the segment by a fixed ``points``-point open rule (``points`` gradients)."""
    nodes, weights = quadrature_nodes(points, rule)
    terms = []
    for node, weight in zip(nodes, weights):
        budget.spend()
        terms.append((float(weight), evaluate(start.t + float(node) * (end.t - start.t)).gradient))
    mean = _combine(terms)
    return SegmentIntegral(mean, dot(mean, delta) - (end.value - start.value), points)
