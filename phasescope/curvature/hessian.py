"""Matrix-free Hessian of a loss summed exactly over a whole dataset.

The Hessian-vector product uses ``torch.func`` forward-over-reverse (``jvp`` of ``grad``) and falls
back to double backward for models or losses that have no forward-mode rule (in torch 2.13,
``F.mse_loss`` fails under ``jvp(grad)`` with "ZeroTensors are immutable").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

from phasescope.curvature.operator import LinearOperator
from phasescope.errors import PhasescopeError

LossFn = Callable[[Tensor, Tensor], Tensor]
Batch = tuple[Tensor, Tensor]
HvpMethod = Literal["auto", "graph", "func", "double_backward"]


def select_parameters(model: nn.Module, params: Sequence[str] | None = None) -> dict[str, Tensor]:
    """The trainable parameters named by ``params``, in the model's order.

    Each entry of ``params`` is a parameter name (``"layers.0.weight"``) or a module prefix
    (``"layers.0"`` selects every parameter under it). ``None`` selects all trainable parameters.
    """
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if params is None:
        return named
    if isinstance(params, str):
        params = [params]
    selected: dict[str, Tensor] = {}
    for pattern in params:
        matches = [name for name in named if name == pattern or name.startswith(pattern + ".")]
        if not matches:
            raise PhasescopeError(
                f"no trainable parameter matches {pattern!r}; parameters are: {', '.join(named)}")
        selected.update({name: named[name] for name in matches})
    return {name: named[name] for name in named if name in selected}


def split_batches(data: Batch | Iterable[Batch], chunk_size: int | None) -> list[Batch]:
    """Turn a ``(inputs, targets)`` pair into chunks of ``chunk_size`` rows, or list an iterable of batches."""
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        inputs, targets = data
        if inputs.shape[0] != targets.shape[0]:
            raise PhasescopeError(
                f"inputs and targets must have the same number of rows, got {inputs.shape[0]} and "
                f"{targets.shape[0]}")
        n = inputs.shape[0]
        step = n if chunk_size is None else int(chunk_size)
        if step < 1:
            raise PhasescopeError(f"chunk_size must be a positive integer, got {chunk_size}")
        return [(inputs[i:i + step], targets[i:i + step]) for i in range(0, n, step)]
    batches = [tuple(batch) for batch in data]
    if not batches:
        raise PhasescopeError("the dataset is empty: at least one batch of (inputs, targets) is needed")
    for batch in batches:
        if len(batch) != 2:
            raise PhasescopeError(f"each batch must be a pair (inputs, targets), got {len(batch)} items")
    return batches  # type: ignore[return-value]


@contextmanager
def eval_mode(model: nn.Module):
    """Curvature is a property of the deterministic loss: dropout off while it is measured."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class HessianOperator(LinearOperator):
    """The Hessian of the dataset loss with respect to (a subset of) a model's parameters.

    The loss over the dataset is the example-weighted mean of the per-batch losses (for
    ``loss_reduction="mean"``, the default of torch losses) or their sum (``"sum"``), so the
    operator is the same whatever the chunking. Parameters are read from the model when the
    operator is built; later changes to the model are not seen.

    Args:
        model: any ``nn.Module``; it is called as ``model(inputs)``.
        loss_fn: ``loss_fn(outputs, targets)`` returning a scalar.
        data: a ``(inputs, targets)`` pair of tensors, or an iterable of such batches.
        params: parameter names or module prefixes to differentiate (default: all trainable).
        chunk_size: rows per chunk when ``data`` is a tensor pair (default: all at once).
        method: how a Hessian-vector product is computed:

            - ``"graph"``: the gradient's autograd graph is built once (``create_graph=True``) and
              every product is one backward pass through it (PyHessian's trick): the fastest, at
              the memory of that graph for every chunk, held while the operator lives;
            - ``"func"``: ``torch.func`` forward-over-reverse, recomputed per product: the leanest;
            - ``"double_backward"``: reverse-over-reverse, recomputed per product;
            - ``"auto"`` (default): ``"graph"`` when the data is a single chunk, else ``"func"``,
              falling back to ``"double_backward"`` where an op has no forward-mode rule.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Batch | Iterable[Batch],
                 params: Sequence[str] | None = None, chunk_size: int | None = None,
                 method: HvpMethod = "auto", loss_reduction: Literal["mean", "sum"] = "mean") -> None:
        if method not in ("auto", "graph", "func", "double_backward"):
            raise PhasescopeError(f"method must be 'auto', 'graph', 'func' or 'double_backward', got {method!r}")
        if loss_reduction not in ("mean", "sum"):
            raise PhasescopeError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        selected = select_parameters(model, params)
        if not selected:
            raise PhasescopeError("the model has no trainable parameters")
        first = next(iter(selected.values()))
        super().__init__(sum(p.numel() for p in selected.values()), first.dtype, first.device)
        self.model = model
        self.loss_fn = loss_fn
        self.method = method
        self.names = list(selected)
        self.shapes = [p.shape for p in selected.values()]
        self.params = {name: p.detach() for name, p in selected.items()}
        # Everything not differentiated (other parameters, buffers) enters functional_call as constants.
        self.constants = {name: t.detach() for name, t in
                          [*model.named_parameters(), *model.named_buffers()] if name not in selected}
        self.batches = [(x.to(self.device), y.to(self.device)) for x, y in split_batches(data, chunk_size)]
        total = sum(x.shape[0] for x, _ in self.batches)
        self.weights = [x.shape[0] / total if loss_reduction == "mean" else 1.0 for x, _ in self.batches]
        if self.method == "auto" and len(self.batches) == 1:
            self.method = "graph"
        self._graphs: list[tuple[list[Tensor], tuple[Tensor, ...]]] = []  # per chunk: leaves, gradient
        self._check_first_batch()

    # --- flat <-> dict -------------------------------------------------------------------------
    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """Split a flat vector (n,) into tensors shaped like the selected parameters."""
        pieces = torch.split(vector, [math.prod(s) for s in self.shapes])
        return {name: piece.view(shape) for name, piece, shape in zip(self.names, pieces, self.shapes)}

    def flatten(self, tensors: dict[str, Tensor] | Sequence[Tensor]) -> Tensor:
        values = tensors.values() if isinstance(tensors, dict) else tensors
        return torch.cat([t.reshape(-1) for t in values])

    def parameter_vector(self) -> Tensor:
        """The point at which the Hessian is taken, as a flat vector (n,)."""
        return self.flatten(self.params)

    # --- the loss and its derivatives --------------------------------------------------------
    def _batch_loss(self, params: dict[str, Tensor], inputs: Tensor, targets: Tensor) -> Tensor:
        outputs = functional_call(self.model, {**self.constants, **params}, (inputs,))
        return self.loss_fn(outputs, targets)

    def _check_first_batch(self) -> None:
        """One-line errors for data that does not fit; with the ``graph`` method this forward pass is the
        one the first batch's gradient graph is built from (no separate check)."""
        inputs, targets = self.batches[0]
        keep_graph = self.method == "graph"
        try:
            with eval_mode(self.model):
                if keep_graph:
                    leaves, loss = self._leaves_and_loss(inputs, targets)
                else:
                    with torch.no_grad():
                        loss = self._batch_loss(self.params, inputs, targets)
        except (RuntimeError, ValueError, IndexError) as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PhasescopeError(f"the data does not fit the model or the loss: {message}") from None
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise PhasescopeError(f"loss_fn must return a scalar, got shape {shape}")
        if not torch.isfinite(loss):
            raise PhasescopeError(f"the loss is {loss.item()} at this point: curvature of a non-finite loss "
                                  "is undefined (did training diverge?)")
        if keep_graph:
            with eval_mode(self.model), torch.enable_grad():
                self._graphs.append((leaves, torch.autograd.grad(loss, leaves, create_graph=True)))

    def loss(self) -> float:
        """The dataset loss at the operator's point."""
        with torch.no_grad(), eval_mode(self.model):
            return float(sum(w * self._batch_loss(self.params, x, y) for w, (x, y) in
                             zip(self.weights, self.batches)))

    def gradient(self) -> Tensor:
        """The gradient of the dataset loss, flat (n,)."""
        total = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        with eval_mode(self.model):
            for weight, (inputs, targets) in zip(self.weights, self.batches):
                total += weight * self.flatten(grad(self._batch_loss)(self.params, inputs, targets))
        return total

    def _hvp_func(self, tangent: dict[str, Tensor], inputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        gradient = grad(self._batch_loss)
        return jvp(lambda p: gradient(p, inputs, targets), (self.params,), (tangent,))[1]

    def _leaves_and_loss(self, inputs: Tensor, targets: Tensor) -> tuple[list[Tensor], Tensor]:
        """Fresh leaf parameters and the batch loss with its autograd graph."""
        leaves = [p.detach().requires_grad_(True) for p in self.params.values()]
        with torch.enable_grad():
            return leaves, self._batch_loss(dict(zip(self.names, leaves)), inputs, targets)

    def _gradient_graph(self, inputs: Tensor, targets: Tensor) -> tuple[list[Tensor], tuple[Tensor, ...]]:
        """Leaf parameters and the batch gradient with its autograd graph (``create_graph=True``)."""
        leaves, loss = self._leaves_and_loss(inputs, targets)
        with torch.enable_grad():
            return leaves, torch.autograd.grad(loss, leaves, create_graph=True)

    def _backward_through(self, leaves: list[Tensor], grads: tuple[Tensor, ...], tangent: dict[str, Tensor],
                          keep_graph: bool) -> dict[str, Tensor]:
        """Hv as the vector-Jacobian product of the gradient with the tangent."""
        connected = [(g, tangent[name]) for g, name in zip(grads, self.names) if g.requires_grad]
        if not connected:  # the gradient does not depend on the parameters: a zero Hessian
            return {name: torch.zeros_like(leaf) for name, leaf in zip(self.names, leaves)}
        hvps = torch.autograd.grad([g for g, _ in connected], leaves, grad_outputs=[t for _, t in connected],
                                   retain_graph=keep_graph, allow_unused=True)
        return {name: torch.zeros_like(leaf) if h is None else h for name, leaf, h in zip(self.names, leaves, hvps)}

    def _batch_hvp(self, tangent: dict[str, Tensor], index: int) -> dict[str, Tensor]:
        inputs, targets = self.batches[index]
        if self.method == "graph":  # built on the first product, then reused
            if len(self._graphs) <= index:
                self._graphs.append(self._gradient_graph(inputs, targets))
            return self._backward_through(*self._graphs[index], tangent, keep_graph=True)
        if self.method == "double_backward":
            return self._backward_through(*self._gradient_graph(inputs, targets), tangent, keep_graph=False)
        if self.method == "func":
            return self._hvp_func(tangent, inputs, targets)
        try:  # "auto" over several chunks: decide once, on the first product
            result = self._hvp_func(tangent, inputs, targets)
            self.method = "func"
        except (RuntimeError, NotImplementedError):
            self.method = "double_backward"
            result = self._batch_hvp(tangent, index)
        return result

    def _matvec(self, vector: Tensor) -> Tensor:
        tangent = self.unflatten(vector)
        if self.method == "graph" and len(self._graphs) == len(self.batches) == 1 and self.weights[0] == 1.0:
            # The common case, kept lean: one backward through the kept graph and no forward pass, so
            # neither the train/eval switch nor an accumulator is needed.
            return self.flatten(self._backward_through(*self._graphs[0], tangent, keep_graph=True))
        total = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        with eval_mode(self.model):
            for index, weight in enumerate(self.weights):
                total += weight * self.flatten(self._batch_hvp(tangent, index))
        return total

    def dense(self) -> Tensor:
        """The full Hessian (n, n), built column by column. For tests and tiny models only."""
        eye = torch.eye(self.size, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec(column) for column in eye], dim=1)
