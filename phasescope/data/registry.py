"""Every dataset config in one tagged union, and one loader that dispatches on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from phasescope.data.regression import (
    SparseRegressionConfig,
    TeacherStudentConfig,
    load_sparse_regression_data,
    load_teacher_student_data,
)
from phasescope.data.supervised import DigitsConfig, SupervisedData, load_digits_data
from phasescope.data.vision import CIFAR10Config, MNISTConfig, load_cifar10_data, load_mnist_data
from phasescope.errors import PhasescopeError

# A config's ``name`` field picks the dataset, e.g. ``data: {name: mnist, path: ~/data/mnist}``.
DataConfig = Annotated[
    DigitsConfig | MNISTConfig | CIFAR10Config | SparseRegressionConfig | TeacherStudentConfig,
    Field(discriminator="name"),
]

_LOADERS: dict[type, Callable[[Any, str], SupervisedData]] = {
    DigitsConfig: load_digits_data,
    MNISTConfig: load_mnist_data,
    CIFAR10Config: load_cifar10_data,
    SparseRegressionConfig: load_sparse_regression_data,
    TeacherStudentConfig: load_teacher_student_data,
}


def load_supervised_data(config: DigitsConfig | MNISTConfig | CIFAR10Config | SparseRegressionConfig
                         | TeacherStudentConfig, loss: str) -> SupervisedData:
    """The dataset ``config`` describes, with targets encoded for ``loss`` ("mse" or "cross_entropy")."""
    loader = _LOADERS.get(type(config))
    if loader is None:
        known = ", ".join(cls.__name__ for cls in _LOADERS)
        raise PhasescopeError(f"unknown data config {type(config).__name__}; expected one of {known}")
    return loader(config, loss)
