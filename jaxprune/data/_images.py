"""Image classification data: scikit-learn's bundled digits offline; the papers' TFDS datasets."""

from __future__ import annotations

import numpy as np

__all__ = ["IMAGE_DATASETS", "VARIABLE_SIZE_DATASETS", "image_classes", "image_dataset"]

IMAGE_DATASETS = (
    "digits",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "imagenet2012",
    "mnist_corrupted",
    "cifar10_corrupted",
    "oxford_iiit_pet",
    "stanford_dogs",
    "cars196",
    "caltech101",
    "cassava",
    "cmaterdb",
    "caltech_birds2010",
)
"""``digits``: 1,797 8x8 grey images bundled with scikit-learn (no download); the others are
TensorFlow Datasets names (downloaded and prepared on first use by TFDS itself, or read from
``data_dir``): MNIST and CIFAR-10 (papers 001-003), Fashion-MNIST (papers 001, 002), CIFAR-100
(papers 002, 004), ImageNet (paper 004; manual download, streamed by
:func:`~jaxprune.data.image_batches`), and the rest of paper 002's twelve (App. B, Table 5)."""

VARIABLE_SIZE_DATASETS = frozenset(
    {
        "imagenet2012",
        "oxford_iiit_pet",
        "stanford_dogs",
        "cars196",
        "caltech101",
        "cassava",
        "caltech_birds2010",
    }
)
"""Datasets whose images differ in size: they need ``image_size`` (a square side)."""


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


def _import_tfds(name: str):
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            f"image_dataset({name!r}) needs TensorFlow Datasets: pip install 'jaxprune[tfds]'"
        ) from err
    return tfds


def tfds_source(name: str, split: str, data_dir: str | None):
    """The random-access ``tfds.data_source`` of a split (no TensorFlow, nothing read yet)."""
    source = _import_tfds(name).data_source(name, split=split, data_dir=data_dir)
    if len(source) == 0:
        raise ValueError(f"name: the TFDS split {name}/{split} is empty")
    return source


def fit_image(image: np.ndarray, size: int | None) -> np.ndarray:
    """``image`` (H, W, C) uint8 with its shorter side resized to ``size`` (bilinear, PIL) and
    the central ``size x size`` square kept; unchanged when ``size`` is None or already met."""
    image = np.asarray(image)
    if size is None or image.shape[:2] == (size, size):
        return image
    from PIL import Image

    h, w = image.shape[:2]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    squeeze = image.shape[-1] == 1
    pil = Image.fromarray(image[..., 0] if squeeze else image)
    out = np.asarray(pil.resize((nw, nh), Image.Resampling.BILINEAR))
    top, left = (nh - size) // 2, (nw - size) // 2
    out = out[top : top + size, left : left + size]
    return out[..., None] if squeeze else out


def read_records(source, indices, size: int | None, pool=None) -> tuple[np.ndarray, np.ndarray]:
    """Records ``indices`` of a TFDS source as uint8 images ``(n, H, W, C)`` and int32 labels
    (read and resized by the threads of ``pool``, a ``concurrent.futures`` executor, if given)."""
    read = lambda i: (fit_image((r := source[int(i)])["image"], size), r["label"])  # noqa: E731
    records = list(map(read, indices) if pool is None else pool.map(read, indices))
    x = np.stack([img for img, _ in records])
    y = np.asarray([label for _, label in records], np.int32)
    return x, y


def _tfds(name: str, split: str, data_dir: str | None, size: int | None):
    """Reads a whole TFDS split through ``tfds.data_source`` (random access, no TensorFlow)."""
    source = tfds_source(name, split, data_dir)
    return read_records(source, range(len(source)), size)


def image_classes(name: str, *, data_dir: str | None = None) -> int:
    """Number of classes of a dataset of :data:`IMAGE_DATASETS` (TFDS's metadata).

    >>> image_classes("digits")
    10

    References:
      Paper 002, App. B, Table 5 (the classes of its twelve datasets).
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"name: expected one of {IMAGE_DATASETS}, got {name!r}")
    if name == "digits":
        return 10
    builder = _import_tfds(name).builder(name, data_dir=data_dir)
    return int(builder.info.features["label"].num_classes)


def image_dataset(
    name: str,
    split: str = "train",
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    data_dir: str | None = None,
    image_size: int | None = None,
    dtype: str = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, H, W, C)`` as float32 in ``[0, 1]`` and integer labels ``(n,)``.

    ``"digits"`` (the offline default of the paper-003 experiments) is split deterministically:
    a permutation drawn with ``seed`` puts ``test_fraction`` of the 1,797 images in ``"test"``,
    the rest in ``"train"`` (359 / 1,438 by default). The TFDS datasets use TFDS's own
    train/test splits, read record by record through ``tfds.data_source`` (so TensorFlow itself
    is not needed; ``pip install 'jaxprune[tfds]'``), and pixel values are divided by 255.
    Any TFDS split string works for them (``"train[:90%]"``, ``"validation"``).
    The datasets of :data:`VARIABLE_SIZE_DATASETS` need ``image_size``: each image's shorter
    side is resized to it and the central square kept. ImageNet is not read whole: stream it
    with :func:`~jaxprune.data.image_batches`.

    Args:
      name: one of :data:`IMAGE_DATASETS`.
      split: ``"train"`` or ``"test"`` (any TFDS split for the TFDS datasets).
      test_fraction: digits only: fraction held out for ``"test"``, in ``(0, 1)``.
      seed: digits only: seed of the split permutation.
      data_dir: TFDS only: where the prepared datasets live (TFDS's default when ``None``).
      image_size: TFDS only: square side every image is brought to (shorter side resized,
        central square kept); ``None`` keeps the stored size.
      dtype: ``"float32"`` (pixels / 255) or ``"uint8"`` (raw pixels; 4x less memory, to be
        scaled on device).

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
    if dtype not in ("float32", "uint8"):
        raise ValueError(f"dtype: expected 'float32' or 'uint8', got {dtype!r}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size: expected a positive int or None, got {image_size!r}")
    if name == "digits":
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction: expected a value in (0, 1), got {test_fraction}")
        x, y = _digits(split, test_fraction, seed)
        return (x if dtype == "float32" else np.round(x * 255).astype(np.uint8)), y
    if name == "imagenet2012":
        raise ValueError(
            "name: imagenet2012 is too large to read whole; stream it with "
            "jaxprune.data.image_batches"
        )
    if name in VARIABLE_SIZE_DATASETS and image_size is None:
        raise ValueError(f"image_size: {name}'s images differ in size; give a square side")
    x, y = _tfds(name, split, data_dir, image_size)
    return (x.astype(np.float32) / 255.0 if dtype == "float32" else x), y
