"""Deterministic data: synthetic tasks that need no download."""

from jaxprune.data._images import IMAGE_DATASETS, image_dataset
from jaxprune.data._paint import SHAPES, paint, shape_polygons
from jaxprune.data._signal import signal_task

__all__ = [
    "IMAGE_DATASETS",
    "SHAPES",
    "image_dataset",
    "paint",
    "shape_polygons",
    "signal_task",
]
