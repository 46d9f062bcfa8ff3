"""Extreme eigenpairs of a symmetric operator: Lanczos with full reorthogonalization, and power
iteration as the simple baseline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from phasescope.curvature.operator import LinearOperator, as_operator
from phasescope.errors import PhasescopeError


@dataclass
class EigenResult:
    """Eigenpairs found by an iterative solver.

    Attributes:
        eigenvalues: (k,) float64, descending for ``which="largest"``, ascending for ``"smallest"``.
        eigenvectors: (n, k) unit columns matching ``eigenvalues``.
        num_matvecs: operator applications used.
        converged: whether every requested pair met the residual tolerance.
        residuals: (k,) norms ``||A y - theta y||`` of the returned pairs.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    num_matvecs: int
    converged: bool
    residuals: Tensor


def _start_vector(size: int, v0: Tensor | None, seed: int, dtype: torch.dtype, device) -> Tensor:
    if v0 is None:
        generator = torch.Generator().manual_seed(seed)
        v0 = torch.randn(size, generator=generator, dtype=torch.float64)
    v0 = v0.detach().reshape(-1).to(device=device, dtype=dtype)
    if v0.shape[0] != size:
        raise PhasescopeError(f"the warm-start vector has {v0.shape[0]} entries, the operator needs {size}")
    norm = torch.linalg.vector_norm(v0)
    if not torch.isfinite(norm) or norm == 0:
        raise PhasescopeError("the warm-start vector must be finite and non-zero")
    return v0 / norm


