"""Stochastic trace estimators for a symmetric operator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from phasescope.curvature.operator import LinearOperator, as_operator
from phasescope.errors import PhasescopeError


@dataclass
class TraceEstimate:
    """A trace estimate with the operator applications it used.

    ``std_error`` is the standard error of the Monte-Carlo part (NaN where it is undefined).
    """

    estimate: float
    std_error: float
    num_matvecs: int


def _rademacher(size: int, count: int, generator: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (size, count), generator=generator, dtype=torch.float64) * 2 - 1


def hutchinson_trace(operator: LinearOperator | Tensor | Callable[[Tensor], Tensor], num_matvecs: int = 100,
                     seed: int = 0, size: int | None = None) -> TraceEstimate:
    """Hutchinson's estimator ``mean_i z_i^T A z_i`` with Rademacher ``z_i``.

    Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
    smoothing splines", 1989. Its error falls as ``1/sqrt(num_matvecs)``.
    """
    op = as_operator(operator, size)
    if num_matvecs < 1:
        raise PhasescopeError(f"num_matvecs must be at least 1, got {num_matvecs}")
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(num_matvecs):
        z = _rademacher(op.size, 1, generator)[:, 0].to(op.device)
        samples.append(float(z @ op.matvec(z)))
    values = torch.tensor(samples, dtype=torch.float64)
    std_error = float(values.std() / num_matvecs ** 0.5) if num_matvecs > 1 else float("nan")
    return TraceEstimate(float(values.mean()), std_error, num_matvecs)


def hutchpp_trace(operator: LinearOperator | Tensor | Callable[[Tensor], Tensor], num_matvecs: int = 99,
                  seed: int = 0, size: int | None = None) -> TraceEstimate:
    """Hutch++: exact trace on a sketched top subspace plus Hutchinson on the rest.

    Meyer, Musco, Musco & Woodruff, "Hutch++: Optimal Stochastic Trace Estimation", SOSA 2021.
    With ``m = num_matvecs`` (a multiple of 3 is used), the error falls as ``1/m`` for operators
    with decaying spectra, like the Hessians of trained networks.
    """
    op = as_operator(operator, size)
    third = num_matvecs // 3
    if third < 1:
        raise PhasescopeError(f"Hutch++ needs num_matvecs >= 3, got {num_matvecs}")
    generator = torch.Generator().manual_seed(seed)
    sketch = _rademacher(op.size, third, generator).to(op.device)
    probes = _rademacher(op.size, third, generator).to(op.device)
    basis, _ = torch.linalg.qr(op.matmat(sketch))  # (n, third)
    low_rank = float(torch.trace(basis.T @ op.matmat(basis)))
    projected = probes - basis @ (basis.T @ probes)
    quadratic = (projected * op.matmat(projected)).sum(dim=0)  # (third,)
    std_error = float(quadratic.std() / third ** 0.5) if third > 1 else float("nan")
    return TraceEstimate(low_rank + float(quadratic.mean()), std_error, 3 * third)
