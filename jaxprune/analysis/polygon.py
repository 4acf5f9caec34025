"""Number of sides of the shape a network paints (paper 000, sec. 4.2, Table 3, Figs. 7-8)."""

from __future__ import annotations

import numpy as np

__all__ = ["painted_image", "polygon_sides", "trace_contours"]

# Edges of a marching-squares cell, by their two corners (tl, tr, br, bl = 0, 1, 2, 3).
_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0))  # top, right, bottom, left
_MID = ((0, 1), (1, 2), (2, 1), (1, 0))  # doubled (row, col) offsets of each edge midpoint


def trace_contours(image) -> list[np.ndarray]:
    """Closed boundary polylines of a binary image (marching squares at 0.5).

    The image is padded with background first, so every contour is closed and a shape touching
    the frame is closed along it. Foreground pixels that touch diagonally are connected.

    Args:
      image: 2-D array; nonzero/True pixels are the foreground.

    Returns:
      One ``(n, 2)`` float array of ``(row, col)`` vertices per contour (outer boundaries and
      holes), in pixel units, without repeating the first vertex.

    >>> [len(c) for c in trace_contours(np.eye(2, dtype=bool))]  # one 8-connected shape
    [8]
    """
    img = np.pad(np.asarray(image).astype(bool), 1)
    corners = np.stack([img[:-1, :-1], img[:-1, 1:], img[1:, 1:], img[1:, :-1]], axis=-1)
    nbrs: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, j in zip(*np.nonzero(corners.any(-1) & ~corners.all(-1)), strict=True):
        c = corners[i, j]
        cut = [e for e, (a, b) in enumerate(_EDGES) if c[a] != c[b]]
        if len(cut) == 4:  # saddle: cut off the two background corners (8-connected foreground)
            pairs = ((0, 1), (2, 3)) if c[0] else ((3, 0), (1, 2))
        else:
            pairs = ((cut[0], cut[1]),)
        for e0, e1 in pairs:
            p0 = (2 * i + _MID[e0][0], 2 * j + _MID[e0][1])
            p1 = (2 * i + _MID[e1][0], 2 * j + _MID[e1][1])
            nbrs.setdefault(p0, []).append(p1)
            nbrs.setdefault(p1, []).append(p0)
    contours, seen = [], set()
    for start in nbrs:
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            a, b = nbrs[cur]
            nxt = b if a == prev else a
            if nxt == start:
                break
            loop.append(nxt)
            seen.add(nxt)
            prev, cur = cur, nxt
        # Undo the doubling and the padding offset (pixel centres at integer coordinates).
        contours.append(np.asarray(loop, float) / 2 - 1 + 0.5)
    return contours


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 1], poly[:, 0]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _douglas_peucker(pts: np.ndarray, tol: float) -> list[int]:
    """Indices kept by Douglas-Peucker on the open polyline ``pts`` (ends always kept)."""
    keep, stack = {0, len(pts) - 1}, [(0, len(pts) - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        seg, rel = pts[b] - pts[a], pts[a + 1 : b] - pts[a]
        norm = np.hypot(*seg)
        d = (
            np.abs(seg[0] * rel[:, 1] - seg[1] * rel[:, 0]) / norm
            if norm > 0
            else np.hypot(rel[:, 0], rel[:, 1])
        )
        k = int(np.argmax(d))
        if d[k] > tol:
            keep.add(a + 1 + k)
            stack += [(a, a + 1 + k), (a + 1 + k, b)]
    return sorted(keep)


def _intersection(p0, p1, q0, q1):
    """Intersection of the lines p0-p1 and q0-q1 (None when parallel)."""
    d, e = p1 - p0, q1 - q0
    den = d[0] * e[1] - d[1] * e[0]
    if abs(den) < 1e-9:
        return None
    t = ((q0[0] - p0[0]) * e[1] - (q0[1] - p0[1]) * e[0]) / den
    return p0 + t * d


def _turns(poly: np.ndarray) -> np.ndarray:
    a, b = poly - np.roll(poly, 1, axis=0), np.roll(poly, -1, axis=0) - poly
    return np.degrees(
        np.abs(np.arctan2(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0], np.sum(a * b, axis=1)))
    )


def _dp_closed(loop: np.ndarray, tol: float, start: int) -> np.ndarray:
    """Douglas-Peucker on a closed loop, split at ``start`` and the point farthest from it."""
    loop = np.roll(loop, -start, axis=0)
    far = int(np.argmax(np.hypot(*(loop - loop[0]).T)))
    closed = np.concatenate([loop, loop[:1]])
    first = _douglas_peucker(closed[: far + 1], tol)
    second = [far + i for i in _douglas_peucker(closed[far:], tol)]
    return closed[sorted(set(first + second) - {len(loop)})]


def _point_line_distance(p, a, b) -> float:
    d = b - a
    n = np.hypot(*d)
    return float(abs(d[0] * (p[1] - a[1]) - d[1] * (p[0] - a[0])) / n) if n > 0 else 0.0


def _simplify(loop: np.ndarray, tol: float, min_side: float, min_turn: float) -> np.ndarray:
    poly = _dp_closed(loop, tol, 0)
    # The split point of the first pass is arbitrary and may sit beside a corner; split again
    # at the sharpest corner found, so both ends of the two halves are true corners.
    if len(poly) >= 3:
        corner = poly[int(np.argmax(_turns(poly)))]
        poly = _dp_closed(loop, tol, int(np.argmin(np.hypot(*(loop - corner).T))))
    while len(poly) > 3:
        turn = _turns(poly)
        k = int(np.argmin(turn))
        if turn[k] < min_turn:  # (nearly) collinear neighbours: not a corner
            poly = np.delete(poly, k, axis=0)
            continue
        n = len(poly)
        sides = np.hypot(*(np.roll(poly, -1, axis=0) - poly).T)
        for k in np.argsort(sides):
            k0, k1, k2 = (k - 1) % n, (k + 1) % n, (k + 2) % n
            # A rasterized (blunted) corner: replace the short side by the corner where the
            # lines of its two neighbouring sides meet, if that corner is close by: within
            # min_side of both ends, or within 2 tol of the side when it is the shortest of three.
            corner = _intersection(poly[k0], poly[k], poly[k2], poly[k1])
            if corner is None:
                continue
            near = max(np.hypot(*(corner - poly[k])), np.hypot(*(corner - poly[k1])))
            flat = _point_line_distance(corner, poly[k], poly[k1]) <= 2 * tol and sides[k] < min(
                sides[k0], sides[k1]
            )
            if sides[k] < min_side and near <= min_side or flat and near <= 2 * sides[k]:
                poly = np.delete(poly, k1, axis=0)
                poly[k if k < k1 else k - 1] = corner
                break
        if len(poly) == n:
            break
    return poly


def polygon_sides(
    image,
    *,
    tolerance: float = 1.5,
    min_side: float = 6.0,
    min_turn: float = 25.0,
    min_area: float = 4.0,
) -> int:
    """Number of straight sides of the shape(s) in a binary image.

    Each contour (:func:`trace_contours`) is simplified to a polygon: Douglas-Peucker with
    ``tolerance`` pixels,
    then sides shorter than ``min_side`` pixels (rounded rasterized corners) are merged into one
    vertex and vertices turning by less than ``min_turn`` degrees are dropped. The sides of all
    contours with area ``>= min_area`` pixels are summed (a hole's sides count too), except
    sides lying on the image frame: a shape cut by the frame is counted by its painted
    boundary only, so a blank or a full image has 0 sides and a half-plane has 1.

    Args:
      image: 2-D array, nonzero = painted (e.g. a thresholded network prediction).
      tolerance: Douglas-Peucker distance in pixels, ``> 0``.
      min_side: shortest side kept, in pixels, ``>= 0``.
      min_turn: smallest direction change (degrees) that makes a corner, in ``[0, 180)``.
      min_area: contours enclosing fewer pixels are ignored (specks), ``>= 0``.

    Returns:
      The number of sides.

    Raises:
      ValueError: for a non-2-D or empty image or out-of-range parameters.

    >>> import jaxprune as jp
    >>> [polygon_sides(jp.data.paint(s, 64)[1].reshape(64, 64)) for s in ("triangle", "star")]
    [3, 12]
    >>> polygon_sides(np.ones((8, 8))), polygon_sides(np.tri(32))
    (0, 1)

    References:
      Paper 000, sec. 4.2 (Table 3 "# sides", Figs. 7 and 8). The paper does not say how it
      counted sides; this raster procedure is our choice.
    """
    img = np.asarray(image)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"image: expected a non-empty 2-D array, got shape {img.shape}")
    if not tolerance > 0:
        raise ValueError(f"tolerance: expected > 0 pixels, got {tolerance}")
    if not min_side >= 0 or not min_area >= 0:
        raise ValueError(f"min_side, min_area: expected >= 0, got {min_side}, {min_area}")
    if not 0 <= min_turn < 180:
        raise ValueError(f"min_turn: expected degrees in [0, 180), got {min_turn}")
    lo, hi = -0.5 + tolerance, np.array(img.shape) - 0.5 - tolerance
    total = 0
    for loop in trace_contours(img):
        if abs(_area(loop)) < min_area or len(loop) < 3:
            continue
        poly = _simplify(loop, tolerance, min_side, min_turn)
        nxt = np.roll(poly, -1, axis=0)
        on_frame = (((poly <= lo) & (nxt <= lo)) | ((poly >= hi) & (nxt >= hi))).any(axis=1)
        total += int(np.sum(~on_frame))
    return total


def painted_image(predictions, size: int, threshold: float = 0.5) -> np.ndarray:
    """Reshapes per-pixel predictions (raster order, as :func:`~jaxprune.data.paint`) to a bool
    image: ``prediction >= threshold``.

    >>> painted_image(np.array([0.1, 0.9, 0.6, 0.2]), 2).tolist()
    [[False, True], [True, False]]
    """
    p = np.asarray(predictions).reshape(-1)
    if p.size != size * size:
        raise ValueError(
            f"predictions: expected {size * size} values for size {size}, got {p.size}"
        )
    return (p >= threshold).reshape(size, size)
