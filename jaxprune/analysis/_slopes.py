"""The share of PReLU units that slope sparsity has made linear (paper 004)."""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp

__all__ = ["inactive_fraction"]


class _HasInactive(Protocol):
    inactive: dict[str, jax.Array]


def inactive_fraction(state: _HasInactive) -> jax.Array:
    """Fraction of all PReLU units that are inactive (frozen at slope 1).

    Args:
      state: a :class:`~jaxprune.transforms.SlopeSparsityState` (found in the optimizer state
        of :func:`~jaxprune.transforms.slope_sparsity`).

    Returns:
      A float scalar in ``[0, 1]``.

    >>> import jax.numpy as jnp, jaxprune as jp
    >>> inactive = {"a": jnp.array([True, False]), "b": jnp.array([True, True])}
    >>> s = jp.transforms.SlopeSparsityState(inactive, jnp.zeros(()), ())
    >>> float(inactive_fraction(s))
    0.75

    References:
      Paper 004, sec. 4.1.2 (a unit whose slope exceeds 0.99 is inactive).
    """
    masks = jax.tree.leaves(state.inactive)
    count = sum(jnp.sum(m) for m in masks)
    return count / sum(m.size for m in masks)
