"""Small supervised datasets held in memory, for full-batch training and curvature."""

from __future__ import annotations

from dataclasses import dataclass, replace
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
        beta_star: (dim,) the true linear predictor of a linear-regression task, else None; with
            isotropic Gaussian inputs the generalization error of beta is ``||beta - beta_star||^2 +
            noise_std^2``.
        noise_std: the standard deviation of the label noise of a synthetic task (0 for real data).
    """

    train_inputs: Tensor
    train_targets: Tensor
    test_inputs: Tensor
    test_targets: Tensor
    num_outputs: int
    beta_star: Tensor | None = None
    noise_std: float = 0.0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_inputs.shape[1:])

    def to(self, device: torch.device | str) -> SupervisedData:
        return replace(self, train_inputs=self.train_inputs.to(device), train_targets=self.train_targets.to(device),
                       test_inputs=self.test_inputs.to(device), test_targets=self.test_targets.to(device),
                       beta_star=None if self.beta_star is None else self.beta_star.to(device))


class DigitsConfig(StrictModel):
    """scikit-learn's 8x8 digits (1797 images, shipped with scikit-learn: works offline)."""

    name: Literal["digits"] = "digits"
    train_size: int | None = Field(None, ge=1)  # None: every example not in the test split
    test_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int = 0  # the shuffle before the split


LOSS_NAMES = ("mse", "cross_entropy")


def check_loss(loss: str, dataset: str, allowed: tuple[str, ...] = LOSS_NAMES) -> None:
    """Raise a one-line error unless ``dataset`` can be trained with ``loss``."""
    if loss not in allowed:
        raise PhasescopeError(f"loss {loss!r} does not fit the {dataset} data; expected one of "
                              f"{', '.join(repr(name) for name in allowed)}")


def encode_targets(labels: Tensor, num_classes: int, loss: str) -> Tensor:
    """One-hot float targets for MSE, integer labels for cross-entropy."""
    return F.one_hot(labels, num_classes).float() if loss == "mse" else labels


def load_digits_data(config: DigitsConfig, loss: str) -> SupervisedData:
    """Digits scaled to [0, 1], shuffled with ``split_seed`` and split into train and test."""
    check_loss(loss, "digits")
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
