"""Per-example losses by name."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

__all__ = ["LossFn", "get_loss"]

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
"""``loss(predictions, targets) -> per-example losses`` of shape ``(batch,)``."""


def _mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    diff = pred - target
    return jnp.mean(diff * diff, axis=tuple(range(1, diff.ndim)))


def _cross_entropy(logits: jax.Array, target: jax.Array) -> jax.Array:
    if jnp.issubdtype(target.dtype, jnp.integer):
        return optax.softmax_cross_entropy_with_integer_labels(logits, target.reshape(-1))
    return optax.softmax_cross_entropy(logits, target)


def _binary_cross_entropy(prob: jax.Array, target: jax.Array) -> jax.Array:
    p = jnp.clip(prob, 1e-7, 1 - 1e-7)  # Keras' epsilon; probabilities from a sigmoid head
    bce = -(target * jnp.log(p) + (1 - target) * jnp.log1p(-p))
    return jnp.mean(bce, axis=tuple(range(1, bce.ndim)))


_LOSSES: dict[str, LossFn] = {
    "mse": _mse,
    "cross_entropy": _cross_entropy,
    "binary_cross_entropy": _binary_cross_entropy,
}


def get_loss(loss: str | LossFn) -> LossFn:
    """Resolves a loss name to a per-example loss function.

    Names: ``"mse"`` (mean over output dims of squared error, as Keras' ``mse``),
    ``"cross_entropy"`` (softmax cross-entropy on logits; integer labels or one-hot targets),
    ``"binary_cross_entropy"`` (on probabilities). A callable is returned unchanged.

    >>> import jax.numpy as jnp
    >>> get_loss("mse")(jnp.array([[1.0], [0.0]]), jnp.array([[0.0], [0.0]])).tolist()
    [1.0, 0.0]
    """
    if callable(loss):
        return loss
    try:
        return _LOSSES[loss]
    except (KeyError, TypeError):
        raise ValueError(
            f"loss: unknown loss {loss!r}; expected one of {sorted(_LOSSES)} "
            "or a callable(pred, target) -> per-example losses"
        ) from None
