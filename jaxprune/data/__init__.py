"""Deterministic data: synthetic tasks that need no download."""

from jaxprune.data.paint import SHAPES, paint, shape_polygons
from jaxprune.data.signal import signal_task

__all__ = ["SHAPES", "paint", "shape_polygons", "signal_task"]
