"""Optimizers that train only the scores of a masked network; the weights stay bit-for-bit fixed."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune._straight_through import check_kind, is_score, minimal_penalty
from jaxprune._types import Params

__all__ = ["AddMinimalPenaltyState", "add_minimal_penalty", "train_scores"]

ScorePredicate = Callable[[tuple, jax.Array], bool]


def _labels(params: Params, predicate: ScorePredicate) -> Params:
    return jax.tree_util.tree_map_with_path(
        lambda p, x: "scores" if predicate(p, x) else "frozen", params
    )


def train_scores(
    optimizer: optax.GradientTransformation, predicate: ScorePredicate = is_score
) -> optax.GradientTransformation:
    """Runs ``optimizer`` on the scores only; every other parameter gets an update of exactly 0.

    Built from ``optax.partition`` (``optax.multi_transform``) with ``optax.set_to_zero`` for the
    non-score leaves, so the inner optimizer never sees the weights: no momentum, no weight
    decay, no state for them, and ``optax.apply_updates`` adds ``+0.0`` (the weights are unchanged
    bit for bit; only a weight equal to ``-0.0`` would become ``+0.0``).

    Args:
      optimizer: any optax transformation, applied to the score leaves (chains included, e.g.
        ``optax.chain(add_minimal_penalty("mask"), optax.adam(1e-3))``).
      predicate: ``(path, leaf) -> bool`` selecting the score leaves (default
        :func:`~jaxprune.models.is_score`).

    Returns:
      An ``optax.GradientTransformation`` (its state is optax's ``PartitionState``).

    >>> import jax.numpy as jnp, optax
    >>> params = {"dense_0": {"weights": jnp.ones(2), "scores": jnp.full(2, 0.05)}}
    >>> tx = train_scores(optax.sgd(0.1))
    >>> grads = {"dense_0": {"weights": jnp.ones(2), "scores": jnp.ones(2)}}
    >>> updates, _ = tx.update(grads, tx.init(params), params)
    >>> updates["dense_0"]["weights"].tolist(), updates["dense_0"]["scores"].tolist()
    ([0.0, 0.0], [-0.10000000149011612, -0.10000000149011612])

    References:
      Paper 003, sec. 2: "the network weights are kept fixed and only T is updated".
    """
    return optax.partition(
        {"scores": optimizer, "frozen": optax.set_to_zero()},
        lambda params: _labels(params, predicate),
    )


class AddMinimalPenaltyState(NamedTuple):
    """:func:`add_minimal_penalty` keeps no state."""


def add_minimal_penalty(
    kind: str, strength: float = 1.0, predicate: ScorePredicate = is_score
) -> optax.GradientTransformation:
    """Adds the straight-through gradient of Eq. 4's term to the score gradients.

    Minimal pruning/flipping minimises ``task_loss + strength * minimal_penalty(scores, kind)``.
    Under the straight-through estimator the penalty's gradient is the same constant for every
    score (``-1/M`` for masks, ``-1/(2M)`` for flips, ``M`` = number of scores), so the term can be
    added to the gradients instead of the loss. Place it *before* the inner optimizer (it is part
    of the loss): ``train_scores(optax.chain(add_minimal_penalty("mask"), optax.adam(lr)))``.
    This lets a per-example-loss trainer such as :func:`~jaxprune.training.fit` train minimal
    pruning. ``M`` counts the score leaves this transform sees, so every score of the network
    must pass through it (it does inside :func:`train_scores`, which keeps the tree's paths).

    Args:
      kind: ``"mask"`` or ``"flip"``.
      strength: multiplier of the penalty (paper: 1).
      predicate: ``(path, leaf) -> bool`` selecting score leaves; other leaves pass unchanged.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: on an unknown ``kind``.

    >>> import jax.numpy as jnp
    >>> tx = add_minimal_penalty("mask")
    >>> g = {"l": {"scores": jnp.zeros(4), "weights": jnp.zeros(4)}}
    >>> u, _ = tx.update(g, tx.init(g))
    >>> u["l"]["scores"].tolist(), u["l"]["weights"].tolist()
    ([-0.25, -0.25, -0.25, -0.25], [0.0, 0.0, 0.0, 0.0])

    References:
      Paper 003, Eq. 4 (minimal pruning) and sec. 3 (minimal flipping).
    """
    check_kind(kind)
    strength = float(strength)

    def init_fn(params):
        del params
        return AddMinimalPenaltyState()

    def update_fn(updates, state, params=None):
        del params
        flat, treedef = jax.tree_util.tree_flatten_with_path(updates)
        chosen = [i for i, (path, leaf) in enumerate(flat) if predicate(path, leaf)]
        if not chosen:
            return updates, state
        # The penalty's straight-through gradient does not depend on the scores' values.
        grads = jax.grad(lambda s: minimal_penalty(s, kind))([flat[i][1] for i in chosen])
        leaves = [leaf for _, leaf in flat]
        for i, g in zip(chosen, grads, strict=True):
            leaves[i] = leaves[i] + (strength * g).astype(jnp.result_type(leaves[i]))
        return jax.tree.unflatten(treedef, leaves), state

    return optax.GradientTransformation(init_fn, update_fn)
