"""Per-example losses by name, each checking the shapes of its predictions and targets."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

__all__ = ["LossFn", "accuracy", "get_loss"]

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
"""``loss(predictions, targets) -> per-example losses`` of shape ``(batch,)``."""

_RULE = "expected equal shapes (a trailing axis of size 1 on one side only is dropped)"


def _batch_mean(a: jax.Array) -> jax.Array:
    return jnp.mean(a, axis=tuple(range(1, a.ndim)))


def _matched(name: str, pred: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(pred, target)`` of one shape: equal shapes, or one side's trailing axis of size 1
    dropped when that makes them equal (Keras' rule). Anything else is an error naming both
    shapes: broadcasting ``(N, 1)`` against ``(N,)`` would compare every row with every row."""
    pred, target = jnp.asarray(pred), jnp.asarray(target)
    p, t = pred.shape, target.shape
    if p == t and pred.ndim >= 1:
        return pred, target
    if pred.ndim == target.ndim + 1 and p[-1:] == (1,) and p[:-1] == t and target.ndim >= 1:
        return pred[..., 0], target
    if target.ndim == pred.ndim + 1 and t[-1:] == (1,) and t[:-1] == p and pred.ndim >= 1:
        return pred, target[..., 0]
    raise ValueError(
        f"loss {name!r}: predictions of shape {p} and targets of shape {t} do not match; "
        f"{_RULE}, with a leading batch axis"
    )


def _labels(name: str, logits: jax.Array, target: jax.Array) -> jax.Array:
    """Integer class labels of shape ``logits.shape[:-1]`` (a trailing axis of size 1 dropped),
    or targets of the logits' own shape (one-hot or probabilities, any dtype)."""
    lshape, t = logits.shape, target.shape
    if logits.ndim < 2 or lshape[-1] < 2:
        raise ValueError(
            f"loss {name!r}: logits of shape {lshape} need a batch axis and at least 2 classes "
            f"on the last axis (targets of shape {t}); softmax over one class is always 1, so "
            "the loss would be 0: use 'binary_cross_entropy' on a sigmoid output instead"
        )
    if jnp.issubdtype(target.dtype, jnp.integer):
        if t == lshape[:-1]:
            return target
        if t == (*lshape[:-1], 1):
            return target[..., 0]
        raise ValueError(
            f"loss {name!r}: logits of shape {lshape} and integer labels of shape {t} do not "
            f"match; expected labels of shape {lshape[:-1]} (or {(*lshape[:-1], 1)})"
        )
    if t != lshape:
        raise ValueError(
            f"loss {name!r}: logits of shape {lshape} and {target.dtype} targets of shape {t} "
            f"do not match; expected one-hot/probability targets of shape {lshape}, or integer "
            f"class labels of shape {lshape[:-1]}"
        )
    return target


def _mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    pred, target = _matched("mse", pred, target)
    diff = pred - target
    return _batch_mean(diff * diff)


def _cross_entropy(logits: jax.Array, target: jax.Array) -> jax.Array:
    logits, target = jnp.asarray(logits), jnp.asarray(target)
    target = _labels("cross_entropy", logits, target)
    if jnp.issubdtype(target.dtype, jnp.integer):
        return _batch_mean(optax.softmax_cross_entropy_with_integer_labels(logits, target))
    return _batch_mean(optax.softmax_cross_entropy(logits, target.astype(logits.dtype)))


def _binary_cross_entropy(prob: jax.Array, target: jax.Array) -> jax.Array:
    prob, target = _matched("binary_cross_entropy", prob, target)
    target = target.astype(prob.dtype)
    p = jnp.clip(prob, 1e-7, 1 - 1e-7)  # Keras' epsilon; probabilities from a sigmoid head
    return _batch_mean(-(target * jnp.log(p) + (1 - target) * jnp.log1p(-p)))


