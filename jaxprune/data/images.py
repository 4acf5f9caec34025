"""Image classification data: scikit-learn's bundled digits offline; MNIST/CIFAR-10 via TFDS."""

from __future__ import annotations

import numpy as np

__all__ = ["IMAGE_DATASETS", "image_dataset"]

IMAGE_DATASETS = ("digits", "mnist", "cifar10")
"""``digits``: 1,797 8x8 grey images bundled with scikit-learn (no download); ``mnist`` and
``cifar10``: TensorFlow Datasets (downloaded on first use by TFDS itself)."""


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


def _tfds(name: str, split: str):
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            f"image_dataset({name!r}) needs TensorFlow Datasets: pip install 'jaxprune[tfds]'"
        ) from err
    try:
        ds = tfds.as_numpy(tfds.load(name, split=split, batch_size=-1, as_supervised=True))
    except ImportError as err:  # TFDS imports without TensorFlow; loading needs it
        raise ImportError(
            f"image_dataset({name!r}) needs TensorFlow to load TFDS data ({err}): "
            "pip install tensorflow"
        ) from err
    x, y = ds
    return (np.asarray(x, np.float32) / 255.0), np.asarray(y, np.int32)


def image_dataset(
    name: str, split: str = "train", *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, H, W, C)`` as float32 in ``[0, 1]`` and integer labels ``(n,)``.

    ``"digits"`` (the offline default of the paper-003 experiments) is split deterministically:
    a permutation drawn with ``seed`` puts ``test_fraction`` of the 1,797 images in ``"test"``,
    the rest in ``"train"`` (359 / 1,438 by default). ``"mnist"`` and ``"cifar10"`` use TFDS's
    own train/test splits.

    Args:
      name: one of :data:`IMAGE_DATASETS`.
      split: ``"train"`` or ``"test"``.
      test_fraction: digits only: fraction held out for ``"test"``, in ``(0, 1)``.
      seed: digits only: seed of the split permutation.

    Returns:
      ``(x, y)`` numpy arrays.

    Raises:
      ValueError: on an unknown name or split, or a bad ``test_fraction``.
      ImportError: naming what to install when scikit-learn, TFDS or TensorFlow is missing.

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
    return _tfds(name, split)
