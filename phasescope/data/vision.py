"""MNIST and CIFAR-10 from their original binary files, as seeded subsets held in memory.

The reference study (arXiv 2505.21423) trains on 5000-example subsets ("MNIST-5k", "CIFAR-10-5k")
with full-batch gradient descent, so the whole subset lives in one tensor. Files are read from a
local folder (nothing is downloaded) in their original formats: IDX for MNIST
(http://yann.lecun.com/exdb/mnist/), the binary version for CIFAR-10
(https://www.cs.toronto.edu/~kriz/cifar.html). Neither format is a pickle.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from pydantic import Field

from phasescope.data.supervised import SupervisedData, check_loss, encode_targets
from phasescope.errors import PhasescopeError
from phasescope.run.config import StrictModel

NUM_CLASSES = 10  # both MNIST and CIFAR-10

# The third byte of an IDX magic number names the element type; every type is stored big-endian.
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"  # an IDX file starts with 0x00, so the two can never be confused

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{index}.bin" for index in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_FOLDER = "cifar-10-batches-bin"  # the folder the official archive extracts to
_CIFAR10_IMAGE_SHAPE = (3, 32, 32)  # channels first, as stored: 1024 red, then green, then blue bytes
_CIFAR10_RECORD_BYTES = 1 + math.prod(_CIFAR10_IMAGE_SHAPE)  # one label byte, then the pixels


class ImageSplits(NamedTuple):
    """Raw images and labels of a train/test dataset, as stored on disk.

    Attributes:
        train_images: (n_train, channels, height, width) uint8.
        train_labels: (n_train,) int64 in [0, 10).
        test_images, test_labels: the same for the test split.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


class MNISTConfig(StrictModel):
    """MNIST from the four IDX files (optionally gzipped) in a local folder."""

    name: Literal["mnist"] = "mnist"
    path: str  # the folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-... (or .gz)
    subset: int | None = Field(5000, ge=1)  # training images drawn at random; 5000 as in the reference; None: all
    test_subset: int | None = Field(None, ge=1)  # test images drawn at random; None: the whole test set
    seed: int = 0  # which subsets; subsets of different sizes with one seed are nested
    standardize: bool = True  # subtract the training subset's pixel mean, divide by its std (one scalar each)


class CIFAR10Config(StrictModel):
    """CIFAR-10 from the binary version (cifar-10-batches-bin) in a local folder."""

    name: Literal["cifar10"] = "cifar10"
    path: str  # the cifar-10-batches-bin folder (or the folder containing it)
    subset: int | None = Field(5000, ge=1)  # training images drawn at random; 5000 as in the reference; None: all
    test_subset: int | None = Field(None, ge=1)  # test images drawn at random; None: the whole test set
    seed: int = 0  # which subsets; subsets of different sizes with one seed are nested
    standardize: bool = True  # per channel: the training subset's mean and std over images and pixels