_LOSSES: dict[str, LossFn] = {
    "mse": _mse,
    "cross_entropy": _cross_entropy,
    "binary_cross_entropy": _binary_cross_entropy,
}


def get_loss(loss: str | LossFn) -> LossFn:
    """Resolves a loss name to a per-example loss function.

    Names: ``"mse"`` (mean over output dims of squared error, as Keras' ``mse``),
    ``"cross_entropy"`` (softmax cross-entropy on logits ``(N, ..., C)`` with ``C >= 2``;
    integer labels ``(N, ...)`` or ``(N, ..., 1)``, or one-hot/probability targets of the
    logits' shape; the mean over any positions between batch and classes),
    ``"binary_cross_entropy"`` (on probabilities, clipped to ``[1e-7, 1 - 1e-7]``). A callable
    is returned unchanged.

    Shapes are checked when the loss is traced (they are static, so this works under ``jit``):
    ``mse`` and ``binary_cross_entropy`` need predictions and targets of one shape, except that
    a trailing axis of size 1 on one side only is dropped (Keras' rule: ``(N, 1)`` predictions
    against ``(N,)`` targets). Anything else raises rather than broadcasting ``(N, 1)`` against
    ``(N,)`` to ``(N, N)``, which compares every prediction with every target.

    Raises:
      ValueError: for an unknown name; the returned function raises ``ValueError`` naming both
        shapes when predictions and targets do not match.

    >>> import jax.numpy as jnp
    >>> get_loss("mse")(jnp.array([[1.0], [0.0]]), jnp.array([[0.0], [0.0]])).tolist()
    [1.0, 0.0]
    >>> get_loss("mse")(jnp.array([[1.0], [0.0]]), jnp.array([0.0, 0.0])).tolist()
    [1.0, 0.0]
    >>> get_loss("mse")(jnp.ones((2, 3)), jnp.ones(2))
    Traceback (most recent call last):
    ...
    ValueError: loss 'mse': predictions of shape (2, 3) and targets of shape (2,) do not match; expected equal shapes (a trailing axis of size 1 on one side only is dropped), with a leading batch axis
    """  # noqa: E501
    if callable(loss):
        return loss
    try:
        return _LOSSES[loss]
    except (KeyError, TypeError):
        raise ValueError(
            f"loss: unknown loss {loss!r}; expected one of {sorted(_LOSSES)} "
            "or a callable(pred, target) -> per-example losses"
        ) from None


def accuracy(pred: jax.Array, target: jax.Array, loss: str | LossFn) -> jax.Array:
    """Share of correct predictions, read the way ``loss`` reads the model's outputs.

    ``"binary_cross_entropy"``: probabilities above 0.5 against targets above 0.5 (the mean over
    every output). Otherwise (``"cross_entropy"``, a callable): the argmax over the last axis of
    ``C >= 2`` outputs against integer labels or the targets' argmax. The argmax of a single
    output is always 0, so a single output with any other loss is an error naming ``loss``.
    Shapes follow the loss's rules. Works under ``jit``.

    >>> import jax.numpy as jnp
    >>> float(accuracy(jnp.array([[0.9], [0.2]]), jnp.array([1, 1]), "binary_cross_entropy"))
    0.5
    """
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", "callable")
    pred, target = jnp.asarray(pred), jnp.asarray(target)
    if loss == "binary_cross_entropy":
        pred, target = _matched(name, pred, target)
        return jnp.mean((pred > 0.5) == (target > 0.5))
    if pred.ndim < 2 or pred.shape[-1] < 2:
        raise ValueError(
            f"loss {name!r}: accuracy of predictions of shape {pred.shape} is not defined: the "
            "argmax of one output is always 0; for a sigmoid output use loss="
            "'binary_cross_entropy', else pass C >= 2 class outputs"
        )
    labels = _labels(name, pred, target)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        labels = jnp.argmax(labels, axis=-1)
    return jnp.mean(jnp.argmax(pred, axis=-1) == labels)
