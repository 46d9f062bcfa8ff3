"""Curvature measures of one checkpoint as tidy rows."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field
from torch import Tensor, nn

from phasescope.curvature import SharpnessResult, sharpness
from phasescope.curvature.hessian import Batch, LossFn
from phasescope.run import StrictModel


class SharpnessConfig(StrictModel):
    """Config of the ``sharpness`` measure (its hash names the metric shards)."""

    k: int = Field(1, ge=1)  # top eigenvalues
    tol: float = Field(1e-4, gt=0)  # relative residual of each Ritz pair
    max_iter: int | None = Field(None, ge=1)  # Krylov dimension cap (default min(n, 200))
    params: list[str] | None = None  # parameter names or module prefixes (default: all)
    chunk_size: int | None = Field(None, ge=1)  # rows per HVP chunk: memory only, not the result


def sharpness_rows(model: nn.Module, loss_fn: LossFn, data: Batch | Iterable[Batch], config: SharpnessConfig,
                   v0: Tensor | SharpnessResult | None = None) -> tuple[list[dict], SharpnessResult]:
    """Rows ``sharpness`` (the top eigenvalue), ``eigenvalue_2..k``, ``hvps`` and ``converged``,
    with ``component`` naming the parameter subset when there is one; and the result, whose top
    eigenvector warm-starts the next checkpoint."""
    result = sharpness(model, loss_fn, data, k=config.k, tol=config.tol, v0=v0, params=config.params,
                       chunk_size=config.chunk_size, max_iter=config.max_iter)
    component = None if config.params is None else ",".join(config.params)
    names = ["sharpness"] + [f"eigenvalue_{i}" for i in range(2, config.k + 1)]
    values = [*zip(names, result.eigenvalues.tolist()), ("hvps", result.num_hvps),
              ("converged", float(result.converged))]
    return [{"metric": name, "value": float(value), "component": component} for name, value in values], result
