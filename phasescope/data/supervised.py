"""Small supervised datasets held in memory, for full-batch training and curvature."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from phasescope.errors import PhasescopeError
from phasescope.run.config import StrictModel


@dataclass
class SupervisedData:
    """Train and test tensors; targets are encoded for the loss (one-hot floats for MSE, labels for CE).

    Attributes:
        train_inputs: (n_train, *input_shape) float32.
        train_targets: (n_train, num_outputs) float32 or (n_train,) int64.
        test_inputs, test_targets: the same for the test split.
        num_outputs: the model's output width.
    """

    train_inputs: Tensor
    train_targets: Tensor
    test_inputs: Tensor
    test_targets: Tensor
    num_outputs: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_inputs.shape[1:])

    def to(self, device: torch.device | str) -> SupervisedData:
        return SupervisedData(self.train_inputs.to(device), self.train_targets.to(device),
                              self.test_inputs.to(device), self.test_targets.to(device), self.num_outputs)


class DigitsConfig(StrictModel):
    """scikit-learn's 8x8 digits (1797 images, shipped with scikit-learn: works offline)."""

    name: Literal["digits"] = "digits"
    train_size: int | None = Field(None, ge=1)  # None: every example not in the test split
    test_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int = 0  # the shuffle before the split


def encode_targets(labels: Tensor, num_classes: int, loss: str) -> Tensor:
    """One-hot float targets for MSE, integer labels for cross-entropy."""
    return F.one_hot(labels, num_classes).float() if loss == "mse" else labels


def load_digits_data(config: DigitsConfig, loss: str) -> SupervisedData:
    """Digits scaled to [0, 1], shuffled with ``split_seed`` and split into train and test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    inputs = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # (1797, 64)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(config.split_seed))
    inputs, labels = inputs[order], labels[order]
    num_test = round(config.test_fraction * len(labels))
    available = len(labels) - num_test
    train_size = available if config.train_size is None else config.train_size
    if train_size > available:
        raise PhasescopeError(f"data.train_size is {train_size} but digits has only {available} examples "
                              f"after holding out {num_test} for test")
    targets = encode_targets(labels, 10, loss)
    return SupervisedData(inputs[num_test:num_test + train_size], targets[num_test:num_test + train_size],
                          inputs[:num_test], targets[:num_test], num_outputs=10)
