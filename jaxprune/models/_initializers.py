"""Weight initializers of paper 003: Glorot normal, He normal and Signed He Constant."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["INITIALIZERS", "fan_in", "get_initializer", "signed_he_constant"]

Initializer = Callable[..., jax.Array]

INITIALIZERS = ("glorot_normal", "he_normal", "signed_he_constant")
"""Names accepted by :func:`get_initializer` (the three distributions of paper 003, sec. 2.2)."""


def fan_in(shape: tuple[int, ...]) -> int:
    """Incoming connections of one output unit: ``prod(shape[:-1])``.

    Dense kernels are ``(in, out)``, convolution kernels ``(kh, kw, in, out)`` (Flax layout), so
    both give ``n_{l-1}`` of paper 003 (the receptive field size times the input channels for a
    convolution, as in Keras' and JAX's ``fan_in``).

    >>> fan_in((3, 3, 16, 32)), fan_in((784, 300))
    (144, 784)
    """
    if len(shape) < 2:
        raise ValueError(f"shape: expected a kernel of rank >= 2 (..., in, out), got {shape}")
    return int(np.prod(shape[:-1]))


def signed_he_constant(p: float = 0.5) -> Initializer:
    """Signed He Constant: every weight is ``±sqrt(2 / fan_in)``, positive with probability ``p``.

    Args:
      p: probability that a weight is positive (0.5: the symmetric distribution of sec. 2.2;
        other values give the sign-imbalanced networks of sec. 2.4). ``p = 1`` makes every weight
        positive, ``p = 0`` every weight negative.

    Returns:
      A JAX initializer ``init(key, shape, dtype=float32) -> array``.

    Raises:
      ValueError: if ``p`` is not a number in ``[0, 1]``.

    >>> import jax
    >>> w = signed_he_constant(1.0)(jax.random.key(0), (8, 2))
    >>> bool((w == 0.5).all())  # sqrt(2 / 8)
    True

    References:
      Paper 003, sec. 2.2 (Signed He Constant, after Ramanujan et al.) and sec. 2.4 (sign
      imbalance ``p``).
    """
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"p: expected a probability in [0, 1], got {p!r}") from None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        shape = tuple(shape)
        magnitude = np.sqrt(2.0 / fan_in(shape))
        positive = jax.random.bernoulli(key, p, shape)
        return jnp.where(positive, magnitude, -magnitude).astype(dtype)

    return init


def get_initializer(name: str | Initializer, p: float = 0.5) -> Initializer:
    """Resolves an initializer name of paper 003 (a callable is returned unchanged).

    ``"glorot_normal"`` and ``"he_normal"`` are JAX's (truncated normal with variance
    ``2 / (fan_in + fan_out)`` and ``2 / fan_in``, as Keras' initializers of the same names that
    the paper's code uses); ``"signed_he_constant"`` is :func:`signed_he_constant` with ``p``.

    Args:
      name: one of :data:`INITIALIZERS`, or a JAX initializer.
      p: probability of a positive sign, only for ``"signed_he_constant"``.

    Returns:
      A JAX initializer.

    Raises:
      ValueError: on an unknown name, or ``p`` outside ``[0, 1]``.

    >>> import jax
    >>> w = get_initializer("he_normal")(jax.random.key(0), (1000, 50))
    >>> round(float(w.std() ** 2 * 1000), 1)  # ~ 2 (truncation is compensated)
    2.0

    References:
      Paper 003, sec. 2.2 (Glorot normal [4], He normal [6], Signed He Constant [13]).
    """
    if callable(name):
        return name
    if name == "glorot_normal":
        return jax.nn.initializers.glorot_normal()
    if name == "he_normal":
        return jax.nn.initializers.he_normal()
    if name == "signed_he_constant":
        return signed_he_constant(p)
    raise ValueError(
        f"init: unknown initializer {name!r}; expected one of {INITIALIZERS} "
        "or a callable(key, shape, dtype)"
    )
