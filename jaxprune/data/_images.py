"""Image classification data: scikit-learn's bundled digits offline; MNIST/CIFAR-10 via TFDS."""

from __future__ import annotations

import numpy as np

__all__ = ["IMAGE_DATASETS", "image_dataset"]

IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100")
"""``digits``: 1,797 8x8 grey images bundled with scikit-learn (no download); the others are
TensorFlow Datasets names (downloaded and prepared on first use by TFDS itself, or read from
``data_dir``): MNIST and CIFAR-10 (papers 001-003), Fashion-MNIST (papers 001, 002), CIFAR-100
(papers 002, 004)."""


def _digits(split: str, test_fraction: float, seed: int):
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "image_dataset('digits') needs scikit-learn: pip install 'jaxprune[data]'"
        ) from err
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = data.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    idx = order[:n_test] if split == "test" else order[n_test:]
    return x[idx], y[idx]


def _tfds(name: str, split: str, data_dir: str | None):
    """Reads a whole TFDS split through ``tfds.data_source`` (random access, no TensorFlow)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            f"image_dataset({name!r}) needs TensorFlow Datasets: pip install 'jaxprune[tfds]'"
        ) from err
    source = tfds.data_source(name, split=split, data_dir=data_dir)
    n = len(source)
    if n == 0:
        raise ValueError(f"name: the TFDS split {name}/{split} is empty")
    first = source[0]
    x = np.empty((n, *np.shape(first["image"])), np.uint8)
    y = np.empty(n, np.int32)
    for i in range(n):
        record = source[i]
        x[i], y[i] = record["image"], record["label"]
    return x.astype(np.float32) / 255.0, y


def image_dataset(
    name: str,
    split: str = "train",
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    data_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, H, W, C)`` as float32 in ``[0, 1]`` and integer labels ``(n,)``.

    ``"digits"`` (the offline default of the paper-003 experiments) is split deterministically:
    a permutation drawn with ``seed`` puts ``test_fraction`` of the 1,797 images in ``"test"``,
    the rest in ``"train"`` (359 / 1,438 by default). The TFDS datasets use TFDS's own
    train/test splits, read record by record through ``tfds.data_source`` (so TensorFlow itself
    is not needed; ``pip install 'jaxprune[tfds]'``), and pixel values are divided by 255.

    Args:
      name: one of :data:`IMAGE_DATASETS`.
      split: ``"train"`` or ``"test"``.
      test_fraction: digits only: fraction held out for ``"test"``, in ``(0, 1)``.
      seed: digits only: seed of the split permutation.
      data_dir: TFDS only: where the prepared datasets live (TFDS's default when ``None``).

    Returns:
      ``(x, y)`` numpy arrays.

    Raises:
      ValueError: on an unknown name or split, or a bad ``test_fraction``.
      ImportError: naming what to install when scikit-learn or TFDS is missing.

    >>> x, y = image_dataset("digits", "test")
    >>> x.shape, y.dtype.name, float(x.max())
    ((359, 8, 8, 1), 'int32', 1.0)

    References:
      Paper 003, sec. 2.2 (MNIST for LeNet, CIFAR-10 for Conv2/4/6; the digits set is this
      project's offline stand-in).
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"name: expected one of {IMAGE_DATASETS}, got {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a value in (0, 1), got {test_fraction}")
    if name == "digits":
        return _digits(split, test_fraction, seed)
    return _tfds(name, split, data_dir)
