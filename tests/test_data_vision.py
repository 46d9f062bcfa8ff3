"""MNIST (IDX) and CIFAR-10 (binary) readers and loaders, on tiny files written here from known arrays."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from phasescope.data import (
    CIFAR10Config,
    DataConfig,
    MNISTConfig,
    load_cifar10_data,
    load_mnist_data,
    load_supervised_data,
    read_cifar10_batch,
    read_cifar10_binary,
    read_idx,
    read_mnist,
)
from phasescope.errors import PhasescopeError
from phasescope.run.config import StrictModel, validate_config

IDX_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
                  np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
MNIST_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte"]
CIFAR_TRAIN_SIZES = [7, 5, 6, 8, 4]  # 30 training records, unevenly split so the order of batches matters


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding: 0x0000, type code, ndim, big-endian uint32 dims, big-endian elements."""
    header = bytes([0, 0, IDX_TYPE_CODES[array.dtype], array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    data = idx_bytes(array)
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def cifar_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary records: one label byte, then the 3072 pixel bytes in channel, row, column order."""
    return b"".join(bytes([int(label)]) + image.tobytes() for image, label in zip(images, labels))


def random_images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


@pytest.fixture
def mnist(tmp_path) -> dict:
    """A tiny MNIST folder (30 train, 10 test images); the image files gzipped, the label files not."""
    rng = np.random.default_rng(0)
    arrays = {"train_images": random_images(rng, 30, (28, 28)), "train_labels": rng.integers(0, 10, 30, np.uint8),
              "test_images": random_images(rng, 10, (28, 28)), "test_labels": rng.integers(0, 10, 10, np.uint8)}
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, array in zip(MNIST_NAMES, arrays.values()):
        write_idx(folder / name, array, compress="images" in name)
    return {"folder": folder, **arrays}


@pytest.fixture
def cifar(tmp_path) -> dict:
    """A tiny cifar-10-batches-bin folder: 30 training records over five batch files, 10 test records."""
    rng = np.random.default_rng(1)
    arrays = {"train_images": random_images(rng, 30, (3, 32, 32)), "train_labels": rng.integers(0, 10, 30),
              "test_images": random_images(rng, 10, (3, 32, 32)), "test_labels": rng.integers(0, 10, 10)}
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    bounds = np.cumsum([0, *CIFAR_TRAIN_SIZES])
    for index, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:]), start=1):
        records = cifar_bytes(arrays["train_images"][start:stop], arrays["train_labels"][start:stop])
        (folder / f"data_batch_{index}.bin").write_bytes(records)
    (folder / "test_batch.bin").write_bytes(cifar_bytes(arrays["test_images"], arrays["test_labels"]))
    return {"folder": folder, **arrays}


def raise_one_line(match: str, function, *args) -> str:
    """Call ``function`` expecting a PhasescopeError whose one-line message matches ``match``."""
    with pytest.raises(PhasescopeError, match=match) as error:
        function(*args)
    message = str(error.value)
    assert "\n" not in message
    return message


def source_indices(returned: torch.Tensor, source: np.ndarray) -> list[int]:
    """For each returned image (unstandardized floats in [0, 1]), the index of the equal source image."""
    pixels = (returned * 255).round().to(torch.uint8).numpy()
    flat = source.reshape(len(source), -1)
    indices = []
    for image in pixels.reshape(len(pixels), -1):
        matches = np.flatnonzero((flat == image).all(axis=1))
        assert len(matches) == 1
        indices.append(int(matches[0]))
    return indices


# --- IDX ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype", list(IDX_TYPE_CODES), ids=lambda dtype: dtype.name)
def test_read_idx_returns_the_written_array(tmp_path, dtype, compress):
    rng = np.random.default_rng(2)
    array = (rng.standard_normal((4, 3, 5)) * 100).astype(dtype)
    read = read_idx(write_idx(tmp_path / "array-idx3", array, compress))
    np.testing.assert_array_equal(read, array)
    assert read.dtype == dtype and read.dtype.isnative and read.flags.writeable


def test_read_idx_one_dimensional_labels(tmp_path):
    labels = np.array([5, 0, 4, 1, 9], np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "labels-idx1", labels, compress=False)), labels)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "not-idx"
    path.write_bytes(b"\x01\x02\x03\x04" + bytes(16))
    message = raise_one_line("not an IDX file", read_idx, path)
    assert str(path) in message and "0x01020304" in message


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_truncated(tmp_path, compress):
    data = idx_bytes(np.zeros((3, 4, 4), np.uint8))[:-5]
    path = tmp_path / "short-idx3"
    path.write_bytes(gzip.compress(data) if compress else data)
    message = raise_one_line("truncated IDX file", read_idx, path)
    assert str(path) in message and f"expected {len(data) + 5} bytes" in message


def test_read_idx_truncated_header_and_gzip_stream(tmp_path):
    header_only = tmp_path / "header-idx3"
    header_only.write_bytes(bytes([0, 0, 0x08, 3]) + bytes(4))  # three dimensions announced, one given
    raise_one_line("truncated IDX file .*16-byte header", read_idx, header_only)
    broken_gzip = tmp_path / "broken-idx3.gz"
    broken_gzip.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 4), np.uint8)))[:-10])
    assert str(broken_gzip) in raise_one_line("corrupt or truncated gzip", read_idx, broken_gzip)
    raise_one_line("file not found", read_idx, tmp_path / "absent-idx3")


# --- MNIST -------------------------------------------------------------------------------------------------------


def test_read_mnist_returns_the_written_arrays(mnist):
    splits = read_mnist(mnist["folder"])
    np.testing.assert_array_equal(splits.train_images, mnist["train_images"][:, None])
    np.testing.assert_array_equal(splits.train_labels, mnist["train_labels"])
    np.testing.assert_array_equal(splits.test_images, mnist["test_images"][:, None])
    np.testing.assert_array_equal(splits.test_labels, mnist["test_labels"])
    assert splits.train_labels.dtype == np.int64


def test_mnist_subset_keeps_each_image_with_its_label(mnist):
    config = MNISTConfig(path=str(mnist["folder"]), subset=12, test_subset=4, seed=3, standardize=False)
    data = load_mnist_data(config, "cross_entropy")
    assert data.train_inputs.shape == (12, 1, 28, 28) and data.train_inputs.dtype == torch.float32
    assert data.test_inputs.shape == (4, 1, 28, 28) and data.num_outputs == 10
    assert data.train_targets.dtype == torch.int64
    train_indices = source_indices(data.train_inputs, mnist["train_images"])
    assert len(set(train_indices)) == 12 and train_indices != sorted(train_indices)  # distinct, shuffled
    np.testing.assert_array_equal(data.train_targets.numpy(), mnist["train_labels"][train_indices])
    test_indices = source_indices(data.test_inputs, mnist["test_images"])
    np.testing.assert_array_equal(data.test_targets.numpy(), mnist["test_labels"][test_indices])


def test_mnist_subsets_are_seeded_and_nested(mnist):
    def inputs(subset, seed):
        config = MNISTConfig(path=str(mnist["folder"]), subset=subset, seed=seed, standardize=False)
        return load_mnist_data(config, "mse").train_inputs

    assert torch.equal(inputs(12, 5), inputs(12, 5))
    assert torch.equal(inputs(5, 5), inputs(12, 5)[:5])
    assert not torch.equal(inputs(12, 5), inputs(12, 6))
    everything = inputs(None, 5)  # all images, in file order
    np.testing.assert_array_equal((everything[:, 0] * 255).round().to(torch.uint8).numpy(), mnist["train_images"])


def test_mnist_standardization_and_one_hot_targets(mnist):
    data = load_mnist_data(MNISTConfig(path=str(mnist["folder"]), subset=20, seed=1), "mse")
    assert abs(data.train_inputs.double().mean().item()) < 1e-6
    assert data.train_inputs.double().std(correction=0).item() == pytest.approx(1.0, abs=1e-5)
    # the test split uses the training subset's mean and std
    raw = load_mnist_data(MNISTConfig(path=str(mnist["folder"]), subset=20, seed=1, standardize=False), "mse")
    mean, std = raw.train_inputs.double().mean(), raw.train_inputs.double().std(correction=0)
    np.testing.assert_allclose(data.test_inputs.numpy(), ((raw.test_inputs.double() - mean) / std).numpy(),
                               rtol=1e-6, atol=1e-6)
    assert data.train_targets.shape == (20, 10) and data.train_targets.dtype == torch.float32
    assert torch.equal(data.train_targets.sum(1), torch.ones(20))
    indices = source_indices(raw.train_inputs, mnist["train_images"])
    np.testing.assert_array_equal(data.train_targets.argmax(1).numpy(), mnist["train_labels"][indices])


def test_mnist_through_the_registry(mnist):
    class Run(StrictModel):
        data: DataConfig

    config = validate_config({"data": {"name": "mnist", "path": str(mnist["folder"]), "subset": 7}}, Run).data
    assert isinstance(config, MNISTConfig)
    data = load_supervised_data(config, "cross_entropy")
    assert data.train_inputs.shape == (7, 1, 28, 28) and data.test_inputs.shape == (10, 1, 28, 28)


def test_mnist_folder_errors(mnist, tmp_path):
    absent = tmp_path / "nowhere"
    message = raise_one_line("MNIST folder not found", load_mnist_data, MNISTConfig(path=str(absent)), "mse")
    assert str(absent) in message and "train-images-idx3-ubyte" in message
    (mnist["folder"] / "t10k-images-idx3-ubyte.gz").unlink()
    (mnist["folder"] / "train-labels-idx1-ubyte").unlink()
    message = raise_one_line("missing train-labels-idx1-ubyte, t10k-images-idx3-ubyte \\(",
                             load_mnist_data, MNISTConfig(path=str(mnist["folder"])), "mse")
    assert all(name in message for name in MNIST_NAMES) and ".gz" in message


def test_mnist_subset_larger_than_the_data(mnist):
    folder = str(mnist["folder"])
    message = raise_one_line("data.subset 31 is larger than the 30 training images in",
                             load_mnist_data, MNISTConfig(path=folder, subset=31), "mse")
    assert folder in message
    raise_one_line("data.test_subset 11 is larger than the 10 test images",
                   load_mnist_data, MNISTConfig(path=folder, subset=None, test_subset=11), "mse")


def test_mnist_bad_contents(mnist):
    folder = mnist["folder"]
    labels_path = folder / "train-labels-idx1-ubyte"
    write_idx(labels_path, mnist["train_labels"][:29], compress=False)
    raise_one_line("has 30 images but .*train-labels-idx1-ubyte has 29 labels", read_mnist, folder)
    write_idx(labels_path, np.full(30, 10, np.uint8), compress=False)
    raise_one_line("train-labels-idx1-ubyte: expected labels 0 to 9, got 10 at position 0", read_mnist, folder)
    write_idx(labels_path, mnist["train_labels"], compress=False)
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((10, 784), np.uint8), compress=True)
    raise_one_line("expected uint8 images of shape \\(N, height, width\\), got uint8 of shape \\(10, 784\\)",
                   read_mnist, folder)
    raise_one_line("loss 'hinge' does not fit the MNIST data", load_mnist_data, MNISTConfig(path=str(folder)),
                   "hinge")


# --- CIFAR-10 ----------------------------------------------------------------------------------------------------


def test_read_cifar10_binary_returns_the_written_arrays(cifar):
    for folder in (cifar["folder"], cifar["folder"].parent):  # the batches folder, or the folder holding it
        splits = read_cifar10_binary(folder)
        np.testing.assert_array_equal(splits.train_images, cifar["train_images"])
        np.testing.assert_array_equal(splits.train_labels, cifar["train_labels"])
        np.testing.assert_array_equal(splits.test_images, cifar["test_images"])
        np.testing.assert_array_equal(splits.test_labels, cifar["test_labels"])
    images, labels = read_cifar10_batch(cifar["folder"] / "data_batch_2.bin")
    np.testing.assert_array_equal(images, cifar["train_images"][7:12])
    np.testing.assert_array_equal(labels, cifar["train_labels"][7:12])


def test_cifar10_subset_standardization_and_labels(cifar):
    folder = str(cifar["folder"])
    data = load_cifar10_data(CIFAR10Config(path=folder, subset=16, test_subset=6, seed=2), "mse")
    assert data.train_inputs.shape == (16, 3, 32, 32) and data.test_inputs.shape == (6, 3, 32, 32)
    per_channel = data.train_inputs.double().transpose(0, 1).reshape(3, -1)
    np.testing.assert_allclose(per_channel.mean(1).numpy(), np.zeros(3), atol=1e-6)
    np.testing.assert_allclose(per_channel.std(1, correction=0).numpy(), np.ones(3), atol=1e-5)
    raw = load_cifar10_data(CIFAR10Config(path=folder, subset=16, test_subset=6, seed=2, standardize=False),
                            "cross_entropy")
    pixels = raw.train_inputs.double()
    mean, std = pixels.mean((0, 2, 3), keepdim=True), pixels.std((0, 2, 3), keepdim=True, correction=0)
    np.testing.assert_allclose(data.test_inputs.numpy(), ((raw.test_inputs.double() - mean) / std).numpy(),
                               rtol=1e-6, atol=1e-6)
    indices = source_indices(raw.train_inputs, cifar["train_images"])
    assert len(set(indices)) == 16
    np.testing.assert_array_equal(raw.train_targets.numpy(), cifar["train_labels"][indices])
    np.testing.assert_array_equal(data.train_targets.argmax(1).numpy(), cifar["train_labels"][indices])
    test_indices = source_indices(raw.test_inputs, cifar["test_images"])
    np.testing.assert_array_equal(raw.test_targets.numpy(), cifar["test_labels"][test_indices])


def test_cifar10_errors(cifar, tmp_path):
    folder = cifar["folder"]
    raise_one_line("CIFAR-10 folder not found", read_cifar10_binary, tmp_path / "nowhere")
    raise_one_line("data.subset 40 is larger than the 30 training images",
                   load_cifar10_data, CIFAR10Config(path=str(folder), subset=40), "mse")
    batch = folder / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-1])
    message = raise_one_line("not a whole number of 3073-byte CIFAR-10 records", read_cifar10_binary, folder)
    assert str(batch) in message
    batch.write_bytes(cifar_bytes(cifar["train_images"][:2], np.array([3, 12])))
    raise_one_line("data_batch_3.bin: expected labels 0 to 9, got 12 at position 1", read_cifar10_binary, folder)
    batch.unlink()
    (folder / "test_batch.bin").unlink()
    message = raise_one_line("missing data_batch_3.bin, test_batch.bin \\(a CIFAR-10 folder holds data_batch_1.bin",
                             read_cifar10_binary, folder)
    assert str(folder) in message
