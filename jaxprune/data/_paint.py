"""The image-painting task: pixel coordinates in, 0/1 pixel values out (paper 000, sec. 2)."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["SHAPES", "paint", "shape_polygons"]


def _regular(n: int, radius: float, phase: float) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


# Each shape is a union of convex polygons (counter-clockwise vertices) in [-0.5, 0.5]^2.
SHAPES: dict[str, tuple[np.ndarray, ...]] = {
    "square": (np.array([[-0.25, -0.25], [0.25, -0.25], [0.25, 0.25], [-0.25, 0.25]]),),
    "triangle": (_regular(3, 0.35, np.pi / 2),),
    "pentagon": (_regular(5, 0.33, np.pi / 2),),
    "hexagon": (_regular(6, 0.33, 0.0),),
    "quadrilateral": (np.array([[-0.3, -0.2], [0.25, -0.3], [0.3, 0.2], [-0.15, 0.3]]),),
    # Six-pointed star: union of two triangles (paper 000, Fig. 6; 12 sides, 6 ReLU lines).
    "star": (_regular(3, 0.4, np.pi / 2), _regular(3, 0.4, -np.pi / 2)),
}
"""Shapes by name; all but ``star`` are convex with at most 6 vertices (paper 000, Fig. 2)."""


def shape_polygons(shape: str) -> tuple[np.ndarray, ...]:
    """The convex polygons whose union is ``shape``; raises ``ValueError`` for unknown names."""
    if shape not in SHAPES:
        raise ValueError(f"shape: unknown shape {shape!r}; expected one of {sorted(SHAPES)}")
    return SHAPES[shape]


def _inside_convex(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    edges = np.roll(poly, -1, axis=0) - poly
    rel = points[:, None, :] - poly[None, :, :]
    cross = edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0]
    return np.all(cross >= 0, axis=1)


def paint(
    shape: str = "square", size: int = 64, dtype: DTypeLike = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Returns the painting data set for ``shape`` on a ``size x size`` pixel grid.

    Pixel centres form a regular grid whose coordinates are rescaled to ``[-0.5, 0.5]`` (paper 000,
    sec. 3.2); the target is 1 inside the shape and 0 outside. Deterministic, no download. The
    rows are in raster order (``y`` major); ``fit`` shuffles them every epoch.

    Args:
      shape: a key of :data:`SHAPES` (``square``, ``triangle``, ``hexagon``, ``star``, ...).
      size: pixels per side (the paper does not state its image size; 64 is our default).
      dtype: float dtype of the arrays.

    Returns:
      ``(x, y)``: ``x`` of shape ``(size*size, 2)`` with columns ``(x, y)``, ``y`` of shape
      ``(size*size, 1)`` with values in ``{0, 1}``.

    >>> x, y = paint("square", size=4)
    >>> x.shape, y.shape, float(x.min()), float(x.max())
    ((16, 2), (16, 1), -0.5, 0.5)
    >>> y.reshape(4, 4).astype(int).tolist()
    [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    polys = shape_polygons(shape)
    if not isinstance(size, int | np.integer) or size < 2:
        raise ValueError(f"size: expected an integer >= 2, got {size!r}")
    axis = np.linspace(-0.5, 0.5, size)
    gx, gy = np.meshgrid(axis, axis)  # gy varies along rows
    x = np.stack([gx.ravel(), gy.ravel()], axis=1)
    inside = np.zeros(len(x), dtype=bool)
    for poly in polys:
        inside |= _inside_convex(x, poly)
    return x.astype(dtype), inside[:, None].astype(dtype)
