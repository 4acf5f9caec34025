import numpy as np
import pytest

import jaxprune as jp
from jaxprune.analysis import POLYGON_MIN_SIZE, painted_image, polygon_sides


def _raster(poly, size, shift=(0.0, 0.0)):
    """Our own rasterizer: even-odd point-in-polygon test on the pixel centres of a
    ``size x size`` image of ``[-0.5, 0.5]^2`` (independent of ``jaxprune.data.paint``)."""
    centres = (np.arange(size) + 0.5) / size - 0.5
    x, y = np.meshgrid(centres - shift[0], centres - shift[1])
    inside = np.zeros(x.shape, bool)
    for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            inside ^= crosses & (x < x0 + (y - y0) * (x1 - x0) / (y1 - y0))
    return inside


def _rotate(poly, angle):
    c, s = np.cos(angle), np.sin(angle)
    return poly @ np.array([[c, s], [-s, c]])


def _regular(n, radius):
    t = 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _star(radius):  # the six-pointed star as one 12-vertex polygon (inner radius R / sqrt 3)
    r = np.where(np.arange(12) % 2 == 0, radius, radius / np.sqrt(3))
    t = np.pi * np.arange(12) / 6
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


_L = [[-1, -1], [1, -1], [1, -0.3], [-0.3, -0.3], [-0.3, 1], [-1, 1]]
_T = [[-1, 0.4], [-1, 1], [1, 1], [1, 0.4], [0.3, 0.4], [0.3, -1], [-0.3, -1], [-0.3, 0.4]]
_ARROW = [[-1, -0.3], [0.2, -0.3], [0.2, -0.8], [1, 0], [0.2, 0.8], [0.2, 0.3], [-1, 0.3]]

# name: (polygon in [-0.5, 0.5]^2, its true number of sides)
SHAPES = {
    **{f"{n}-gon": (_regular(n, 0.4), n) for n in range(3, 9)},
    "star": (_star(0.4), 12),
    "L": (0.3 * np.array(_L), 6),
    "T": (0.3 * np.array(_T), 8),
    "arrow": (0.38 * np.array(_ARROW), 7),
}
# every rotation class of the 3- to 8-gons and the star is hit within [0, pi/3); 0.2 rad is
# the issue's failing star; the shifts move the shape by fractions of a pixel
ROTATIONS = (0.0, 0.2, 0.37, 0.55, 0.71, 0.9, 1.05, 2.3, 3.9, 5.5)


def _case(name, size, k):
    poly, sides = SHAPES[name]
    shift = (0.37 * np.sin(3.1 * k) / size, 0.43 * np.cos(1.7 * k) / size)
    return _raster(_rotate(poly, ROTATIONS[k]), size, shift), sides


@pytest.mark.parametrize("size", [32, 48, 64])
@pytest.mark.parametrize("name", list(SHAPES))
def test_sides_exact_at_small_sizes_and_every_rotation(name, size):
    got = []
    for k in range(len(ROTATIONS)):
        image, sides = _case(name, size, k)
        got.append(polygon_sides(image))
    assert got == [sides] * len(ROTATIONS)


@pytest.mark.parametrize("size", [96, 128])
@pytest.mark.parametrize("name", list(SHAPES))
def test_sides_exact_at_large_sizes(name, size):
    got, want = [], []
    for k in (1, 4, 8):
        image, sides = _case(name, size, k)
        got.append(polygon_sides(image))
        want.append(sides)
    assert got == want


def test_issue_case_star_at_32px_rotated_by_0_2_rad():
    # the star of jaxprune.data.paint (two triangles, grid over [-0.5, 0.5]) rotated by 0.2
    # rad, which the previous counter read as 10 sides
    star = [_rotate(tri, 0.2) for tri in jp.data.shape_polygons("star")]
    image = _raster(star[0], 32) | _raster(star[1], 32)
    assert polygon_sides(image) == 12


@pytest.mark.parametrize("size", [32, 48, 64, 96])
@pytest.mark.parametrize(("shape", "sides"), [("triangle", 3), ("square", 4), ("star", 12)])
def test_painted_shapes_exact(shape, sides, size):
    assert polygon_sides(jp.data.paint(shape, size)[1].reshape(size, size)) == sides


def test_small_turns_are_not_corners_unless_asked():
    # a square whose top side bends outward by 10 degrees in its middle: 5 sides, 4 corners
    # turning by 90 degrees or more and one by 10
    h = 0.3 * np.tan(np.radians(5))
    poly = np.array([[-0.3, -0.3], [0.3, -0.3], [0.3, 0.3], [0.0, 0.3 + h], [-0.3, 0.3]])
    image = _raster(poly, 96)
    assert polygon_sides(image) == 4
    assert polygon_sides(image, min_turn=0) == 5


def test_blank_and_full_images_have_no_sides():
    assert polygon_sides(np.zeros((32, 32))) == 0
    assert polygon_sides(np.ones((64, 64))) == 0


def test_frame_sides_do_not_count_and_components_and_holes_add_up():
    img = np.zeros((40, 40), bool)
    img[:, :15] = True  # half-plane: 1 painted side, the rest is the frame
    assert polygon_sides(img) == 1
    assert polygon_sides(np.tri(32)) == 1  # a 45-degree half-plane
    corner = np.zeros((40, 40), bool)
    corner[:20, :25] = True  # a rectangle in the corner: 2 painted sides
    assert polygon_sides(corner) == 2
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
    assert POLYGON_MIN_SIZE == 32
    with pytest.raises(ValueError, match="image: expected a 2-D"):
        polygon_sides(np.zeros(5))
    with pytest.raises(ValueError, match=r"image: expected at least 32 x 32 pixels.*\(20, 64\)"):
        polygon_sides(np.zeros((20, 64)))
    with pytest.raises(ValueError, match="min_turn"):
        polygon_sides(np.zeros((32, 32)), min_turn=90)
    with pytest.raises(ValueError, match="min_area"):
        polygon_sides(np.zeros((32, 32)), min_area=-1)
    with pytest.raises(ValueError, match="predictions: expected 16 values"):
        painted_image(np.zeros(15), 4)
