"""A small symmetric linear-operator interface, so that the same eigen- and trace solvers run on a
dense test matrix and on a matrix-free Hessian-vector product."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from phasescope.errors import PhasescopeError


class LinearOperator:
    """A symmetric n x n operator acting on flat vectors.

    Subclasses implement ``_matvec`` on a vector of shape (n,) in ``self.dtype`` on ``self.device``;
    ``matvec`` converts dtypes and devices around it and counts calls in ``num_matvecs``.
    """

    size: int
    dtype: torch.dtype
    device: torch.device

    def __init__(self, size: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.size = int(size)
        self.dtype = dtype
        self.device = torch.device(device)
        self.num_matvecs = 0

    def _matvec(self, vector: Tensor) -> Tensor:
        raise NotImplementedError

    def matvec(self, vector: Tensor) -> Tensor:
        """Apply the operator to ``vector`` (n,); the result has the input's dtype and device."""
        if vector.shape != (self.size,):
            raise PhasescopeError(f"operator expects a vector of shape ({self.size},), got {tuple(vector.shape)}")
        out = self._matvec(vector.to(device=self.device, dtype=self.dtype))
        self.num_matvecs += 1
        return out.to(device=vector.device, dtype=vector.dtype)

    def matmat(self, matrix: Tensor) -> Tensor:
        """Apply the operator to each column of ``matrix`` (n, m)."""
        return torch.stack([self.matvec(column) for column in matrix.T], dim=1)

    def __matmul__(self, other: Tensor) -> Tensor:
        return self.matvec(other) if other.ndim == 1 else self.matmat(other)

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` in float64, for ``eigsh`` and friends."""
        from scipy.sparse.linalg import LinearOperator as ScipyOperator

        def scipy_matvec(x: np.ndarray) -> np.ndarray:
            vector = torch.as_tensor(np.ascontiguousarray(x).reshape(-1), dtype=torch.float64)
            return self.matvec(vector).cpu().numpy()

        return ScipyOperator((self.size, self.size), matvec=scipy_matvec, dtype=np.float64)


class DenseOperator(LinearOperator):
    """A dense symmetric matrix as an operator (tests and small problems)."""

    def __init__(self, matrix: Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise PhasescopeError(f"a dense operator needs a square matrix, got shape {tuple(matrix.shape)}")
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matvec(self, vector: Tensor) -> Tensor:
        return self.matrix @ vector


class CallableOperator(LinearOperator):
    """Wraps a function ``v -> A v`` on flat vectors of length ``size``."""

    def __init__(self, function: Callable[[Tensor], Tensor], size: int,
                 dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> None:
        super().__init__(size, dtype, device)
        self.function = function

    def _matvec(self, vector: Tensor) -> Tensor:
        return self.function(vector)


class ScaledOperator(LinearOperator):
    """``D A D`` for a diagonal ``D`` given as a vector: the symmetric form of a preconditioned operator.

    With ``D = P^{-1/2}`` its eigenvalues are those of ``P^{-1} A``.
    """

    def __init__(self, operator: LinearOperator, diagonal: Tensor) -> None:
        if diagonal.shape != (operator.size,):
            raise PhasescopeError(
                f"diagonal scaling must have shape ({operator.size},), got {tuple(diagonal.shape)}")
        super().__init__(operator.size, operator.dtype, operator.device)
        self.operator = operator
        self.diagonal = diagonal.to(device=operator.device, dtype=operator.dtype)

    def _matvec(self, vector: Tensor) -> Tensor:
        return self.diagonal * self.operator.matvec(self.diagonal * vector)


def as_operator(operator: LinearOperator | Tensor | Callable[[Tensor], Tensor], size: int | None = None
                ) -> LinearOperator:
    """Accept an operator, a dense square matrix, or a matvec callable with its ``size``."""
    if isinstance(operator, LinearOperator):
        return operator
    if isinstance(operator, Tensor):
        return DenseOperator(operator)
    if callable(operator):
        if size is None:
            raise PhasescopeError("a matvec callable needs its vector length: pass size=n")
        return CallableOperator(operator, size)
    raise PhasescopeError(
        f"expected a LinearOperator, a square tensor or a matvec callable, got {type(operator).__name__}")
