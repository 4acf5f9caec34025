"""Image augmentation in JAX: pure functions of ``(key, images)``, jittable, run on device.

Every function takes a batch ``(n, H, W, C)`` and draws one independent choice per image from
``key`` (``jax.random.split(key, n)``), so the same key gives the same batch and labels are never
touched (the caller keeps them as they are).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["center_crop", "cifar_augment", "imagenet_augment", "random_flip"]


def _check_batch(images, fn: str) -> None:
    if getattr(images, "ndim", None) != 4:
        shape = getattr(images, "shape", None)
        raise ValueError(f"{fn}: images: expected a batch (n, H, W, C), got shape {shape}")


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Flips each image left-right with probability 1/2 (paper 004's only augmentation).

    Args:
      key: a JAX PRNG key.
      images: ``(n, H, W, C)``, any dtype (kept).

    Returns:
      The batch with a random subset of images mirrored along the width axis.

    >>> import jax, jax.numpy as jnp
    >>> x = jnp.arange(6.0).reshape(1, 1, 6, 1)
    >>> out = random_flip(jax.random.key(0), jnp.concatenate([x] * 8))
    >>> sorted({tuple(r) for r in out[:, 0, :, 0].tolist()})
    [(0.0, 1.0, 2.0, 3.0, 4.0, 5.0), (5.0, 4.0, 3.0, 2.0, 1.0, 0.0)]

    References:
      Paper 004, App. C.2, Fig. 26 ("Augmentation: Random Flip").
    """
    _check_batch(images, "random_flip")
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def cifar_augment(key: jax.Array, images: jax.Array, *, padding: int = 4) -> jax.Array:
    """CIFAR's standard augmentation: zero-pad by ``padding``, random crop back, random flip.

    Args:
      key: a JAX PRNG key.
      images: ``(n, H, W, C)``, any dtype (kept).
      padding: pixels of zeros added on each side before the crop (4 for CIFAR).

    Returns:
      ``(n, H, W, C)``: each image a window of its padded copy, mirrored with probability 1/2.

    >>> import jax, jax.numpy as jnp
    >>> x = jnp.ones((2, 32, 32, 3))
    >>> cifar_augment(jax.random.key(0), x).shape
    (2, 32, 32, 3)

    References:
      He et al. 2016, "Deep residual learning", sec. 4.2 (the CIFAR recipe paper 004's
      ResNet-56 follows).
    """
    _check_batch(images, "cifar_augment")
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding: expected an int >= 0, got {padding!r}")
    n, h, w, c = images.shape
    k_crop, k_flip = jax.random.split(key)
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * padding + 1)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
    return random_flip(k_flip, jax.vmap(crop)(padded, offsets))


def center_crop(images: jax.Array, size: int) -> jax.Array:
    """The central ``size x size`` window of each image (ImageNet evaluation).

    Args:
      images: ``(n, H, W, C)`` with ``H, W >= size``.
      size: side of the square crop.

    Returns:
      ``(n, size, size, C)``, same dtype.

    >>> import jax.numpy as jnp
    >>> center_crop(jnp.arange(16).reshape(1, 4, 4, 1), 2)[0, :, :, 0].tolist()
    [[5, 6], [9, 10]]

    References:
      Paper 004, App. C.2, Fig. 27 ("Center Crop (224 px.)"); Krizhevsky et al. 2012.
    """
    _check_batch(images, "center_crop")
    _, h, w, _ = images.shape
    if size > min(h, w) or size < 1:
        raise ValueError(f"size: expected 1 <= size <= {min(h, w)} (the image side), got {size}")
    top, left = (h - size) // 2, (w - size) // 2
    return images[:, top : top + size, left : left + size]


def _resized_crop(image, box, size):
    """Bilinear resize of the window ``box = (top, left, height, width)`` to ``size x size``."""
    top, left, height, width = box
    scale = jnp.stack([size / height, size / width])
    translation = -jnp.stack([top, left]) * scale
    out = jax.image.scale_and_translate(
        image.astype(jnp.float32), (size, size, image.shape[-1]), (0, 1), scale, translation,
        method="linear", antialias=True,
    )  # fmt: skip
    return out


def imagenet_augment(
    key: jax.Array,
    images: jax.Array,
    size: int = 224,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> jax.Array:
    """ImageNet training crops: a random-resized crop to ``size x size``, then a random flip.

    Each image gets a window of area ``U(scale) * H * W`` and aspect ratio ``exp(U(log ratio))``
    (clipped to the image), resized bilinearly (with antialiasing) to ``size x size``, as
    torchvision's ``RandomResizedCrop`` (its 10 rejection tries become one clipped draw, so
    the shape is static under ``jit``). Evaluation uses :func:`center_crop`.

    Args:
      key: a JAX PRNG key.
      images: ``(n, H, W, C)`` (uint8 pixels or floats).
      size: output side (224 for the ImageNet networks).
      scale: range of the window's area as a fraction of the image's.
      ratio: range of the window's width / height.

    Returns:
      float32 ``(n, size, size, C)`` in the input's value range.

    >>> import jax, jax.numpy as jnp
    >>> imagenet_augment(jax.random.key(0), jnp.ones((2, 64, 48, 3), jnp.uint8), 32).shape
    (2, 32, 32, 3)

    References:
      Szegedy et al. 2015 ("Going deeper with convolutions", sec. 6), torchvision's
      ``RandomResizedCrop``; paper 002's ImageNet-size networks (VGG16, MobileNet, ResNet-50).
    """
    _check_batch(images, "imagenet_augment")
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"scale: expected 0 < low <= high <= 1, got {scale}")
    if not 0.0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio: expected 0 < low <= high, got {ratio}")
    n, h, w, _ = images.shape
    k_area, k_ratio, k_pos, k_flip = jax.random.split(key, 4)
    area = jax.random.uniform(k_area, (n,), minval=scale[0], maxval=scale[1]) * h * w
    log_r = jax.random.uniform(
        k_ratio, (n,), minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1])
    )  # fmt: skip
    aspect = jnp.exp(log_r)
    width = jnp.clip(jnp.sqrt(area * aspect), 1.0, w)
    height = jnp.clip(jnp.sqrt(area / aspect), 1.0, h)
    pos = jax.random.uniform(k_pos, (n, 2))
    top = pos[:, 0] * (h - height)
    left = pos[:, 1] * (w - width)
    boxes = (top, left, height, width)
    crops = jax.vmap(_resized_crop, in_axes=(0, 0, None))(images, boxes, size)
    return random_flip(k_flip, crops)
