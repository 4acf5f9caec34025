"""A jitted train step built from any Flax model, loss and optax transformation."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxprune._losses import LossFn, get_loss
from jaxprune._types import Params

__all__ = ["batch_loss", "evaluate", "make_train_step"]


def batch_loss(
    apply_fn: Callable,
    loss_fn: LossFn,
    params: Params,
    x: jax.Array,
    y: jax.Array,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Weighted mean of per-example losses (``weights`` 0 marks padding rows)."""
    per_example = loss_fn(apply_fn({"params": params}, x), y)
    if weights is None:
        return jnp.mean(per_example)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1)


def _step_fn(model, loss_fn: LossFn, optimizer: optax.GradientTransformation):
    """The pure (unjitted) step shared by the single-device and data-parallel builders."""

    def step(params, opt_state, batch):
        value, grads = jax.value_and_grad(lambda p: batch_loss(model.apply, loss_fn, p, *batch))(
            params
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": value}

    return step


def make_train_step(
    model, loss: str | LossFn, optimizer: optax.GradientTransformation, *, jit: bool = True
):
    """Builds ``step(params, opt_state, batch) -> (params, opt_state, metrics)``.

    The step computes the mean loss on ``batch = (x, y)`` (or ``(x, y, weights)``), its gradient,
    runs ``optimizer`` and applies the updates. It has no side effects, so it can be ``vmap``-ed
    over seeds or ``scan``-ned over batches; ``metrics`` is ``{"loss": loss_before_update}``.

    Args:
      model: a Flax linen module (anything with ``.apply({"params": p}, x)``).
      loss: a loss name (see :func:`get_loss`) or ``fn(pred, target) -> per-example losses``.
      optimizer: any optax transformation; transforms that need ``params`` receive them.
      jit: wrap the step in ``jax.jit`` (donating nothing, so inputs remain valid).

    >>> import jax, optax, jaxprune as jp
    >>> x, y = jp.data.paint("square", size=8)
    >>> model = jp.models.MLP(hidden=(3,))
    >>> params = model.init(jax.random.key(0), x)["params"]
    >>> tx = optax.adam(1e-2)
    >>> step = jp.training.make_train_step(model, "mse", tx)
    >>> state = (params, tx.init(params))
    >>> for _ in range(50):
    ...     *state, metrics = step(*state, (x, y))
    >>> bool(metrics["loss"] < jp.training.evaluate(model, params, (x, y), "mse"))
    True
    """
    step = _step_fn(model, get_loss(loss), optimizer)
    return jax.jit(step) if jit else step


def evaluate(model, params: Params, data, loss: str | LossFn = "mse") -> jax.Array:
    """Mean loss of ``model`` with ``params`` on ``data = (x, y)`` (one full batch)."""
    x, y = data
    return batch_loss(model.apply, get_loss(loss), params, jnp.asarray(x), jnp.asarray(y))
