"""Curvature measures of one checkpoint as tidy rows, and the ``sharpness`` measure of GD runs: the top
Hessian eigenvalues of the training loss at a checkpoint of ``phasescope train`` (kind gd), beside
2/eta, each checkpoint warm-started from the one measured before it."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field
from torch import Tensor, nn

from phasescope.curvature import SharpnessResult, sharpness
from phasescope.curvature.hessian import Batch, LossFn, select_parameters
from phasescope.errors import PhasescopeError
from phasescope.measures.registry import Measure, MeasureContext, register_measure
from phasescope.run import StrictModel, config_hash
from phasescope.run.series import CheckpointSeries


class SharpnessConfig(StrictModel):
    """Config of the ``sharpness`` measure (its hash names the metric shards)."""

    k: int = Field(1, ge=1)  # top eigenvalues
    tol: float = Field(1e-4, gt=0)  # relative residual of each Ritz pair
    max_iter: int | None = Field(None, ge=1)  # Krylov dimension cap (default min(n, 200))
    params: list[str] | None = None  # parameter names or module prefixes (default: all)
    chunk_size: int | None = Field(None, ge=1)  # rows per HVP chunk: memory only, not the result
    # start each checkpoint from the previous one's eigenvector (several times fewer HVPs along a trajectory)
    warm_start: bool = True


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


def _gd_run(series: CheckpointSeries):
    """(run, config, data, loss) of a GD run, from ``phasescope.train`` (imported only when measured)."""
    from phasescope.train import open_gd_run

    return open_gd_run(series.run.path)


def check_sharpness(series: CheckpointSeries, config: SharpnessConfig) -> None:
    """Before any checkpoint: the parameter subset exists and k fits in it."""
    from phasescope.train import load_gd_model

    _, _, data, _ = _gd_run(series)
    model = load_gd_model(series.checkpoints[0], data.train_inputs.device)
    size = sum(p.numel() for p in select_parameters(model, config.params).values())
    if not 1 <= config.k <= size:
        raise PhasescopeError(f"k must be between 1 and the number of parameters ({size}), got {config.k}")


def compute_sharpness(context: MeasureContext, config: SharpnessConfig) -> list[dict]:
    """:func:`sharpness_rows` of a GD checkpoint on its run's training set, and ``gd_threshold`` = 2/eta."""
    from phasescope.train import load_gd_model

    _, run_config, data, loss_fn = context.shared(f"gd_run:{context.series.run.path}",
                                                  lambda: _gd_run(context.series))
    model = load_gd_model(context.checkpoint, data.train_inputs.device)
    previous_key = f"sharpness:{config_hash(config)}:previous"
    v0 = context.cache.get(previous_key) if config.warm_start else None
    rows, result = sharpness_rows(model, loss_fn, (data.train_inputs, data.train_targets), config, v0=v0)
    context.cache[previous_key] = result
    return [*rows, {"metric": "gd_threshold", "value": 2.0 / run_config.train.lr}]


SHARPNESS_MEASURE = register_measure(Measure(
    name="sharpness", config_cls=SharpnessConfig, compute=compute_sharpness,
    description="top Hessian eigenvalues of a GD run's training loss (phasescope train, kind gd), beside 2/eta",
    run_kinds=("gd",), prepare=check_sharpness,
))
