"""The data split of a replayed step: which part of the training data each part of the update came from.

AdamW's update of step ``s`` is

    theta_{s+1} - theta_s = -lr wd theta_s  -  lr / (1 - beta1^s) * m_s / (sqrt(v_s / (1 - beta2^s)) + eps)

with ``m_s = beta1 m_{s-1} + (1 - beta1) c_s g_s``, ``c_s`` the clipping factor and ``g_s`` the mean
gradient of the batch's token losses. Given the step's preconditioner (``v_s`` and the scalars, read
back from the optimizer after the step), the update is linear in the momentum, and the momentum is a
sum over the gradients of past batches. Splitting each batch's gradient by which data its tokens
came from (``g_s = sum_k g_s^(k)``: the token losses of each language, or each document kind, in turn)
and carrying one momentum per part gives the update as an exact sum of

- ``weight_decay``: ``-lr wd theta_s``,
- ``before``: the momentum carried in from the steps before ``from_step`` (decayed by ``beta1`` each step),
- one part per data label, e.g. ``language=de`` or ``kind=glossary``,

up to float rounding (:attr:`ReplayStep.split_residual`). This is ExPLAIND's treatment of Adam
(arXiv 2505.20076): the preconditioner is the one training used, the momentum is followed exactly.
A split shares the training step's forward pass and costs one more backward pass per label present in
the batch but one per dimension (that label's gradient is the training gradient less the others').
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from phasescope.data.corpora import document_kind, document_kinds
from phasescope.data.mixture import Source
from phasescope.errors import PhasescopeError

DataDimension = Literal["language", "kind"]
DATA_DIMENSIONS: tuple[str, ...] = ("language", "kind")
WEIGHT_DECAY_PART, BEFORE_PART = "weight_decay", "before"
UNKNOWN = "unknown"  # the label of tokens whose source a stream state saved before sources were kept


def data_parts(corpus, dimension: str) -> list[str]:
    """The values a data dimension takes in a corpus: its languages, or its documents' kinds."""
    if dimension == "language":
        return list(corpus.languages)
    return list(document_kinds(corpus))


def check_part(corpus, dimension: str, value: str) -> None:
    """Refuse, in one line, a part of the data to leave out that the corpus does not have."""
    if dimension not in DATA_DIMENSIONS:
        raise PhasescopeError(f"leave_out: unknown data dimension {dimension!r}; expected one of "
                              f"{', '.join(DATA_DIMENSIONS)}")
    known = data_parts(corpus, dimension)
    if value not in known:
        raise PhasescopeError(f"leave_out: the run's data has no {dimension} {value!r}; it has "
                              f"{', '.join(known)}")


class DocumentKinds:
    """The kind of a source's document, cached (the controlled corpus generates a document to tell)."""

    def __init__(self, corpus) -> None:
        self.corpus = corpus
        self._kinds: dict[tuple[str, int], str] = {}

    def __call__(self, source: Source) -> str:
        if source.language is None:
            return UNKNOWN
        key = (source.language, source.index)
        if key not in self._kinds:
            self._kinds[key] = document_kind(self.corpus, source.language, source.index)
        return self._kinds[key]


