"""The sharpness of many parameter sets of one architecture at once: the members of a learning-rate grid.

A sweep holds its members stacked along a leading dimension (``phasescope.train.functional``). The
sum of the members' losses has a block-diagonal Hessian whose blocks are the members' Hessians, so
one double backward through the gradient of that sum (its graph built once, the forward a ``vmap``
over the stack) is every member's Hessian-vector product at once. Lanczos runs for all members in
lockstep: one batched product per step,
the recurrences and full reorthogonalization as batched tensor operations, and each member's own
stopping rule (the accuracy test and, from random starts, the hidden-eigenvalue certificate of
:func:`phasescope.curvature.lanczos`) checked on its own tridiagonal matrix. A member that has
converged stops (its row of the batch is zero from then on), so each one stops where a loop over
members would; the batched product still costs the whole stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor, nn
from torch.func import functional_call, vmap

from phasescope.curvature.stopping import AccuracyTest, HiddenEigenvalueCertificate
from phasescope.errors import PhasescopeError

Params = dict[str, Tensor]


@dataclass
class StackedSharpness:
    """The top Hessian eigenvalue of every member of a stack.

    Attributes:
        values: (M,) float64, the top eigenvalue of each member.
        eigenvectors: (M, n) float64 unit vectors (flattened in parameter order), for warm starts.
        num_hvps: (M,) the Hessian-vector products each member used.
        converged: (M,) whether each member's stopping rule was met within ``max_iter`` steps.
    """

    values: Tensor
    eigenvectors: Tensor
    num_hvps: Tensor
    converged: Tensor


def stacked_sharpness(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], params: Params,
                      data: tuple[Tensor, Tensor], tol: float = 1e-4, v0: Tensor | None = None,
                      max_iter: int = 200, seed: int = 0, failure_probability: float = 1e-3) -> StackedSharpness:
    """Top Hessian eigenvalue of ``loss_fn`` for each parameter set of the stack ``params``.

    Args:
        model: a module of the members' architecture (its own weights are not used; its buffers are).
        params: name -> (M, ...) stacked parameters, as ``model.named_parameters()`` names them.
        data: ``(inputs, targets)``, the full batch every member is evaluated on.
        tol: relative residual of each member's top Ritz pair (``criterion="residual"`` of ``lanczos``).
        v0: (M, n) warm starts (e.g. the previous ``eigenvectors``), trusted as ``sharpness`` trusts
            them; None: seeded random starts, certified against a hidden larger eigenvalue.
        max_iter: Lanczos steps at most per member.
    """
    if tol <= 0:
        raise PhasescopeError(f"tol must be positive, got {tol}")
    names = list(params)
    if not names:
        raise PhasescopeError("no parameters to take the sharpness of")
    members = next(iter(params.values())).shape[0]
    shapes = [params[name].shape[1:] for name in names]
    sizes = [int(np.prod(shape)) for shape in shapes]
    n = sum(sizes)
    inputs, targets = data
    buffers = dict(model.named_buffers())
    dtype, device = params[names[0]].dtype, params[names[0]].device

    def loss_of(own: Params) -> Tensor:
        return loss_fn(functional_call(model, {**buffers, **own}, (inputs,)), targets)

    leaves = [params[name].detach().clone().requires_grad_(True) for name in names]
    with torch.enable_grad():
        total = vmap(loss_of)(dict(zip(names, leaves))).sum()
        gradients = torch.autograd.grad(total, leaves, create_graph=True)

    def products(vectors: Tensor) -> Tensor:
        """H_i v_i for every member: (M, n) float64 in and out, the products in the model's dtype."""
        pieces = [piece.reshape(members, *shape) for piece, shape in zip(torch.split(vectors.to(dtype), sizes, dim=1),
                                                                         shapes)]
        result = torch.autograd.grad(gradients, leaves, grad_outputs=pieces, retain_graph=True)
        return torch.cat([r.reshape(members, -1) for r in result], dim=1).to(torch.float64)

    max_iter = min(int(max_iter), n)
    if v0 is not None:
        v0 = v0.detach().to(device=device, dtype=torch.float64)
        if v0.shape != (members, n):
            raise PhasescopeError(f"v0 must have shape ({members}, {n}), got {tuple(v0.shape)}")
        start = v0 / torch.linalg.vector_norm(v0, dim=1, keepdim=True)
    else:
        generator = torch.Generator().manual_seed(seed)
        start = torch.randn(members, n, generator=generator, dtype=torch.float64).to(device)
        start /= torch.linalg.vector_norm(start, dim=1, keepdim=True)
    accuracy = AccuracyTest(tol, "residual")
    certificates = [HiddenEigenvalueCertificate(n, failure_probability, required=v0 is None, warm_weight=0.0,
                                                when_exhausted=False) for _ in range(members)]
    min_iter = 2 if v0 is not None else 1
    basis = torch.zeros(members, min(max_iter, 32), n, dtype=torch.float64, device=device)  # grown on demand
    alphas: list[list[float]] = [[] for _ in range(members)]
    betas: list[list[float]] = [[] for _ in range(members)]
    values = torch.full((members,), float("nan"), dtype=torch.float64)
    vectors = torch.zeros(members, n, dtype=torch.float64, device=device)
    num_hvps = torch.zeros(members, dtype=torch.long)
    converged = torch.zeros(members, dtype=torch.bool)
    active = torch.ones(members, dtype=torch.bool)
    previous_beta = torch.zeros(members, dtype=torch.float64, device=device)
    q = start  # rows of members that have stopped are zero from their stop on
    for j in range(max_iter):
        if j == basis.shape[1]:
            basis = torch.cat([basis, torch.zeros_like(basis[:, : min(j, max_iter - j)])], dim=1)
        basis[:, j] = q
        w = products(q)
        num_hvps[active] += 1
        alpha = (q * w).sum(dim=1)
        w = w - alpha[:, None] * q
        if j > 0:
            w = w - previous_beta[:, None] * basis[:, j - 1]
        own_basis = basis[:, : j + 1]  # (M, j + 1, n), a view
        for _ in range(2):  # full reorthogonalization, twice is enough (Giraud et al. 2005)
            w = w - torch.einsum("mkn,mk->mn", own_basis, torch.einsum("mkn,mn->mk", own_basis, w))
        beta = torch.linalg.vector_norm(w, dim=1)
        for i in active.nonzero().flatten().tolist():
            alphas[i].append(float(alpha[i]))
            theta, ritz = eigh_tridiagonal(np.array(alphas[i]), np.array(betas[i][:j]))
            order = np.argsort(theta)[::-1]
            residuals = np.abs(float(beta[i]) * ritz[-1, :])
            scale = max(abs(theta[order[0]]), np.finfo(float).tiny)
            invariant = float(beta[i]) <= 1e-10 * max(np.abs(theta).max(), 1e-300)
            certificate = certificates[i]
            certificate.check(theta, order, alphas[i], betas[i], float(beta[i]), invariant, scale)
            done = invariant or (j + 1 >= min_iter and accuracy.met(residuals[order[:1]], np.array([scale]))
                                 and certificate.satisfied)
            if done or j + 1 == max_iter:
                values[i] = float(theta[order[0]])
                coefficients = torch.as_tensor(ritz[:, order[0]].copy(), dtype=torch.float64, device=device)
                vectors[i] = coefficients @ basis[i, : j + 1]
                converged[i] = bool(done)
                active[i] = False
            else:
                betas[i].append(float(beta[i]))
                certificate.extend(float(beta[i]))
        if not active.any():
            break
        running = active.to(device)
        previous_beta = torch.where(running, beta, 0.0)
        q = torch.where(running[:, None], w / torch.where(running, beta, 1.0)[:, None], 0.0)
    return StackedSharpness(values, vectors, num_hvps, converged)
