"""Freeze whole ReLU units: zero the final updates of their incoming, bias and outgoing weights."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune._types import UnitMask
from jaxprune._units import check_unit_mask, unit_param_mask

__all__ = ["FreezeUnitsState", "freeze_units", "set_frozen_units"]


class FreezeUnitsState(NamedTuple):
    """State of :func:`freeze_units`: ``frozen[layer][u]`` is True for a frozen unit."""

    frozen: UnitMask


def _as_mask(frozen: UnitMask, arg: str) -> UnitMask:
    if not isinstance(frozen, dict) or not frozen:
        raise ValueError(f"{arg}: expected a non-empty {{layer: bool[width]}} dict, got {frozen!r}")
    out = {}
    for name, m in frozen.items():
        m = jnp.asarray(m)
        if m.ndim != 1:
            raise ValueError(f"{arg}[{name!r}]: expected a 1-D unit mask, got shape {m.shape}")
        out[name] = m.astype(bool)
    return out


def freeze_units(frozen: UnitMask) -> optax.GradientTransformation:
    """Zeroes the updates of frozen units' incoming weights, biases and outgoing weights.

    Place it *last* in an ``optax.chain`` so it acts on the final updates: frozen entries then
    do not move at all, even under momentum or Adam (masking the gradients before Adam would let
    the accumulated moments keep moving them). The mask is *data* in the state, not part of the
    compiled program: change it between steps with :func:`set_frozen_units` (no recompilation; it
    may differ per seed under ``vmap``).

    The unit layout follows the parameter names of :class:`~jaxprune.models.MLP` and
    :class:`~jaxprune.models.ConvNet`: unit ``u`` of ``relu_i``/``conv_i`` owns ``kernel[..., u]``,
    ``bias[u]`` and the next layer's kernel entries fed by it (dense row ``u``, conv input
    channel ``u``, or the head rows of channel ``u``). Other layers (linear layers beyond the
    first one after the unit layer, the head's bias) are not frozen, as in paper 000.

    ``optax.masked``/``optax.set_to_zero`` need a static mask tree, which would bake the mask into
    the program; a ``jnp.where`` on a state mask keeps it data.

    Args:
      frozen: ``{layer: bool[width]}``, the initial frozen units (True = frozen). Layers not
        listed are never frozen. Shapes are checked against the updates on the first step.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`FreezeUnitsState`.

    Raises:
      ValueError: if ``frozen`` is not a dict of 1-D masks (at construction), or names unknown
        layers / has a wrong width (on the first update).

    >>> import jax.numpy as jnp, optax
    >>> params = {"relu_0": {"kernel": jnp.ones((1, 2)), "bias": jnp.ones(2)},
    ...           "out": {"kernel": jnp.ones((2, 1)), "bias": jnp.ones(1)}}
    >>> tx = optax.chain(optax.adam(0.1), freeze_units({"relu_0": jnp.array([True, False])}))
    >>> updates, state = tx.update(params, tx.init(params), params)
    >>> (updates["relu_0"]["bias"] == 0).tolist(), (updates["out"]["kernel"][:, 0] == 0).tolist()
    ([True, False], [True, False])

    References:
      Paper 000, sec. 4.1 step 6 (freeze contributing nodes: a mask on their incoming weights,
      biases and outgoing weights).
    """
    initial = _as_mask(frozen, "frozen")

    def init_fn(params):
        del params  # the mask does not depend on the params (init may see optax placeholders)
        return FreezeUnitsState(frozen=dict(initial))

    def update_fn(updates, state, params=None):
        del params
        mask = unit_param_mask(updates, check_unit_mask(updates, state.frozen, "frozen"))
        updates = jax.tree.map(lambda u, m: jnp.where(m, jnp.zeros_like(u), u), updates, mask)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def set_frozen_units(opt_state, frozen: UnitMask):
    """Returns ``opt_state`` with every :class:`FreezeUnitsState` in it set to ``frozen``.

    Works inside ``jit``/``vmap`` (``frozen`` may be traced; its layers and shapes must equal
    the current mask's, so the state structure never changes).

    Args:
      opt_state: the state of an optimizer that contains :func:`freeze_units` (e.g. a chain).
      frozen: the new ``{layer: bool[width]}`` mask.

    Returns:
      The new optimizer state.

    Raises:
      ValueError: if ``opt_state`` holds no ``FreezeUnitsState`` or the mask's layers/shapes
        differ from the current one.

    >>> import jax.numpy as jnp, optax
    >>> tx = optax.chain(optax.sgd(1.0), freeze_units({"relu_0": jnp.zeros(2, bool)}))
    >>> state = set_frozen_units(tx.init({}), {"relu_0": jnp.array([False, True])})
    >>> state[1].frozen["relu_0"].tolist()
    [False, True]

    References:
      Paper 000, sec. 4.1 steps 6 and 10 (freeze, then unfreeze: remove the gradient mask).
    """
    new = _as_mask(frozen, "frozen")
    found = []

    def replace(s):
        if not isinstance(s, FreezeUnitsState):
            return s
        if set(s.frozen) != set(new):
            raise ValueError(f"frozen: expected layers {sorted(s.frozen)}, got {sorted(new)}")
        for k, m in s.frozen.items():
            if jnp.shape(m) != new[k].shape:
                raise ValueError(
                    f"frozen[{k!r}]: expected shape {jnp.shape(m)}, got {new[k].shape}"
                )
        found.append(True)
        return FreezeUnitsState(frozen=dict(new))

    out = jax.tree.map(replace, opt_state, is_leaf=lambda s: isinstance(s, FreezeUnitsState))
    if not found:
        raise ValueError("opt_state: contains no FreezeUnitsState (build it with freeze_units)")
    return out
