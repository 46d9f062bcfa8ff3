"""Datasets: in-memory supervised data for full-batch training."""

from phasescope.data.registry import DataConfig, load_supervised_data
from phasescope.data.regression import (
    SparseRegressionConfig,
    TeacherNetwork,
    TeacherStudentConfig,
    load_sparse_regression_data,
    load_teacher_student_data,
    sparse_beta_star,
    teacher_network,
)
from phasescope.data.supervised import (
    LOSS_NAMES,
    DigitsConfig,
    SupervisedData,
    check_loss,
    encode_targets,
    load_digits_data,
)
from phasescope.data.vision import (
    CIFAR10Config,
    ImageSplits,
    MNISTConfig,
    load_cifar10_data,
    load_mnist_data,
    read_cifar10_batch,
    read_cifar10_binary,
    read_idx,
    read_mnist,
)

__all__ = [
    "LOSS_NAMES",
    "CIFAR10Config",
    "DataConfig",
    "DigitsConfig",
    "ImageSplits",
    "MNISTConfig",
    "SparseRegressionConfig",
    "SupervisedData",
    "TeacherNetwork",
    "TeacherStudentConfig",
    "check_loss",
    "encode_targets",
    "load_cifar10_data",
    "load_digits_data",
    "load_mnist_data",
    "load_sparse_regression_data",
    "load_supervised_data",
    "load_teacher_student_data",
    "read_cifar10_batch",
    "read_cifar10_binary",
    "read_idx",
    "read_mnist",
    "sparse_beta_star",
    "teacher_network",
]
