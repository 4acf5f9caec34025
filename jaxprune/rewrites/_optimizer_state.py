"""Reset the optimizer-state entries of chosen parameters, for any optax optimizer."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxprune._types import Mask, Params

__all__ = ["reset_optimizer_state"]


def reset_optimizer_state(
    optimizer: optax.GradientTransformation, opt_state: Any, params: Params, mask: Mask
) -> Any:
    """Returns ``opt_state`` with the entries under ``mask`` set back to their initial values.

    Every leaf of ``opt_state`` that mirrors the params (Adam's ``mu``/``nu``, momentum traces,
    accumulators...) is found with ``optax.tree_utils.tree_map_params``, so this works for any
    optax optimizer, chains included. The replacement values come from ``optimizer.init(params)``
    (zeros for Adam's moments, the initial accumulator for Adagrad, ...). Leaves that do not
    mirror the params (step counts, schedules' state) are left alone: Adam's step count is shared
    by all parameters and is not reset. Use it together with a rewrite that redraws those
    parameters, so a fresh weight does not inherit its predecessor's momentum.

    Args:
      optimizer: the transformation that produced ``opt_state``.
      opt_state: its state.
      params: the (new) params; used for ``optimizer.init``.
      mask: pytree of booleans with the structure of ``params`` (leaves broadcastable to each
        parameter's shape); True marks entries to reset.

    Returns:
      A new optimizer state of the same structure.

    >>> import jax.numpy as jnp, optax
    >>> params = {"w": jnp.ones(3)}
    >>> tx = optax.adam(0.1)
    >>> state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)[1]
    >>> new = reset_optimizer_state(tx, state, params, {"w": jnp.array([True, False, False])})
    >>> new[0].mu["w"].tolist()
    [0.0, 0.10000000149011612, 0.10000000149011612]
    """
    if jax.tree.structure(mask) != jax.tree.structure(params):  # type: ignore[operator]
        raise ValueError(
            f"mask: expected the structure of params {jax.tree.structure(params)}, "
            f"got {jax.tree.structure(mask)}"
        )
    fresh = optimizer.init(params)
    state_mask = optax.tree_utils.tree_map_params(
        optimizer, lambda _, m: m, opt_state, mask, transform_non_params=lambda _: False
    )
    return jax.tree.map(
        lambda s, f, m: jnp.where(jnp.asarray(m, bool), f, s), opt_state, fresh, state_mask
    )
