"""A non-trainable scalar normalization slot after a block, for layerwise reinitialization (LW).

Paper 002, Algorithm 1 (lines 7-11) inserts a lambda layer ``x -> (x - mu) / sigma`` after block
``k`` and later updates its ``mu, sigma``. In Flax the slot is a variable in its own collection,
:data:`NORM_COLLECTION`, so it is saved, restored, ``vmap``-ed and jitted like the params while
the optimizer never sees it. A slot holding ``mean=0, std=1`` is the identity, which is what "not
inserted yet" means: the variables pytree keeps one structure through all rounds, so changing the
normalization never recompiles anything.

While :data:`OUTPUT_COLLECTION` is mutable, each slot also records (``sow``) its *input*, the raw
output ``Z`` of its block, which is how :func:`jaxprune.rewrites.update_normalization` measures
``mu`` and ``sigma`` (Algorithm 1, line 5).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["NORM_COLLECTION", "OUTPUT_COLLECTION", "norm_slot", "slot_name"]

NORM_COLLECTION = "lw_norm"
"""Variable collection of the LW normalization slots: ``{"block_k": {"mean": (), "std": ()}}``."""

OUTPUT_COLLECTION = "lw_block_out"
"""Collection into which each slot sows its block's raw output when it is mutable."""


def slot_name(k: int) -> str:
    """Name of the slot after block ``k`` (1-based, as the paper's k): ``"block_{k}"``.

    >>> slot_name(2)
    'block_2'
    """
    return f"block_{k}"


def norm_slot(module: nn.Module, h: jax.Array, i: int) -> jax.Array:
    """Applies the normalization slot after block ``i`` (1-based) inside a compact module.

    This is how a model of one's own gets the slots that
    :func:`jaxprune.rewrites.update_normalization` sets and
    :func:`jaxprune.training.train_rounds` (``method="lw"``) trains with. When the model is
    applied with ``{"params": ...}`` only (as ``jaxprune.training.fit`` does), the collection is
    absent and the slot is the identity.

    Args:
      module: the compact module being called (``self``).
      h: the block's output.
      i: 1-based index of the block.

    Returns:
      ``(h - mean) / std`` with the slot's values; ``h`` itself without the collection.

    >>> import flax.linen as nn, jax, jax.numpy as jnp
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         return norm_slot(self, nn.Dense(4)(x), 1)
    >>> x = jnp.ones((8, 3)); variables = Net().init(jax.random.key(0), x)
    >>> jax.tree.map(float, variables[NORM_COLLECTION])
    {'block_1': {'mean': 0.0, 'std': 1.0}}
    >>> slot = {"block_1": {"mean": jnp.array(1.0), "std": jnp.array(2.0)}}
    >>> h = Net().apply({"params": variables["params"]}, x)  # no slot: the identity
    >>> out = Net().apply({**variables, NORM_COLLECTION: slot}, x)
    >>> bool(jnp.allclose(out, (h - 1.0) / 2.0))
    True
    """
    name = slot_name(i)
    if not (
        module.is_mutable_collection(NORM_COLLECTION) or module.has_variable(NORM_COLLECTION, name)
    ):
        return h
    slot = module.variable(
        NORM_COLLECTION,
        name,
        lambda: {"mean": jnp.zeros((), jnp.float32), "std": jnp.ones((), jnp.float32)},
    )
    if module.is_mutable_collection(OUTPUT_COLLECTION) and not module.is_initializing():
        module.sow(OUTPUT_COLLECTION, name, h)
    mean, std = slot.value["mean"], slot.value["std"]
    return (h - mean.astype(h.dtype)) / std.astype(h.dtype)
