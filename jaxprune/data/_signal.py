"""The synthetic signal-in-noise classification task of paper 002 (sec. 1.1, App. A)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["signal_task"]


def _draw(key, n, alpha, dim, bits):
    k_y, k_x = jax.random.split(key)
    y = jax.random.randint(k_y, (n,), 0, 2**bits)
    code = (y[:, None] >> jnp.arange(bits - 1, -1, -1)) & 1  # most significant bit first
    signal = alpha * (2.0 * code - 1.0)
    noise = jax.random.normal(k_x, (n, dim - bits))
    return jnp.concatenate([signal, noise], axis=1).astype(jnp.float32), y.astype(jnp.int32)


def signal_task(
    n_train: int = 256,
    n_test: int = 4096,
    alpha: float = 1.0,
    dim: int = 128,
    bits: int = 3,
    *,
    key: jax.Array,
) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """Labels ``y`` uniform in ``0..2**bits - 1`` coded in binary by the first ``bits`` inputs.

    Each of the first ``bits`` coordinates is ``-alpha`` or ``+alpha`` following the binary code
    of ``y`` (most significant bit first: class 5 gives ``(+a, -a, +a)``); the other
    ``dim - bits`` coordinates are i.i.d. N(0, 1) noise. ``alpha`` is the signal strength (Table 1:
    0.5, 1, 2). The paper does not give the test-set size; 4,096 is our choice.

    Args:
      n_train: training examples (paper: 256).
      n_test: test examples.
      alpha: signal strength.
      dim: input dimension (paper: 128).
      bits: signal coordinates (paper: 3, so 8 classes).
      key: PRNG key (the train and test sets use independent halves of it).

    Returns:
      ``((x_train, y_train), (x_test, y_test))``: float32 ``(n, dim)`` and int32 ``(n,)``.

    Raises:
      ValueError: on non-positive sizes or ``bits`` not in ``1..dim``.

    >>> import jax
    >>> (x, y), _ = signal_task(n_train=4, n_test=1, alpha=2.0, key=jax.random.key(0))
    >>> x.shape, bool(((x[:, 0] > 0) == (y >= 4)).all()), float(abs(x[0, 1]))
    ((4, 128), True, 2.0)

    References:
      Paper 002, sec. 1.1 ("Synthetic Data Example") and App. A (alpha = 0.5).
    """
    for name, value in (("n_train", n_train), ("n_test", n_test), ("dim", dim)):
        if int(value) < 1:
            raise ValueError(f"{name}: must be >= 1, got {value}")
    if not 1 <= int(bits) <= int(dim):
        raise ValueError(f"bits: expected 1 <= bits <= dim={dim}, got {bits}")
    k_train, k_test = jax.random.split(key)
    return (
        _draw(k_train, int(n_train), alpha, int(dim), int(bits)),
        _draw(k_test, int(n_test), alpha, int(dim), int(bits)),
    )
