"""Keras-style early stopping as a pure, jittable state update."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxprune._types import Params

__all__ = ["EarlyStoppingState", "early_stopping_init", "early_stopping_update"]


class EarlyStoppingState(NamedTuple):
    """State of early stopping on a monitored loss (lower is better)."""

    best_loss: jax.Array  # float scalar, +inf before the first epoch
    best_params: Params  # params after the best epoch (restored at the end)
    best_epoch: jax.Array  # int32 scalar, -1 before the first epoch
    wait: jax.Array  # epochs since the last improvement
    done: jax.Array  # bool scalar


def early_stopping_init(params: Params) -> EarlyStoppingState:
    """Initial state: nothing seen yet."""
    return EarlyStoppingState(
        best_loss=jnp.asarray(jnp.inf, jnp.float32),
        best_params=params,
        best_epoch=jnp.asarray(-1, jnp.int32),
        wait=jnp.asarray(0, jnp.int32),
        done=jnp.asarray(False),
    )


def early_stopping_update(
    state: EarlyStoppingState,
    loss: jax.Array,
    params: Params,
    epoch: jax.Array,
    *,
    patience: ArrayLike,
    min_delta: ArrayLike = 0.0,
) -> EarlyStoppingState:
    """Records one epoch's monitored ``loss`` (Keras ``EarlyStopping(monitor="loss")`` semantics).

    An epoch *improves* when ``loss < best_loss - min_delta``; then ``best_params`` becomes
    ``params`` and ``wait`` resets to 0, otherwise ``wait`` grows by one. Training is ``done``
    once ``wait >= patience``: the minimum so far has not improved for ``patience`` epochs
    (paper 000, sec. 3.2: patience 20). A NaN loss never improves.

    >>> import jax.numpy as jnp
    >>> s = early_stopping_init(jnp.zeros(()))
    >>> for e, l in enumerate([3.0, 2.0, 2.5, 2.1]):
    ...     s = early_stopping_update(s, jnp.float32(l), jnp.float32(e), e, patience=2)
    >>> float(s.best_loss), int(s.best_epoch), int(s.wait), bool(s.done), float(s.best_params)
    (2.0, 1, 2, True, 1.0)
    """
    loss = jnp.asarray(loss, jnp.float32)
    improved = loss < state.best_loss - min_delta
    pick = lambda new, old: jnp.where(improved, new, old)
    wait = jnp.where(improved, 0, state.wait + 1)
    return EarlyStoppingState(
        best_loss=pick(loss, state.best_loss),
        best_params=jax.tree.map(pick, params, state.best_params),
        best_epoch=pick(jnp.asarray(epoch, jnp.int32), state.best_epoch),
        wait=wait.astype(jnp.int32),
        done=state.done | (wait >= patience),
    )
