import numpy as np
import pytest

import jaxprune as jp
from jaxprune.analysis import painted_image, polygon_sides


def _regular(n, radius, phase):
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _raster(polys, size):
    axis = np.linspace(-0.5, 0.5, size)
    gx, gy = np.meshgrid(axis, axis)
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    inside = np.zeros(len(pts), bool)
    for poly in polys:
        edges = np.roll(poly, -1, axis=0) - poly
        rel = pts[:, None] - poly[None]
        inside |= np.all(edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0] >= 0, 1)
    return inside.reshape(size, size)


@pytest.mark.parametrize("size", [48, 64, 96])
@pytest.mark.parametrize(("shape", "sides"), [("triangle", 3), ("square", 4), ("star", 12)])
def test_painted_shapes_exact(shape, sides, size):
    assert polygon_sides(jp.data.paint(shape, size)[1].reshape(size, size)) == sides


def test_blank_and_full_images_have_no_sides():
    assert polygon_sides(np.zeros((64, 64))) == 0
    assert polygon_sides(np.ones((64, 64))) == 0


@pytest.mark.parametrize("phase", np.linspace(0.05, 1.0, 6))
def test_rotated_shapes(phase):
    assert polygon_sides(_raster([_regular(3, 0.4, phase)], 64)) == 3
    assert polygon_sides(_raster([_regular(4, 0.35, phase)], 64)) == 4
    assert polygon_sides(_raster([_regular(5, 0.35, phase)], 64)) == 5
    star = [_regular(3, 0.4, phase), _regular(3, 0.4, phase + np.pi)]
    assert polygon_sides(_raster(star, 64)) == 12


def test_frame_sides_do_not_count_and_components_and_holes_add_up():
    img = np.zeros((40, 40), bool)
    img[:, :15] = True  # half-plane: 1 painted side, the rest is the frame
    assert polygon_sides(img) == 1
    two = np.zeros((40, 40), bool)
    two[5:15, 5:15] = two[22:35, 20:30] = True
    assert polygon_sides(two) == 8
    ring = np.zeros((40, 40), bool)
    ring[5:35, 5:35] = True
    ring[15:25, 15:25] = False
    assert polygon_sides(ring) == 8
    speck = np.zeros((40, 40), bool)
    speck[3, 3] = True  # below min_area
    assert polygon_sides(speck) == 0


def test_bad_input_raises():
    with pytest.raises(ValueError, match="image: expected a non-empty 2-D"):
        polygon_sides(np.zeros(5))
    with pytest.raises(ValueError, match="tolerance"):
        polygon_sides(np.zeros((4, 4)), tolerance=0)
    with pytest.raises(ValueError, match="min_turn"):
        polygon_sides(np.zeros((4, 4)), min_turn=180)
    with pytest.raises(ValueError, match="predictions: expected 16 values"):
        painted_image(np.zeros(15), 4)
