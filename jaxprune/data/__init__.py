"""Deterministic data: synthetic tasks that need no download, TFDS image datasets, batch
streaming with device prefetch, and jittable on-device augmentation."""

from jaxprune.data._augment import center_crop, cifar_augment, imagenet_augment, random_flip
from jaxprune.data._images import (
    IMAGE_DATASETS,
    VARIABLE_SIZE_DATASETS,
    image_classes,
    image_dataset,
)
from jaxprune.data._paint import SHAPES, paint, shape_polygons
from jaxprune.data._signal import signal_task
from jaxprune.data._stream import image_batches, prefetch_to_device

__all__ = [
    "IMAGE_DATASETS",
    "SHAPES",
    "VARIABLE_SIZE_DATASETS",
    "center_crop",
    "cifar_augment",
    "image_batches",
    "image_classes",
    "image_dataset",
    "imagenet_augment",
    "paint",
    "prefetch_to_device",
    "random_flip",
    "shape_polygons",
    "signal_task",
]