def lanczos(operator: LinearOperator | Tensor | Callable[[Tensor], Tensor], k: int = 1,
            which: Literal["largest", "smallest"] = "largest", tol: float = 1e-4,
            max_iter: int | None = None, v0: Tensor | None = None, seed: int = 0,
            size: int | None = None, basis_dtype: torch.dtype = torch.float64,
            min_iter: int | None = None) -> EigenResult:
    """Top-k (or bottom-k) eigenpairs by Lanczos with full reorthogonalization.

    Stops when every wanted Ritz pair has residual ``||A y - theta y|| <= tol * scale``, where the
    scale is ``|theta|`` for the largest eigenvalues and the largest ``|theta|`` seen for the
    smallest (the bottom of a Hessian spectrum often sits near zero). The residual comes from the
    tridiagonal matrix at no extra cost (Paige 1971; Golub & Van Loan, Matrix Computations, 10.1).
    A warm start ``v0`` near the wanted eigenvector (the previous checkpoint's) cuts the count.

    A small residual cannot tell that a larger eigenvalue has not entered the Krylov space yet
    (the top Ritz value may sit, converged, on the second eigenvalue), so at least ``min_iter``
    steps are taken: by default 20 from a random start (ARPACK's default subspace) and 5 from a
    warm start, whose space already holds the previous top directions.

    Args:
        operator: a LinearOperator, a dense symmetric matrix, or a matvec callable with ``size``.
        k: number of eigenpairs.
        which: ``"largest"`` (algebraic) or ``"smallest"`` (the most negative).
        tol: relative residual tolerance.
        max_iter: Krylov dimension cap (default ``min(n, max(200, 4k))``); the basis is kept, so
            memory grows to ``steps * n`` numbers of ``basis_dtype``.
        v0: start vector (n,); random (seeded) when omitted.
        min_iter: steps before convergence may be declared (see above).
    """
    op = as_operator(operator, size)
    n = op.size
    if not 1 <= k <= n:
        raise PhasescopeError(f"k must be between 1 and the number of parameters ({n}), got {k}")
    if which not in ("largest", "smallest"):
        raise PhasescopeError(f"which must be 'largest' or 'smallest', got {which!r}")
    if tol <= 0:
        raise PhasescopeError(f"tol must be positive, got {tol}")
    max_iter = min(n, max(200, 4 * k)) if max_iter is None else min(int(max_iter), n)
    if max_iter < k:
        raise PhasescopeError(f"max_iter ({max_iter}) must be at least k ({k})")
    if min_iter is None:
        min_iter = 20 if v0 is None else 5
    min_iter = min(max(int(min_iter), k), max_iter)
    device = op.device
    basis = torch.empty(min(max_iter, 32), n, dtype=basis_dtype, device=device)  # grown on demand
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples basis[j] and basis[j + 1]
    q = _start_vector(n, v0, seed, basis_dtype, device)
    generator = torch.Generator().manual_seed(seed + 1)
    matvecs_before = op.num_matvecs
    converged = False
    for j in range(max_iter):
        if j == basis.shape[0]:
            grown = torch.empty(min(max_iter, 2 * j), n, dtype=basis_dtype, device=device)
            grown[:j] = basis
            basis = grown
        basis[j] = q
        w = op.matvec(q)
        alpha = float(q @ w)
        w = w - alpha * q
        if j > 0:
            w = w - betas[j - 1] * basis[j - 1]
        for _ in range(2):  # "twice is enough" (Kahan–Parlett) for full reorthogonalization
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(torch.linalg.vector_norm(w))
        alphas.append(alpha)
        theta, ritz_vectors = eigh_tridiagonal(np.array(alphas), np.array(betas[:j]))
        wanted = np.argsort(theta)[::-1][:k] if which == "largest" else np.argsort(theta)[:k]
        residuals = np.abs(beta * ritz_vectors[-1, wanted])
        scale = np.abs(theta[wanted]) if which == "largest" else np.full(len(wanted), np.abs(theta).max())
        if j + 1 >= min_iter and np.all(residuals <= tol * np.maximum(scale, np.finfo(float).tiny)):
            converged = True
            break
        if j + 1 == max_iter:
            break
        if beta <= 1e-10 * max(np.abs(theta).max(), 1e-300):
            # An invariant subspace: the Ritz pairs so far are exact; continue with a fresh direction.
            w = torch.randn(n, generator=generator, dtype=torch.float64).to(device, basis_dtype)
            for _ in range(2):
                w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
            beta_next, q = 0.0, w / torch.linalg.vector_norm(w)
        else:
            beta_next, q = beta, w / beta
        betas.append(beta_next)
    steps = len(alphas)
    coefficients = torch.as_tensor(ritz_vectors[:, wanted].copy(), dtype=basis_dtype, device=device)
    eigenvectors = basis[:steps].T @ coefficients
    return EigenResult(
        eigenvalues=torch.as_tensor(theta[wanted].copy(), dtype=torch.float64),
        eigenvectors=eigenvectors,
        num_matvecs=op.num_matvecs - matvecs_before,
        converged=converged,
        residuals=torch.as_tensor(residuals.copy(), dtype=torch.float64),
    )


def power_iteration(operator: LinearOperator | Tensor | Callable[[Tensor], Tensor], tol: float = 1e-4,
                    max_iter: int = 1000, v0: Tensor | None = None, seed: int = 0,
                    size: int | None = None) -> EigenResult:
    """The eigenvalue of largest magnitude by power iteration, stopping on the same relative
    residual ``||A v - theta v|| <= tol * |theta|`` as :func:`lanczos` (the baseline it is compared to).
    """
    op = as_operator(operator, size)
    v = _start_vector(op.size, v0, seed, torch.float64, op.device)
    matvecs_before = op.num_matvecs
    w = op.matvec(v)
    converged = False
    for _ in range(max_iter):
        theta = float(v @ w)
        residual = float(torch.linalg.vector_norm(w - theta * v))
        if residual <= tol * abs(theta):
            converged = True
            break
        v = w / torch.linalg.vector_norm(w)
        w = op.matvec(v)
    theta = float(v @ w)
    residual = float(torch.linalg.vector_norm(w - theta * v))
    return EigenResult(torch.tensor([theta], dtype=torch.float64), v.reshape(-1, 1),
                       op.num_matvecs - matvecs_before, converged, torch.tensor([residual]))
