"""Set the frozen units inside an optimizer state that holds :func:`freeze_units` (paper 000)."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from jaxprune._types import UnitMask
from jaxprune.graph.extend import check_mask, check_mask_names
from jaxprune.transforms import FreezeUnitsState

__all__ = ["set_frozen_units"]


def set_frozen_units(opt_state: optax.OptState, frozen: UnitMask) -> optax.OptState:
    """Returns ``opt_state`` with every ``FreezeUnitsState`` in it set to ``frozen``.

    Works inside ``jit``/``vmap`` (``frozen`` may be traced). Units missing from ``frozen`` are
    unfrozen; the state's structure never changes.

    Args:
      opt_state: the state of an optimizer that contains
        :func:`~jaxprune.transforms.freeze_units` (e.g. a chain).
      frozen: the new ``{unit: bool[width]}`` mask.

    Returns:
      The new optimizer state.

    Raises:
      ValueError: naming ``opt_state`` if it holds no ``FreezeUnitsState``, or ``frozen`` for an
        unknown unit or a mask that is not bool of the state's shape (``(width,)``, or
        ``(seeds, width)`` for a state stacked over seeds).

    >>> import jax, jax.numpy as jnp, flax.linen as nn, optax, jaxprune as jp
    >>> x = jnp.ones((1, 3)); net = nn.Sequential([nn.Dense(2), nn.relu, nn.Dense(1)])
    >>> graph = jp.trace(net, net.init(jax.random.key(0), x), x)
    >>> tx = optax.chain(optax.sgd(1.0), jp.transforms.freeze_units(graph, {}))
    >>> state = set_frozen_units(tx.init({}), {"layers_0": jnp.array([False, True])})
    >>> state[1].frozen["layers_0"].tolist()
    [False, True]

    References:
      Paper 000, sec. 4.1 steps 6 and 10 (freeze, then unfreeze: remove the gradient mask).
    """
    if frozen is not None and not isinstance(frozen, Mapping):
        raise ValueError(
            f"frozen: expected a mapping {{unit: bool[width]}}, got {type(frozen).__name__}"
        )
    frozen = dict(frozen or {})
    found = []

    def replace(s):
        if not isinstance(s, FreezeUnitsState):
            return s
        given = check_mask_names(frozen, "frozen", s.frozen)
        new = {}
        for name, old in s.frozen.items():
            if name in given:
                new[name] = check_mask("frozen", name, given[name], jnp.shape(old))
            else:
                new[name] = jnp.zeros(jnp.shape(old), bool)
        found.append(True)
        return FreezeUnitsState(frozen=new)

    out = jax.tree.map(replace, opt_state, is_leaf=lambda s: isinstance(s, FreezeUnitsState))
    if not found:
        raise ValueError("opt_state: contains no FreezeUnitsState (build it with freeze_units)")
    return out
