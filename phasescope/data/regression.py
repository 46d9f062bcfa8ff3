"""Synthetic regression: sparse linear regression and a teacher-student network, Gaussian inputs.

Sparse regression is the setting of the diagonal-linear-network theory in the reference study
(arXiv 2505.21423; Woodworth et al., COLT 2020): fewer examples than dimensions, so the training
loss has many zeros and the implicit bias of the optimizer decides which one is reached. With
isotropic inputs x ~ N(0, I) the generalization error of a linear predictor beta is exactly
``||beta - beta_star||^2 + noise^2``.

Each task draws from independent seeded streams (truth, train inputs, train noise, test inputs,
test noise): for one seed the truth and the test set do not depend on ``n_train``, smaller training
sets are prefixes of larger ones, and changing ``noise`` rescales one fixed noise vector.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from phasescope.data.supervised import SupervisedData, check_loss
from phasescope.run.config import StrictModel

_STREAMS = ("truth", "train_inputs", "train_noise", "test_inputs", "test_noise")


class SparseRegressionConfig(StrictModel):
    """y = <beta_star, x> + noise * eps with a k-sparse beta_star, x ~ N(0, I_dim), eps ~ N(0, 1)."""

    name: Literal["sparse_regression"] = "sparse_regression"
    n_train: int = Field(20, ge=1)  # below dim: underdetermined, many interpolators
    n_test: int = Field(1000, ge=1)
    dim: int = Field(100, ge=1)
    sparsity: int = Field(5, ge=1)  # k: the number of nonzero entries of beta_star (chosen at random)
    noise: float = Field(0.0, ge=0)  # std of the Gaussian label noise, on train and test targets
    beta_scale: float = Field(1.0, gt=0)  # the magnitude of every nonzero entry of beta_star
    positive: bool = True  # nonzeros all +beta_scale (reachable by beta = w*w); False: random signs
    seed: int = 0  # beta_star, inputs and noise

    @model_validator(mode="after")
    def _sparsity_within_dim(self) -> SparseRegressionConfig:
        if self.sparsity > self.dim:
            raise ValueError(f"sparsity ({self.sparsity}) exceeds dim ({self.dim}): beta_star has at most dim "
                             "nonzero entries")
        return self


class TeacherStudentConfig(StrictModel):
    """Targets from a fixed random one-hidden-layer teacher network, x ~ N(0, I_dim)."""

    name: Literal["teacher_student"] = "teacher_student"
    n_train: int = Field(256, ge=1)
    n_test: int = Field(1000, ge=1)
    dim: int = Field(20, ge=1)
    teacher_width: int = Field(8, ge=1)  # hidden units of the teacher
    activation: Literal["tanh", "relu"] = "tanh"
    outputs: int = Field(1, ge=1)  # target dimension
    noise: float = Field(0.0, ge=0)  # std of the Gaussian label noise, on train and test targets
    seed: int = 0  # teacher weights, inputs and noise


class TeacherNetwork(NamedTuple):
    """``f(x) = readout @ activation(hidden @ x)``, without biases.

    Attributes:
        hidden: (teacher_width, dim) float32, entries ~ N(0, 1/dim): pre-activations are O(1).
        readout: (outputs, teacher_width) float32, entries ~ N(0, 1/teacher_width): outputs are O(1).
        activation: "tanh" or "relu".
    """

    hidden: Tensor
    readout: Tensor
    activation: str

    def __call__(self, inputs: Tensor) -> Tensor:
        """Outputs (N, outputs) float64 for inputs (N, dim): float64 so that targets are rounded once."""
        preactivations = inputs.double() @ self.hidden.double().T  # (N, teacher_width)
        hidden = torch.tanh(preactivations) if self.activation == "tanh" else torch.relu(preactivations)
        return hidden @ self.readout.double().T


def sparse_beta_star(config: SparseRegressionConfig) -> Tensor:
    """The true predictor (dim,) float32: ``sparsity`` entries of magnitude ``beta_scale``, the rest 0."""
    rng = _streams(config.seed)["truth"]
    beta_star = np.zeros(config.dim, dtype=np.float32)
    support = rng.choice(config.dim, size=config.sparsity, replace=False)
    signs = np.ones(config.sparsity) if config.positive else rng.choice([-1.0, 1.0], size=config.sparsity)
    beta_star[support] = config.beta_scale * signs
    return torch.from_numpy(beta_star)


def teacher_network(config: TeacherStudentConfig) -> TeacherNetwork:
    """The teacher fixed by ``config.seed``."""
    rng = _streams(config.seed)["truth"]
    hidden = rng.standard_normal((config.teacher_width, config.dim)) / np.sqrt(config.dim)
    readout = rng.standard_normal((config.outputs, config.teacher_width)) / np.sqrt(config.teacher_width)
    return TeacherNetwork(torch.from_numpy(hidden.astype(np.float32)), torch.from_numpy(readout.astype(np.float32)),
                          config.activation)


def load_sparse_regression_data(config: SparseRegressionConfig, loss: str) -> SupervisedData:
    """Inputs (n, dim) and targets (n, 1) float32 for train and test, with ``beta_star`` and ``noise_std`` set.

    Without noise the targets are exactly ``X @ beta_star`` (computed in float64, rounded once).
    """
    check_loss(loss, "sparse regression", allowed=("mse",))
    beta_star = sparse_beta_star(config)
    data = _gaussian_task(config, lambda inputs: (inputs.double() @ beta_star.double()).unsqueeze(1), outputs=1)
    data.beta_star = beta_star
    return data


def load_teacher_student_data(config: TeacherStudentConfig, loss: str) -> SupervisedData:
    """Inputs (n, dim) and teacher outputs (n, outputs) float32 for train and test, plus label noise."""
    check_loss(loss, "teacher-student", allowed=("mse",))
    return _gaussian_task(config, teacher_network(config), outputs=config.outputs)


def _gaussian_task(config: SparseRegressionConfig | TeacherStudentConfig, target_fn: Callable[[Tensor], Tensor],
                   outputs: int) -> SupervisedData:
    """Train and test splits with x ~ N(0, I_dim) and targets ``target_fn(x) + noise * eps``.

    ``target_fn`` maps float32 inputs (n, dim) to float64 clean targets (n, outputs).
    """
    streams = _streams(config.seed)
    splits = []
    for split, size in (("train", config.n_train), ("test", config.n_test)):
        # float32 inputs first, so that targets are an exact function of the inputs the model sees
        inputs = torch.from_numpy(streams[f"{split}_inputs"].standard_normal((size, config.dim)).astype(np.float32))
        noise = torch.from_numpy(streams[f"{split}_noise"].standard_normal((size, outputs)))  # float64
        targets = (target_fn(inputs) + config.noise * noise).float()  # (size, outputs)
        splits += [inputs, targets]
    return SupervisedData(*splits, num_outputs=outputs, noise_std=config.noise)


def _streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators, one per thing drawn, all fixed by ``seed``."""
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children)}