class DataSplit:
    """Per-label gradients of each batch and one AdamW momentum per label (see the module docstring); the
    training step's :class:`~phasescope.train.step.StepObserver`."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.AdamW, named: dict[str, Tensor],
                 kinds: DocumentKinds, dimensions: tuple[str, ...], train) -> None:
        self.model, self.optimizer, self.named, self.kinds = model, optimizer, named, kinds
        self.dimensions, self.train = dimensions, train
        self.group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
        self.beta1 = float(optimizer.param_groups[0]["betas"][0])
        # the momentum carried in from before the replay, then one per label (zeros until it appears)
        self.before = {name: self._state(p, "exp_avg").clone() for name, p in named.items()}
        self.momenta: dict[str, dict[str, Tensor]] = {}

    def _state(self, parameter: Tensor, key: str) -> Tensor:
        state = self.optimizer.state.get(parameter, {})
        return state[key] if key in state else torch.zeros_like(parameter)

    def label_of(self, source: Source, dimension: str) -> str:
        if source.language is None:
            return f"{dimension}={UNKNOWN}"
        if dimension == "language":
            return f"language={source.language}"
        return f"kind={self.kinds(source)}"

    def token_labels(self, sources: list[Source], shape: torch.Size, dimension: str) -> tuple[list[str], Tensor]:
        """The labels present and each token's label code, shaped like the batch."""
        names: dict[str, int] = {}
        codes = []
        for source in sources:
            code = names.setdefault(self.label_of(source, dimension), len(names))
            codes.append(torch.full((source.tokens,), code, dtype=torch.long))
        return list(names), torch.cat(codes).view(shape)

    def kept_tokens(self, sources: list[Source], shape: torch.Size,
                    parts: Sequence[tuple[str, str]]) -> Tensor | None:
        """Token weights (``shape``) that leave out the tokens labelled ``dimension=value`` for each part;
        None when the batch predicts none of them (position 0 predicts nothing)."""
        kept = torch.ones(shape, dtype=torch.bool)
        for dimension, value in parts:
            names, codes = self.token_labels(sources, shape, dimension)
            label = f"{dimension}={value}"
            if label in names:
                kept &= codes != names.index(label)
        if bool(kept[:, 1:].all()):
            return None
        return kept.to(torch.float32)

    def start_step(self, batch: Tensor, sources: list[Source], micro_batches: int) -> None:
        """Label the step's tokens; per dimension the label with the most predicted tokens is the remainder,
        whose gradient is the training gradient less the others' (one backward pass fewer per dimension)."""
        self.rows = torch.arange(batch.shape[0]).chunk(micro_batches)
        self.micro_batches = micro_batches
        self.labelled = [self.token_labels(sources, batch.shape, dimension) for dimension in self.dimensions]
        self.remainders = []
        for names, codes in self.labelled:
            counts = torch.bincount(codes[:, 1:].flatten(), minlength=len(names))
            self.remainders.append(names[int(torch.argmax(counts))])
        self.label_gradients: dict[str, list[Tensor]] = {}

    def token_losses(self, micro_batch: int, losses: Tensor) -> None:
        """Per label but each dimension's remainder, the gradient of its tokens' share of the training loss.

        The training loss is the mean over micro-batches of each one's mean next-token loss; a token's
        share is its loss over (tokens predicted in its micro-batch x micro-batches), labelled by the
        document of the predicted token. The training step's own forward pass serves (its graph is kept
        for the training backward pass that follows)."""
        parameters = list(self.named.values())
        scaled = losses / (losses.numel() * self.micro_batches)
        for (names, codes), remainder in zip(self.labelled, self.remainders):
            targets = codes[self.rows[micro_batch]][:, 1:].flatten().to(losses.device)
            for code in targets.unique().tolist():
                if names[code] == remainder:
                    continue
                grads = torch.autograd.grad(scaled[targets == code].sum(), parameters, retain_graph=True,
                                            allow_unused=True)
                total = self.label_gradients.setdefault(names[code], [torch.zeros_like(p) for p in parameters])
                for accumulated, grad in zip(total, grads):
                    if grad is not None:
                        accumulated += grad

    def gradients(self, parameters: list[Tensor]) -> None:
        """Each dimension's remainder: the training gradient (before clipping) less its other labels'."""
        named = list(self.named.values())
        for (names, _), remainder in zip(self.labelled, self.remainders):
            total = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in named]
            for label in names:
                if label != remainder and label in self.label_gradients:
                    for value, grad in zip(total, self.label_gradients[label]):
                        value -= grad
            self.label_gradients[remainder] = total

    def update_parts(self, gradients: dict[str, list[Tensor]], before: dict[str, Tensor], lr: float,
                     clip: float) -> dict[str, dict[str, Tensor]]:
        """Advance the per-label momenta by this step's gradients and split its update over them."""
        beta1 = self.beta1
        for label in gradients:
            self.momenta.setdefault(label, {name: torch.zeros_like(p) for name, p in self.named.items()})
        for label, momentum in self.momenta.items():
            grads = gradients.get(label)
            for index, value in enumerate(momentum.values()):
                value.mul_(beta1)
                if grads is not None:
                    value.add_(grads[index], alpha=(1 - beta1) * clip)
        for value in self.before.values():
            value.mul_(beta1)
        parts: dict[str, dict[str, Tensor]] = {WEIGHT_DECAY_PART: {}, BEFORE_PART: {}}
        parts.update({label: {} for label in self.momenta})
        for name, parameter in self.named.items():
            group = self.group_of[id(parameter)]
            scale = self._scale(parameter, group, lr)
            parts[WEIGHT_DECAY_PART][name] = before[name] * (-lr * float(group["weight_decay"]))
            parts[BEFORE_PART][name] = scale * self.before[name]
            for label, momentum in self.momenta.items():
                parts[label][name] = scale * momentum[name]
        return parts

    def _scale(self, parameter: Tensor, group: dict, lr: float) -> Tensor:
        """``-lr / (1 - beta1^t) / (sqrt(v_t / (1 - beta2^t)) + eps)``: what AdamW multiplied the momentum by."""
        beta1, beta2 = (float(beta) for beta in group["betas"])
        state = self.optimizer.state[parameter]
        t = float(state["step"])
        denominator = state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2 ** t) + float(group["eps"])
        return (-lr / (1 - beta1 ** t)) / denominator
