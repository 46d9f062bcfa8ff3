"""Public curvature entry points: sharpness, the most negative eigenvalue, the Hessian trace, and
Adam-preconditioned sharpness of a model's loss over a dataset."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Literal

import torch
from torch import Tensor, nn

from phasescope.curvature.hessian import Batch, HessianOperator, HvpMethod, LossFn
from phasescope.curvature.lanczos import EigenResult, lanczos
from phasescope.curvature.operator import ScaledOperator
from phasescope.curvature.preconditioned import (
    adam_preconditioner,
    adam_stability_threshold,
    gd_stability_threshold,
)
from phasescope.curvature.trace import TraceEstimate, hutchinson_trace, hutchpp_trace
from phasescope.errors import PhasescopeError


@dataclass
class SharpnessResult(EigenResult):
    """Extreme Hessian eigenpairs of a loss: the solver's :class:`EigenResult` and the HVP method used.

    ``eigenvectors`` are (n, k) float64 unit vectors over the selected parameters, flattened in the
    model's parameter order; pass ``eigenvectors[:, 0]`` (or the result itself) as ``v0`` to
    warm-start the next checkpoint. ``converged`` means every eigenvalue's error bound is within
    ``tol`` and, from a random start, the no-hidden-eigenvalue certificate holds (see ``lanczos``).
    """

    method: str = ""  # the HVP implementation used: "graph", "func" or "double_backward"

    @property
    def num_hvps(self) -> int:
        """Hessian-vector products used (the solver's operator applications)."""
        return self.num_matvecs

    @property
    def top(self) -> float:
        """The first eigenvalue (the sharpness, for the largest)."""
        return float(self.eigenvalues[0])


# Weight of the previous run's next Ritz vector in a warm start. The Krylov space then holds the
# competing direction from its second step: a crossing of the top two eigenvalues between checkpoints
# is seen, and the second Ritz value (hence the gap in the error bound) is meaningful from the start
# instead of an underestimate from a space that knows only the top direction. 0.1 costs about half a
# step on the benchmark trajectory; without it the bound stopped one checkpoint at 1.6e-4 for tol 1e-4.
COMPETITOR_WEIGHT = 0.1


def _warm_start(v0: Tensor | SharpnessResult | None) -> Tensor | None:
    if not isinstance(v0, SharpnessResult):
        return v0
    start = v0.eigenvectors[:, 0]
    if v0.next_vector is not None:
        start = start + COMPETITOR_WEIGHT * v0.next_vector.to(start)
    return start


def _solve(operator, method_source: HessianOperator, k: int, tol: float, v0, max_iter: int | None,
           which: Literal["largest", "smallest"], certify: bool | None = None, failure_probability: float = 1e-3,
           criterion: Literal["residual", "eigenvalue"] = "residual") -> SharpnessResult:
    result = lanczos(operator, k=k, which=which, tol=tol, max_iter=max_iter, v0=_warm_start(v0), certify=certify,
                     failure_probability=failure_probability, criterion=criterion)
    return SharpnessResult(**{f.name: getattr(result, f.name) for f in fields(result)},
                           method=method_source.method)


def sharpness(model: nn.Module, loss_fn: LossFn, data: Batch | Iterable[Batch], k: int = 1,
              tol: float = 1e-4, v0: Tensor | SharpnessResult | None = None, *,
              params: Sequence[str] | None = None, chunk_size: int | None = None,
              max_iter: int | None = None, method: HvpMethod = "auto", certify: bool | None = None,
              failure_probability: float = 1e-3, criterion: Literal["residual", "eigenvalue"] = "residual"
              ) -> SharpnessResult:
    """The top-k eigenvalues of the Hessian of ``loss_fn`` over the whole of ``data`` (the sharpness).

    Lanczos with full reorthogonalization on exact Hessian-vector products, stopping when every
    Ritz pair's relative residual (``criterion="residual"``) or every eigenvalue's relative error
    bound (``"eigenvalue"``: the gap theorem, far fewer products when only the eigenvalues matter)
    is within ``tol`` and, from a random start, once a probabilistic certificate rules out a larger
    eigenvalue that the start has not seen yet, except with probability ``failure_probability``
    (see :func:`phasescope.curvature.lanczos`).

    Args:
        model: any ``nn.Module``, called as ``model(inputs)``.
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch mean (or see HessianOperator).
        data: ``(inputs, targets)`` tensors, or an iterable of such batches.
        k: number of top eigenvalues.
        tol: relative residual of each eigenpair, or relative error of each eigenvalue (``criterion``).
        v0: warm start, e.g. the previous checkpoint's result (its top eigenvector plus a little of
            the next Ritz vector) or a vector (n,). A warm start is trusted, not certified, unless
            ``certify=True`` (which costs about as many products as a cold start).
        params: parameter names or module prefixes to restrict to (one layer, a named group).
        chunk_size: rows per HVP chunk when ``data`` is a tensor pair (memory, not the result).
        certify: certify against a hidden larger eigenvalue (default: for random starts only).
        failure_probability: the certificate's bound on the probability of missing the top eigenvalue.
        criterion: ``"residual"`` (eigenvectors accurate to ``tol``) or ``"eigenvalue"``.
    """
    operator = HessianOperator(model, loss_fn, data, params=params, chunk_size=chunk_size, method=method)
    return _solve(operator, operator, k, tol, v0, max_iter, "largest", certify, failure_probability, criterion)


def most_negative_eigenvalue(model: nn.Module, loss_fn: LossFn, data: Batch | Iterable[Batch],
                             tol: float = 1e-4, v0: Tensor | SharpnessResult | None = None, *,
                             params: Sequence[str] | None = None, chunk_size: int | None = None,
                             max_iter: int | None = None, method: HvpMethod = "auto") -> SharpnessResult:
    """The smallest (most negative) Hessian eigenvalue; ``tol`` is relative to the largest |theta| seen."""
    operator = HessianOperator(model, loss_fn, data, params=params, chunk_size=chunk_size, method=method)
    return _solve(operator, operator, 1, tol, v0, max_iter, "smallest")


def hessian_trace(model: nn.Module, loss_fn: LossFn, data: Batch | Iterable[Batch], num_matvecs: int = 99,
                  estimator: Literal["hutchpp", "hutchinson"] = "hutchpp", seed: int = 0, *,
                  params: Sequence[str] | None = None, chunk_size: int | None = None,
                  method: HvpMethod = "auto") -> TraceEstimate:
    """Stochastic estimate of the Hessian trace with ``num_matvecs`` HVPs (Hutch++ or Hutchinson)."""
    operator = HessianOperator(model, loss_fn, data, params=params, chunk_size=chunk_size, method=method)
    if estimator == "hutchpp":
        return hutchpp_trace(operator, num_matvecs, seed=seed)
    if estimator == "hutchinson":
        return hutchinson_trace(operator, num_matvecs, seed=seed)
    raise PhasescopeError(f"estimator must be 'hutchpp' or 'hutchinson', got {estimator!r}")


@dataclass
class PreconditionedSharpness:
    """Largest eigenvalue of ``P^{-1/2} H P^{-1/2}`` beside the thresholds it is compared to.

    Attributes:
        eigenvalue: the preconditioned sharpness.
        adam_threshold: (2 + 2 beta1) / ((1 - beta1) lr), 38/lr for beta1 = 0.9.
        gd_threshold: 2/lr, the plain gradient-descent threshold, for reference.
        result: the eigen-solve (its eigenvectors live in the preconditioned coordinates).
    """

    eigenvalue: float
    adam_threshold: float
    gd_threshold: float
    result: SharpnessResult


def preconditioned_sharpness(model: nn.Module, loss_fn: LossFn, data: Batch | Iterable[Batch],
                             preconditioner: Mapping[str, Tensor] | torch.optim.Optimizer, lr: float,
                             beta1: float = 0.9, k: int = 1, tol: float = 1e-4,
                             v0: Tensor | SharpnessResult | None = None, *,
                             params: Sequence[str] | None = None, chunk_size: int | None = None,
                             max_iter: int | None = None, method: HvpMethod = "auto") -> PreconditionedSharpness:
    """Adam's preconditioned sharpness (Cohen et al. 2022, "Adaptive Gradient Methods at the Edge
    of Stability").

    Args:
        preconditioner: an Adam/AdamW optimizer that has taken a step, or the diagonal ``P`` per
            parameter name (see ``adam_preconditioner_from_state`` for a saved optimizer state).
        lr, beta1: the optimizer's learning rate and momentum, for the thresholds.
    """
    if isinstance(preconditioner, torch.optim.Optimizer):
        preconditioner = adam_preconditioner(preconditioner, model)
    operator = HessianOperator(model, loss_fn, data, params=params, chunk_size=chunk_size, method=method)
    missing = [name for name in operator.names if name not in preconditioner]
    if missing:
        raise PhasescopeError(f"the preconditioner has no entry for parameters: {', '.join(missing[:5])}")
    for name, shape in zip(operator.names, operator.shapes):
        if preconditioner[name].shape != shape:
            raise PhasescopeError(f"preconditioner for {name!r} has shape {tuple(preconditioner[name].shape)}, "
                                  f"the parameter {tuple(shape)}")
    diagonal = operator.flatten({name: preconditioner[name] for name in operator.names})
    if not torch.all(diagonal > 0):
        raise PhasescopeError("the preconditioner must be positive everywhere (is eps zero?)")
    scaled = ScaledOperator(operator, diagonal.rsqrt())
    result = _solve(scaled, operator, k, tol, v0, max_iter, "largest")
    return PreconditionedSharpness(result.top, adam_stability_threshold(lr, beta1), gd_stability_threshold(lr),
                                   result)
