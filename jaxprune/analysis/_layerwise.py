"""Which layers an LW round reinitializes: those above block ``k`` (paper 002, Algorithm 1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune._types import Mask, Params
from jaxprune.graph.extend import Blocks, block_index, check_blocks

__all__ = ["above_block_mask"]


def above_block_mask(params: Params, blocks: Blocks, k: int | jax.Array) -> Mask:
    """True on every layer above block ``k``: blocks ``k+1..K`` and all layers in no block.

    Layers that belong to no block (the dense layers and head of a CNN) must come after the
    blocks in the forward pass; they are reinitialized at every LW round (line 12).

    >>> import jax.numpy as jnp
    >>> p = {"a": {"w": jnp.zeros(1)}, "b": {"w": jnp.zeros(1)}, "head": {"w": jnp.zeros(2)}}
    >>> m = above_block_mask(p, [["a"], ["b"]], k=1)
    >>> m["a"]["w"].tolist(), m["b"]["w"].tolist(), m["head"]["w"].tolist()
    ([False], [True], [True, True])

    References:
      Paper 002, Algorithm 1, line 12 ("Reinitialize all layers above block k").
    """
    blocks = check_blocks(params, blocks, k)
    index = block_index(blocks)
    above = len(blocks) + 1  # layers in no block sit above all blocks
    out = {}
    for name, sub in params.items():
        flag = jnp.asarray(index.get(name, above)) > k
        out[name] = jax.tree.map(lambda w, f=flag: jnp.broadcast_to(f, jnp.shape(w)), sub)
    return out