def read_idx(path: Path | str) -> np.ndarray:
    """The array stored in an IDX file (gzip-compressed or not), in native byte order.

    The format: two zero bytes, a type code byte, a byte with the number of dimensions, one
    big-endian uint32 per dimension, then the elements in C order, big-endian.

    Raises:
        PhasescopeError: the file is missing, unreadable, not IDX, truncated or too long.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        codes = ", ".join(f"{code:02X}" for code in _IDX_DTYPES)
        raise PhasescopeError(f"{path}: not an IDX file (expected a magic number 0x0000TTDD with type code TT "
                              f"in {codes}; got 0x{raw[:4].hex().upper()})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise PhasescopeError(f"{path}: truncated IDX file (expected a {header_bytes}-byte header for {ndim} "
                              f"dimensions, got {len(raw)} bytes)")
    shape = tuple(int(size) for size in np.frombuffer(raw, ">u4", ndim, offset=4))
    expected_bytes = header_bytes + math.prod(shape) * dtype.itemsize
    if len(raw) != expected_bytes:
        problem = "truncated IDX file" if len(raw) < expected_bytes else "IDX file longer than its header says"
        raise PhasescopeError(f"{path}: {problem} (expected {expected_bytes} bytes for shape {shape} of "
                              f"{dtype.name}, got {len(raw)})")
    elements = np.frombuffer(raw, dtype, math.prod(shape), offset=header_bytes)
    return elements.reshape(shape).astype(dtype.newbyteorder("="))  # a writable copy


def read_mnist(folder: Path | str) -> ImageSplits:
    """MNIST's four IDX files as images (N, 1, 28, 28) uint8 and labels (N,) int64.

    Each file may be plain or gzipped (``name.gz``); any folder in the same format works
    (Fashion-MNIST, KMNIST).
    """
    folder = Path(folder).expanduser()
    paths = _find_files(folder, MNIST_FILES, "MNIST", "each optionally gzipped as .gz", allow_gzip=True)
    splits = []
    for images_path, labels_path in (paths[:2], paths[2:]):
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise PhasescopeError(f"{images_path}: expected uint8 images of shape (N, height, width), got "
                                  f"{images.dtype.name} of shape {images.shape}")
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise PhasescopeError(f"{labels_path}: expected uint8 labels of shape (N,), got {labels.dtype.name} "
                                  f"of shape {labels.shape}")
        _check_counts(images, labels, images_path, labels_path)
        _check_labels(labels, labels_path)
        splits += [images[:, None], labels.astype(np.int64)]
    return ImageSplits(*splits)


def read_cifar10_batch(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch file: images (N, 3, 32, 32) uint8 and labels (N,) int64.

    Each record is one label byte followed by 3072 pixel bytes (the red, green, then blue 32x32 plane).
    """
    path = Path(path)
    raw = _read_bytes(path, decompress=False)
    if len(raw) % _CIFAR10_RECORD_BYTES:
        raise PhasescopeError(f"{path}: {len(raw)} bytes is not a whole number of {_CIFAR10_RECORD_BYTES}-byte "
                              "CIFAR-10 records (1 label byte + 3072 pixel bytes): truncated or not a binary batch")
    records = np.frombuffer(raw, np.uint8).reshape(-1, _CIFAR10_RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    _check_labels(labels, path)
    return records[:, 1:].reshape(-1, *_CIFAR10_IMAGE_SHAPE).copy(), labels


def read_cifar10_binary(folder: Path | str) -> ImageSplits:
    """CIFAR-10's five training batches (concatenated in order) and its test batch.

    ``folder`` is the extracted ``cifar-10-batches-bin`` folder, or a folder that contains it.
    """
    folder = Path(folder).expanduser()
    names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    nested = folder / CIFAR10_FOLDER
    if folder.is_dir() and not (folder / CIFAR10_TEST_FILE).is_file() and nested.is_dir():
        folder = nested
    paths = _find_files(folder, names, "CIFAR-10", f"the binary version, {CIFAR10_FOLDER}", allow_gzip=False)
    train = [read_cifar10_batch(path) for path in paths[:-1]]
    test_images, test_labels = read_cifar10_batch(paths[-1])
    return ImageSplits(np.concatenate([images for images, _ in train]),
                       np.concatenate([labels for _, labels in train]), test_images, test_labels)


def load_mnist_data(config: MNISTConfig, loss: str) -> SupervisedData:
    """A seeded MNIST subset: inputs (N, 1, 28, 28) float32, targets encoded for ``loss``.

    Pixels are scaled to [0, 1], then (with ``standardize``) shifted and scaled by the mean and
    std of all pixels of the training subset; the test split uses the same two numbers.
    """
    check_loss(loss, "MNIST")
    splits = read_mnist(config.path)
    return _image_data(splits, config.subset, config.test_subset, config.seed, config.standardize,
                       standardize_dims=(0, 1, 2, 3), loss=loss, source=config.path)


def load_cifar10_data(config: CIFAR10Config, loss: str) -> SupervisedData:
    """A seeded CIFAR-10 subset: inputs (N, 3, 32, 32) float32, targets encoded for ``loss``.

    Pixels are scaled to [0, 1], then (with ``standardize``) each channel is shifted and scaled by
    its mean and std over the training subset; the test split uses the same numbers.
    """
    check_loss(loss, "CIFAR-10")
    splits = read_cifar10_binary(config.path)
    return _image_data(splits, config.subset, config.test_subset, config.seed, config.standardize,
                       standardize_dims=(0, 2, 3), loss=loss, source=config.path)


def _image_data(splits: ImageSplits, subset: int | None, test_subset: int | None, seed: int, standardize: bool,
                standardize_dims: tuple[int, ...], loss: str, source: str) -> SupervisedData:
    """Draw the subsets, scale pixels, standardize with training statistics and encode the targets."""
    # Independent streams for the two draws, so the test subset does not change with the training one.
    train_rng, test_rng = (np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(2))
    train_index = _draw_subset(len(splits.train_labels), subset, train_rng, "subset", "training", source)
    test_index = _draw_subset(len(splits.test_labels), test_subset, test_rng, "test_subset", "test", source)
    train_inputs = torch.from_numpy(splits.train_images[train_index]).float() / 255  # (N, C, H, W)
    test_inputs = torch.from_numpy(splits.test_images[test_index]).float() / 255
    if standardize:
        # float32 is enough: torch reduces with cascaded sums (relative error ~1e-7 over 50M pixels).
        mean = train_inputs.mean(dim=standardize_dims, keepdim=True)
        # A constant channel is all zeros once centred: any positive divisor leaves it so.
        std = train_inputs.std(dim=standardize_dims, keepdim=True, correction=0).clamp_min(1e-12)
        train_inputs = train_inputs.sub_(mean).div_(std)
        test_inputs = test_inputs.sub_(mean).div_(std)
    train_labels = torch.from_numpy(splits.train_labels[train_index])
    test_labels = torch.from_numpy(splits.test_labels[test_index])
    return SupervisedData(train_inputs, encode_targets(train_labels, NUM_CLASSES, loss),
                          test_inputs, encode_targets(test_labels, NUM_CLASSES, loss), num_outputs=NUM_CLASSES)


def _draw_subset(available: int, size: int | None, rng: np.random.Generator, field: str, split: str,
                 source: str) -> np.ndarray:
    """Indices of ``size`` examples in random order (all, in file order, for None).

    The first ``size`` entries of one permutation: with a fixed seed, smaller subsets are nested
    in larger ones.
    """
    if size is None:
        return np.arange(available)
    if size > available:
        raise PhasescopeError(f"data.{field} {size} is larger than the {available} {split} images in {source}")
    return rng.permutation(available)[:size]


def _find_files(folder: Path, names: tuple[str, ...], dataset: str, note: str, allow_gzip: bool) -> list[Path]:
    """The paths of ``names`` in ``folder`` (or ``name.gz`` where allowed); one error listing all that lack."""
    expected = f"{', '.join(names)} ({note})"
    if not folder.exists():
        raise PhasescopeError(f"{folder}: {dataset} folder not found (expected a folder holding {expected})")
    if not folder.is_dir():
        raise PhasescopeError(f"{folder}: not a folder (expected a {dataset} folder holding {expected})")
    found, missing = [], []
    for name in names:
        candidates = [folder / name, folder / f"{name}.gz"] if allow_gzip else [folder / name]
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
        if path is None:
            missing.append(name)
        found.append(path)
    if missing:
        raise PhasescopeError(f"{folder}: missing {', '.join(missing)} (a {dataset} folder holds {expected})")
    return found


def _read_bytes(path: Path, decompress: bool = True) -> bytes:
    """The file's bytes, gunzipped if they start with the gzip magic number and ``decompress``."""
    if not path.is_file():
        raise PhasescopeError(f"{path}: file not found")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PhasescopeError(f"{path}: cannot read file ({error.strerror or error})") from None
    if not (decompress and raw.startswith(_GZIP_MAGIC)):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise PhasescopeError(f"{path}: corrupt or truncated gzip file ({' '.join(str(error).split())})") from None


def _check_counts(images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path) -> None:
    if len(images) != len(labels):
        raise PhasescopeError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
                              "labels (expected one label per image)")


def _check_labels(labels: np.ndarray, path: Path) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if len(bad):
        raise PhasescopeError(f"{path}: expected labels 0 to {NUM_CLASSES - 1}, got {labels[bad[0]]} at "
                              f"position {bad[0]}")
