"""Synthetic regression data: sparse linear regression, teacher-student, and the dataset registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phasescope.data import (
    DataConfig,
    DigitsConfig,
    SparseRegressionConfig,
    TeacherStudentConfig,
    load_sparse_regression_data,
    load_supervised_data,
    load_teacher_student_data,
    sparse_beta_star,
    teacher_network,
)
from phasescope.errors import PhasescopeError
from phasescope.run.config import StrictModel, validate_config


class Run(StrictModel):
    data: DataConfig


def exact_linear_targets(inputs: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """<beta, x> computed in float64 and rounded once to float32, as (n, 1)."""
    return (inputs.double() @ beta.double()).float().unsqueeze(1)


def test_sparse_regression_shapes_and_truth():
    config = SparseRegressionConfig(n_train=15, n_test=40, dim=30, sparsity=4, beta_scale=0.5)
    data = load_sparse_regression_data(config, "mse")
    assert data.train_inputs.shape == (15, 30) and data.train_targets.shape == (15, 1)
    assert data.test_inputs.shape == (40, 30) and data.test_targets.shape == (40, 1)
    assert {t.dtype for t in (data.train_inputs, data.train_targets, data.test_inputs, data.test_targets)} == {
        torch.float32}
    assert data.num_outputs == 1 and data.noise_std == 0.0 and data.input_shape == (30,)
    assert data.beta_star.shape == (30,)
    nonzero = data.beta_star[data.beta_star != 0]
    assert len(nonzero) == 4 and torch.equal(nonzero, torch.full((4,), 0.5))
    # without noise the targets are exactly the linear function of the inputs
    assert torch.equal(data.train_targets, exact_linear_targets(data.train_inputs, data.beta_star))
    assert torch.equal(data.test_targets, exact_linear_targets(data.test_inputs, data.beta_star))


def test_sparse_regression_random_signs():
    beta_star = sparse_beta_star(SparseRegressionConfig(dim=50, sparsity=20, beta_scale=2.0, positive=False))
    nonzero = beta_star[beta_star != 0]
    assert len(nonzero) == 20 and torch.equal(nonzero.abs(), torch.full((20,), 2.0))
    assert (nonzero > 0).any() and (nonzero < 0).any()


def test_sparse_regression_is_seeded_and_nested():
    data = load_sparse_regression_data(SparseRegressionConfig(n_train=20, seed=4), "mse")
    again = load_sparse_regression_data(SparseRegressionConfig(n_train=20, seed=4), "mse")
    fewer = load_sparse_regression_data(SparseRegressionConfig(n_train=8, seed=4, noise=0.3), "mse")
    other = load_sparse_regression_data(SparseRegressionConfig(n_train=20, seed=5), "mse")
    for name in ("train_inputs", "train_targets", "test_inputs", "test_targets", "beta_star"):
        assert torch.equal(getattr(data, name), getattr(again, name))
    # truth and test inputs do not depend on n_train or noise; smaller training sets are prefixes
    assert torch.equal(fewer.beta_star, data.beta_star) and torch.equal(fewer.test_inputs, data.test_inputs)
    assert torch.equal(fewer.train_inputs, data.train_inputs[:8])
    assert not torch.equal(other.train_inputs, data.train_inputs)
    assert not torch.equal(other.beta_star, data.beta_star)


def test_sparse_regression_noise_is_one_fixed_vector_scaled():
    def residual(noise):
        data = load_sparse_regression_data(SparseRegressionConfig(n_test=4000, noise=noise, seed=1), "mse")
        assert data.noise_std == noise
        return (data.test_targets - exact_linear_targets(data.test_inputs, data.beta_star)).double()

    small, large = residual(0.25), residual(1.0)
    np.testing.assert_allclose((4 * small).numpy(), large.numpy(), atol=1e-5)
    assert large.std().item() == pytest.approx(1.0, rel=0.05)
    assert large.mean().item() == pytest.approx(0.0, abs=0.06)


def test_sparse_regression_test_loss_is_the_generalization_error():
    """Isotropic inputs: E (<beta, x> - y)^2 = ||beta - beta*||^2 + noise^2, estimated on a large test set."""
    config = SparseRegressionConfig(n_train=5, n_test=20000, dim=10, sparsity=3, noise=0.5, seed=2)
    data = load_sparse_regression_data(config, "mse")
    beta = torch.randn(10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    test_error = ((data.test_inputs.double() @ beta - data.test_targets.double()[:, 0]) ** 2).mean().item()
    expected = ((beta - data.beta_star.double()) ** 2).sum().item() + 0.5**2
    assert test_error == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_teacher_student_targets_equal_an_independent_recomputation(activation):
    config = TeacherStudentConfig(n_train=30, n_test=12, dim=7, teacher_width=5, activation=activation, outputs=3)
    data = load_teacher_student_data(config, "mse")
    teacher = teacher_network(config)
    assert teacher.hidden.shape == (5, 7) and teacher.readout.shape == (3, 5)
    assert data.train_targets.shape == (30, 3) and data.test_targets.shape == (12, 3) and data.num_outputs == 3
    hidden, readout = teacher.hidden.numpy().astype(np.float64), teacher.readout.numpy().astype(np.float64)
    act = np.tanh if activation == "tanh" else (lambda z: np.maximum(z, 0.0))
    for inputs, targets in ((data.train_inputs, data.train_targets), (data.test_inputs, data.test_targets)):
        expected = act(inputs.numpy().astype(np.float64) @ hidden.T) @ readout.T
        np.testing.assert_array_equal(targets.numpy(), expected.astype(np.float32))
    assert data.beta_star is None


def test_teacher_student_weights_scale_and_noise():
    teacher = teacher_network(TeacherStudentConfig(dim=400, teacher_width=300, seed=3))
    assert teacher.hidden.std().item() == pytest.approx(400**-0.5, rel=0.02)
    assert teacher.readout.std().item() == pytest.approx(300**-0.5, rel=0.2)
    assert torch.equal(teacher.hidden, teacher_network(TeacherStudentConfig(dim=400, teacher_width=300, seed=3)).hidden)
    clean = load_teacher_student_data(TeacherStudentConfig(n_test=3000, seed=3), "mse")
    noisy = load_teacher_student_data(TeacherStudentConfig(n_test=3000, seed=3, noise=0.5), "mse")
    assert torch.equal(clean.test_inputs, noisy.test_inputs) and noisy.noise_std == 0.5
    assert (noisy.test_targets - clean.test_targets).std().item() == pytest.approx(0.5, rel=0.05)


def test_supervised_data_to_keeps_the_truth():
    data = load_sparse_regression_data(SparseRegressionConfig(noise=0.1), "mse").to("cpu")
    assert data.beta_star is not None and data.noise_std == 0.1


def test_regression_rejects_classification_losses():
    with pytest.raises(PhasescopeError, match="loss 'cross_entropy' does not fit the sparse regression data; "
                                              "expected one of 'mse'"):
        load_sparse_regression_data(SparseRegressionConfig(), "cross_entropy")
    with pytest.raises(PhasescopeError, match="teacher-student"):
        load_teacher_student_data(TeacherStudentConfig(), "cross_entropy")


@pytest.mark.parametrize(("fields", "match"), [
    ({"name": "sparse_regression", "dim": 5, "sparsity": 7}, "sparsity \\(7\\) exceeds dim \\(5\\)"),
    ({"name": "sparse_regression", "n_train": 0}, "n_train: Input should be greater than or equal to 1 \\(got 0\\)"),
    ({"name": "sparse_regression", "noise": -0.1}, "noise: Input should be greater than or equal to 0"),
    ({"name": "sparse_regression", "beta_scale": 0}, "beta_scale: Input should be greater than 0"),
    ({"name": "sparse_regression", "sparsty": 3}, "sparsty: unknown field"),
    ({"name": "teacher_student", "activation": "gelu"}, "activation: Input should be 'tanh' or 'relu' \\(got 'gelu'"),
    ({"name": "teacher_student", "outputs": 0}, "outputs: Input should be greater than or equal to 1"),
    ({"name": "teacher_student", "teacher_width": -2}, "teacher_width: Input should be greater than or equal to 1"),
    ({"name": "regression"}, "Input tag 'regression' found using 'name' does not match any of the expected tags"),
])
def test_config_validation_errors(fields, match):
    with pytest.raises(PhasescopeError, match=match) as error:
        validate_config({"data": fields}, Run)
    assert "\n" not in str(error.value)


def test_registry_dispatches_on_the_config_type():
    config = validate_config({"data": {"name": "sparse_regression", "n_train": 6, "dim": 9, "sparsity": 2}}, Run).data
    assert isinstance(config, SparseRegressionConfig)
    data = load_supervised_data(config, "mse")
    assert data.train_inputs.shape == (6, 9) and int((data.beta_star != 0).sum()) == 2
    teacher = validate_config({"data": {"name": "teacher_student", "outputs": 2, "n_train": 4}}, Run).data
    assert load_supervised_data(teacher, "mse").train_targets.shape == (4, 2)
    digits = load_supervised_data(DigitsConfig(train_size=50), "cross_entropy")
    assert digits.train_inputs.shape == (50, 64) and digits.train_targets.dtype == torch.int64
    with pytest.raises(PhasescopeError, match="unknown data config Run"):
        load_supervised_data(Run(data=DigitsConfig()), "mse")
