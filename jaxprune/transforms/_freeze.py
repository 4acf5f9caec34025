"""Freeze whole units of any traced model: zero the final updates of everything they touch."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune._types import UnitMask
from jaxprune.graph import Graph

__all__ = ["FreezeUnitsState", "freeze_units"]


class FreezeUnitsState(NamedTuple):
    """State of :func:`freeze_units`: ``frozen[unit][i]`` is True for a frozen unit."""

    frozen: UnitMask


def freeze_units(graph: Graph, frozen: UnitMask) -> optax.GradientTransformation:
    """Zeroes the final updates of the frozen units' writing and reading parameter entries.

    A unit's entries are those of :meth:`~jaxprune.graph.Graph.unit_param_mask`: what writes it
    (kernel columns, biases, norm entries of every layer of its coupled group) and what reads it
    (kernel rows of every consumer, through skip projections, concatenation offsets and flatten
    tiling). Place it *last* in an ``optax.chain`` so it acts on the final updates: frozen entries
    then do not move at all, even under Adam with built-up momentum (masking the gradients before
    Adam would let the accumulated moments keep moving them).

    The mask is *data* in the state, not part of the compiled program: change it between steps
    with :func:`~jaxprune.training.set_frozen_units` (no recompilation; it may differ per seed
    under ``vmap``). ``optax.masked``/``optax.set_to_zero`` need a static mask tree, which would
    bake the mask into the program; a ``jnp.where`` on a state mask keeps it data.

    The updates (and params) are the model's trainable tree: linen's ``variables["params"]``,
    an equinox module's arrays, an NNX module's params as a pure dict, a function's params.
    Leaves are matched to the graph by path; leaves the graph does not know are left alone.

    Args:
      graph: the model's :class:`~jaxprune.graph.Graph` (:func:`jaxprune.trace`).
      frozen: ``{unit: bool[width]}``, the initial frozen units (True = frozen); unlisted units
        start unfrozen. Every unit of the graph gets a mask in the state.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`FreezeUnitsState`.

    Raises:
      ValueError: naming ``frozen`` for an unknown unit (listing the valid ones), or
        ``frozen['unit']`` for a mask that is not bool of shape ``(width,)`` (a float 0.5 would
        count as True).

    >>> import jax, jax.numpy as jnp, flax.linen as nn, optax, jaxprune as jp
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(2)(x))
    ...         return nn.Dense(1)(h)
    >>> x = jnp.ones((1, 3)); params = Net().init(jax.random.key(0), x)["params"]
    >>> graph = jp.trace(Net(), {"params": params}, x)
    >>> tx = optax.chain(optax.adam(0.1),
    ...                  freeze_units(graph, {"Dense_0": jnp.array([True, False])}))
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> (updates["Dense_0"]["bias"] == 0).tolist()  # writes
    [True, False]
    >>> (updates["Dense_1"]["kernel"][:, 0] == 0).tolist()  # reads
    [True, False]

    References:
      Paper 000, sec. 4.1 step 6 (freeze contributing nodes: a mask on their incoming weights,
      biases and outgoing weights).
    """
    initial = graph.check_units(frozen, "frozen")

    def init_fn(params):
        del params  # the mask does not depend on the params (init may see optax placeholders)
        return FreezeUnitsState(frozen=dict(initial))

    def update_fn(updates, state, params=None):
        del params
        mask = graph.unit_param_mask(updates, state.frozen)
        updates = jax.tree.map(lambda u, m: jnp.where(m, jnp.zeros_like(u), u), updates, mask)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)
