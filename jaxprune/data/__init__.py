"""Deterministic data: synthetic tasks that need no download."""

from jaxprune.data.paint import SHAPES, paint, shape_polygons

__all__ = ["SHAPES", "paint", "shape_polygons"]
