"""Batches streamed from a TFDS split by random access, and a prefetcher that keeps a device fed."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import jax
import numpy as np

from jaxprune.data._images import (
    IMAGE_DATASETS,
    VARIABLE_SIZE_DATASETS,
    read_records,
    tfds_source,
)

__all__ = ["image_batches", "prefetch_to_device"]


def image_batches(
    name: str,
    split: str,
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    image_size: int | None = None,
    drop_remainder: bool = True,
    data_dir: str | None = None,
    workers: int = 8,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of ``(uint8 images (b, S, S, C), int32 labels (b,))`` batches, streamed.

    Records are read by index through ``tfds.data_source`` (ArrayRecord random access; no
    TensorFlow, no whole split in memory), in an order drawn from ``(seed, epoch)``, so any
    epoch can be replayed or resumed. Images keep uint8 pixels: scale and augment them on the
    device (:func:`cifar_augment`, :func:`imagenet_augment`); wrap the iterator in
    :func:`prefetch_to_device` so reading the next batch overlaps the current step.

    Args:
      name: a TFDS name of :data:`IMAGE_DATASETS` (``"imagenet2012"``, ``"cifar10"``, ...).
      split: any TFDS split string.
      batch_size: images per batch.
      seed: seed of the shuffling.
      epoch: which epoch's order (each epoch a new permutation).
      shuffle: False reads in stored order.
      image_size: square side (shorter side resized, central square kept); required for the
        datasets of :data:`VARIABLE_SIZE_DATASETS` (256 for ImageNet, cropped to 224 on device).
      drop_remainder: drop the last partial batch (static shapes under ``jit``).
      data_dir: where TFDS keeps prepared datasets (TFDS's default when ``None``).
      workers: threads reading and resizing the records of a batch (1: none).

    Yields:
      ``(images, labels)`` numpy arrays.

    Raises:
      ValueError: on an unknown name, ``batch_size < 1``, or a variable-size dataset without
        ``image_size``.

    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=10):
    ...     shapes = [x.shape for x, _ in image_batches("cifar10", "train", 4)]
    >>> shapes
    [(4, 32, 32, 3), (4, 32, 32, 3)]

    References:
      Paper 004, App. C.2 (ImageNet post-training, batch 40, 224-pixel crops); paper 002,
      App. B (its twelve TFDS datasets).
    """
    if name not in IMAGE_DATASETS or name == "digits":
        raise ValueError(f"name: expected a TFDS name of {IMAGE_DATASETS[1:]}, got {name!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected a positive int, got {workers!r}")
    if name in VARIABLE_SIZE_DATASETS and image_size is None:
        raise ValueError(f"image_size: {name}'s images differ in size; give a square side")
    source = tfds_source(name, split, data_dir)
    n = len(source)
    order = np.arange(n)
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(n)
    stop = n - n % batch_size if drop_remainder else n
    with ThreadPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        for start in range(0, stop, batch_size):
            yield read_records(source, order[start : start + batch_size], image_size, pool)


def prefetch_to_device(
    batches: Iterable, size: int = 2, *, sharding: jax.sharding.Sharding | None = None
) -> Iterator:
    """Iterates over ``batches`` moved to the device ``size`` items ahead, from a thread.

    A background thread reads the next items (host work: TFDS reads, resizing) and starts
    their ``jax.device_put`` while the caller's step runs, so the accelerator does not wait
    for input. Items come out in order; an exception in the reader is re-raised here.

    Args:
      batches: any iterable of pytrees of arrays.
      size: how many items are read and transferred ahead (>= 1).
      sharding: where to put them (default: the default device); e.g. a
        ``NamedSharding`` that splits the batch over a data-parallel mesh.

    Yields:
      The same pytrees, as device arrays.

    >>> import numpy as np
    >>> out = list(prefetch_to_device(iter([np.zeros(2), np.ones(2)])))
    >>> [type(a).__name__ for a in out], float(out[1].sum())
    (['ArrayImpl', 'ArrayImpl'], 2.0)

    References:
      Flax's ``jax_utils.prefetch_to_device`` (the same idea for ``pmap``).
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected a positive int, got {size!r}")
    done = object()
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def producer():
        try:
            for item in batches:
                if stop.is_set():
                    return
                q.put(jax.device_put(item, sharding))
        except BaseException as err:  # handed to the consumer, raised there
            q.put(_Failure(err))
            return
        q.put(done)

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.01)


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error
