"""Loss, gradient and outputs of a model for a stack of parameter sets at once.

A learning-rate grid is trained as one computation: the members' parameters are stacked along a
leading dimension (``torch.func.stack_module_state``) and ``vmap`` evaluates them together. The
same functions with ``vectorized=False`` loop over members, the reference path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from phasescope.models.diagonal import diagonal_predictor

Params = dict[str, Tensor]


def stack_parameters(models: list[nn.Module]) -> Params:
    """Parameters of ``models`` stacked along a new leading dimension (M, ...), detached."""
    params, _ = stack_module_state(models)
    return {name: p.detach().clone() for name, p in params.items()}


def member(params: Params, index: int) -> Params:
    """The parameters of one member of a stack."""
    return {name: p[index] for name, p in params.items()}


class StackedObjective:
    """Loss, gradient and outputs of ``model``'s architecture for a stack of parameters.

    The loss over the dataset is the example-weighted mean of chunk losses, as in
    ``HessianOperator``, so chunking changes memory, not the result.

    Args:
        model: a module whose architecture all members share (its own weights are not used).
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch mean.
        inputs, targets: the full training set.
        chunk_size: rows per chunk (default: all at once).
        vectorized: ``vmap`` over members (True) or a Python loop (False, the reference).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
                 targets: Tensor, chunk_size: int | None = None, vectorized: bool = True) -> None:
        self.model = model
        self.loss_fn = loss_fn
        step = inputs.shape[0] if chunk_size is None else chunk_size
        self.chunks = [(inputs[i:i + step], targets[i:i + step]) for i in range(0, inputs.shape[0], step)]
        self.weights = [x.shape[0] / inputs.shape[0] for x, _ in self.chunks]
        self.vectorized = vectorized
        self._buffers = {name: b for name, b in model.named_buffers()}

        def loss_and_outputs(params: Params, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            outputs = functional_call(self.model, {**self._buffers, **params}, (x,))
            return self.loss_fn(outputs, y), outputs

        self._single = grad_and_value(loss_and_outputs, has_aux=True)
        self._batched = vmap(self._single, in_dims=(0, None, None))
        self._forward_single = loss_and_outputs
        self._forward_batched = vmap(loss_and_outputs, in_dims=(0, None, None))

    def _per_chunk(self, function_batched, function_single, params: Params, x: Tensor, y: Tensor):
        if self.vectorized:
            return function_batched(params, x, y)
        size = next(iter(params.values())).shape[0]
        return _stack_results([function_single(member(params, i), x, y) for i in range(size)])

    def gradient(self, params: Params) -> tuple[Params, Tensor, Tensor]:
        """Gradients (M, ...), losses (M,) and outputs (M, N, ...) of every member on the whole dataset."""
        grads: Params | None = None
        losses = outputs = None
        for weight, (x, y) in zip(self.weights, self.chunks):
            chunk_grads, (chunk_loss, chunk_outputs) = self._per_chunk(self._batched, self._single, params, x, y)
            if grads is None:
                grads = {k: weight * g for k, g in chunk_grads.items()}
                losses, outputs = weight * chunk_loss, [chunk_outputs]
            else:
                for k, g in chunk_grads.items():
                    grads[k] += weight * g
                losses = losses + weight * chunk_loss
                outputs.append(chunk_outputs)
        return grads, losses, torch.cat(outputs, dim=1)

    @torch.no_grad()
    def evaluate(self, params: Params, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Losses (M,) and outputs (M, N, ...) on another dataset (the test set), in one chunk."""
        return self._per_chunk(self._forward_batched, self._forward_single, params, inputs, targets)


def _stack_results(results: list):
    """Stack a list of equally shaped nests of tuples, dicts and tensors along a new first dimension."""
    first = results[0]
    if isinstance(first, Tensor):
        return torch.stack(results)
    if isinstance(first, dict):
        return {key: _stack_results([r[key] for r in results]) for key in first}
    return tuple(_stack_results(list(parts)) for parts in zip(*results))


def stacked_accuracy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Accuracy (M,) of stacked outputs (M, N, C) for one-hot (N, C) or label (N,) targets; NaN for regression."""
    if outputs.shape[-1] < 2:
        return torch.full(outputs.shape[:1], float("nan"), device=outputs.device)
    labels = targets.argmax(-1) if targets.ndim == outputs.ndim - 1 else targets
    return (outputs.argmax(-1) == labels).double().mean(dim=1)


class DiagonalObjective:
    """Closed-form batched loss and gradient of diagonal linear networks under the MSE loss.

    For ``f(x) = <beta, x>`` and ``L = 0.5 * mean_i (f(x_i) - y_i)^2`` the gradient in beta is
    ``X^T r / n`` with residuals ``r``; the chain rule through ``beta(u, v)`` is elementwise. For a
    stack of M members this is two matrix products, with no autograd: the same numbers as
    :class:`StackedObjective` on a ``DiagonalLinearNetwork``, far faster for large grids.
    """

    def __init__(self, parameterization: str, inputs: Tensor, targets: Tensor) -> None:
        self.parameterization = parameterization
        self.inputs = inputs  # (n, d)
        self.targets = targets.reshape(-1)  # (n,)

    def beta(self, params: Params) -> Tensor:
        """The effective predictors (M, d)."""
        return diagonal_predictor(self.parameterization, params["u"], params.get("v"))

    def _losses(self, beta: Tensor, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        outputs = beta @ inputs.T  # (M, n)
        residuals = outputs - targets.reshape(1, -1)
        return 0.5 * residuals.pow(2).mean(dim=1), residuals, outputs.unsqueeze(-1)

    def gradient(self, params: Params) -> tuple[Params, Tensor, Tensor]:
        """Gradients (M, d), losses (M,) and outputs (M, n, 1)."""
        losses, residuals, outputs = self._losses(self.beta(params), self.inputs, self.targets)
        grad_beta = residuals @ self.inputs / self.inputs.shape[0]  # (M, d)
        u = params["u"]
        if self.parameterization == "ww":
            return {"u": 2 * u * grad_beta}, losses, outputs
        v = params["v"]
        if self.parameterization == "uu-vv":
            return {"u": 2 * u * grad_beta, "v": -2 * v * grad_beta}, losses, outputs
        return {"u": v * grad_beta, "v": u * grad_beta}, losses, outputs

    @torch.no_grad()
    def evaluate(self, params: Params, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        losses, _, outputs = self._losses(self.beta(params), inputs, targets)
        return losses, outputs
