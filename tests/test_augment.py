"""On-device augmentation: crops are crops, flips are flips, one key gives one batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp


def _arange_batch(n=16, h=6, w=5, c=2):
    return jnp.arange(n * h * w * c, dtype=jnp.float32).reshape(n, h, w, c) + 1.0


def _windows(padded, h, w):
    """Every h x w window of one padded image and its mirror image, as numpy arrays."""
    out = []
    for top in range(padded.shape[0] - h + 1):
        for left in range(padded.shape[1] - w + 1):
            win = padded[top : top + h, left : left + w]
            out += [win, win[:, ::-1]]
    return out


def test_cifar_augment_is_a_window_of_the_zero_padded_image_or_its_mirror():
    x = _arange_batch()
    out = np.asarray(jp.data.cifar_augment(jax.random.key(0), x, padding=2))
    assert out.shape == x.shape and out.dtype == np.float32
    shifted = flipped = 0
    for img, res in zip(np.asarray(x), out, strict=True):
        padded = np.pad(img, ((2, 2), (2, 2), (0, 0)))
        matches = [k for k, win in enumerate(_windows(padded, 6, 5)) if np.array_equal(win, res)]
        assert len(matches) == 1  # arange pixels: exactly one window (and side) matches
        shifted += matches[0] // 2 != (2 * 5 + 2)  # not the centred (untouched) window
        flipped += matches[0] % 2
    assert 0 < flipped < len(out) and shifted > 0


def test_augmentations_are_deterministic_under_a_key_and_differ_across_keys():
    x = _arange_batch(n=32, h=8, w=8, c=1)
    for fn in (
        jp.data.random_flip,
        jp.data.cifar_augment,
        lambda k, v: jp.data.imagenet_augment(k, v, 6),
    ):
        a, b = fn(jax.random.key(1), x), jax.jit(fn)(jax.random.key(1), x)
        np.testing.assert_allclose(a, b, rtol=1e-6)
        assert not np.allclose(a, fn(jax.random.key(2), x))


def test_random_flip_mirrors_the_width_axis_of_about_half_the_images():
    x = _arange_batch(n=64)
    out = np.asarray(jp.data.random_flip(jax.random.key(3), x))
    same = [np.array_equal(o, i) for o, i in zip(out, np.asarray(x), strict=True)]
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, np.asarray(x), strict=True)]
    assert all(s != m for s, m in zip(same, mirrored, strict=True))
    assert 16 < sum(mirrored) < 48


def test_imagenet_augment_with_the_full_window_is_a_resize_of_the_whole_image():
    x = jax.random.uniform(jax.random.key(0), (8, 12, 12, 3)) * 255
    out = jp.data.imagenet_augment(jax.random.key(4), x, 5, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    resized = jax.image.resize(x, (8, 5, 5, 3), "linear", antialias=True)
    for o, r in zip(np.asarray(out), np.asarray(resized), strict=True):
        assert np.allclose(o, r, atol=1e-3) or np.allclose(o, r[:, ::-1], atol=1e-3)


def test_imagenet_augment_crops_a_constant_region_to_that_constant():
    # left half 0, right half 200: a window that lies in one half resizes to a constant image
    x = jnp.concatenate([jnp.zeros((64, 20, 20, 1)), jnp.full((64, 20, 20, 1), 200.0)], 2)
    out = np.asarray(jp.data.imagenet_augment(jax.random.key(5), x, 4, scale=(0.02, 0.05)))
    flat = out.reshape(64, -1)
    const = np.ptp(flat, axis=1) < 1e-3
    assert const.sum() > 10
    assert set(np.round(flat[const, 0]).tolist()) <= {0.0, 200.0}


def test_center_crop_and_bad_batches():
    x = _arange_batch(n=2, h=7, w=9, c=1)
    np.testing.assert_array_equal(jp.data.center_crop(x, 3), x[:, 2:5, 3:6])
    with pytest.raises(ValueError, match="size: expected 1 <= size <= 7"):
        jp.data.center_crop(x, 8)
    with pytest.raises(ValueError, match=r"cifar_augment: images: expected a batch \(n, H, W, C\)"):
        jp.data.cifar_augment(jax.random.key(0), x[0])
    with pytest.raises(ValueError, match="padding: expected an int >= 0"):
        jp.data.cifar_augment(jax.random.key(0), x, padding=-1)
