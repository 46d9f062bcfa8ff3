"""Diagonal linear networks: a linear predictor ``beta`` written as a product of two weight vectors.

Woodworth et al., "Kernel and Rich Regimes in Overparametrized Models", COLT 2020: the
initialization scale ``alpha`` moves gradient flow between the min-l2 (large alpha) and the
min-l1 (small alpha) interpolator.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from phasescope.errors import PhasescopeError

PARAMETERIZATIONS = ("ww", "uu-vv", "uv")


class DiagonalLinearNetwork(nn.Module):
    """``f(x) = <beta, x>`` with ``beta = w*w``, ``u*u - v*v`` or ``u*v``.

    Every weight starts at ``alpha``, so beta starts at 0 for ``uu-vv`` and at ``alpha^2`` otherwise.
    """

    def __init__(self, num_features: int, parameterization: str = "uu-vv", alpha: float = 0.1) -> None:
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise PhasescopeError(
                f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, got {parameterization!r}")
        self.parameterization = parameterization
        self.u = nn.Parameter(torch.full((num_features,), float(alpha)))
        if parameterization != "ww":
            self.v = nn.Parameter(torch.full((num_features,), float(alpha)))

    def effective_predictor(self) -> Tensor:
        """The linear predictor beta (num_features,)."""
        return diagonal_predictor(self.parameterization, self.u, getattr(self, "v", None))

    def forward(self, inputs: Tensor) -> Tensor:
        return (inputs @ self.effective_predictor()).unsqueeze(-1)  # (B, 1)


def diagonal_predictor(parameterization: str, u: Tensor, v: Tensor | None = None) -> Tensor:
    """beta of a diagonal linear network from its weights, elementwise (any leading dims, e.g. (M, d) for
    stacked sweep members): ``u * u`` (ww), ``u * u - v * v`` (uu-vv) or ``u * v`` (uv)."""
    if parameterization == "ww":
        return u * u
    if parameterization == "uu-vv":
        return u * u - v * v
    return u * v
