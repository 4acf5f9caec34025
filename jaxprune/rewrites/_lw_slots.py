"""LW normalization slots for any traced flax.linen model, placed from its graph (paper 002).

Layerwise reinitialization (Algorithm 1, lines 5-11) inserts ``x -> (x - mu) / sigma`` after
block ``k``. The bundled models call :func:`jaxprune.models.norm_slot` in their own code; a
user's model does not. :func:`lw_slots` wraps it instead: the wrapper shares the model's scope
(same variables, same names) and, through ``flax.linen.intercept_methods``, normalizes what the
first top-level submodule after block ``k`` (in the traced forward order) reads, which is block
``k``'s output whatever activation, pooling or reshape sits between the two (a scalar affine
map commutes with a reshape and, for ``sigma > 0``, with max-pooling; it is applied after the
activation, where :func:`~jaxprune.models.norm_slot` sits in the bundled models). The slot
after the last subtree normalizes the model's output. The slots live in the
:data:`~jaxprune.models.NORM_COLLECTION` collection and sow their input into
:data:`~jaxprune.models.OUTPUT_COLLECTION`, as ``norm_slot`` does, so
:func:`~jaxprune.rewrites.update_normalization` and ``train_rounds(method="lw")`` use them
unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.graph import Graph
from jaxprune.graph.extend import check_blocks, default_blocks, forward_order
from jaxprune.models import NORM_COLLECTION, OUTPUT_COLLECTION, slot_name

__all__ = ["LWSlots", "lw_slots"]


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class LWSlots(nn.Module):
    """A linen model with a normalization slot before each of ``readers`` (see :func:`lw_slots`).

    Attributes:
      model: the user's linen module (its variables are this module's, unchanged).
      readers: per block ``k`` (1-based, in order), the top-level submodule whose input is
        block ``k``'s output, or ``""`` for the model's output.
    """

    model: nn.Module
    readers: tuple[str, ...]

    def setup(self):
        nn.share_scope(self, self.model)

    def _slot(self, k: int):
        name = slot_name(k)
        if not (
            self.is_mutable_collection(NORM_COLLECTION) or self.has_variable(NORM_COLLECTION, name)
        ):
            return None
        return self.variable(
            NORM_COLLECTION,
            name,
            lambda: {"mean": jnp.zeros((), jnp.float32), "std": jnp.ones((), jnp.float32)},
        )

    def _normalize(self, k: int, slot, h: jax.Array) -> jax.Array:
        if slot is None:
            return h
        if self.is_mutable_collection(OUTPUT_COLLECTION) and not self.is_initializing():
            self.sow(OUTPUT_COLLECTION, slot_name(k), h)
        mean, std = slot.value["mean"], slot.value["std"]
        return (h - mean.astype(h.dtype)) / std.astype(h.dtype)

    @nn.compact
    def __call__(self, *args, train: Any = None, **kwargs):
        """The model's call with the slots applied; ``train`` is passed on when it is given."""
        if train is not None:
            kwargs["train"] = train
        slots = {k: self._slot(k) for k in range(1, len(self.readers) + 1)}
        before = {name: k for k, name in enumerate(self.readers, 1) if name}
        depth = len(self.path)

        def interceptor(next_fun, fargs, fkwargs, context):
            path = context.module.path[depth:]
            k = before.get(path[0]) if len(path) == 1 else None
            if k is None or context.method_name != "__call__" or not fargs:
                return next_fun(*fargs, **fkwargs)
            h = self._normalize(k, slots[k], fargs[0])
            return next_fun(h, *fargs[1:], **fkwargs)

        with nn.intercept_methods(interceptor):
            out = self.model(*args, **kwargs)
        for k, name in enumerate(self.readers, 1):
            if not name:
                out = self._normalize(k, slots[k], out)
        return out


def lw_slots(
    model: nn.Module, graph: Graph, blocks: Sequence[Sequence[str]] | None = None
) -> LWSlots:
    """``model`` with an LW normalization slot after each block, placed from its traced graph.

    The slot after block ``k`` normalizes the input of the first top-level submodule that the
    forward pass reads after block ``k``'s last one (its output, after the activation and any
    pooling), or the model's output when nothing follows. The wrapper has the model's
    variables under the same names, plus the slots' collection after ``init``; without that
    collection it computes exactly what ``model`` does. A model with a ``train`` argument keeps
    it.

    Args:
      model: a ``flax.linen`` module.
      graph: ``jaxprune.trace(model, variables, x)``.
      blocks: LW blocks, tuples of top-level parameter names in forward order (default
        :func:`~jaxprune.graph.extend.default_blocks`).

    Returns:
      An :class:`LWSlots` module for ``train_rounds(method="lw")`` or
      :func:`~jaxprune.rewrites.update_normalization`.

    Raises:
      TypeError: ``model`` is not a linen module.
      ValueError: bad ``blocks``, or blocks out of forward order.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxprune as jp
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         return nn.Dense(2, name="out")(nn.relu(nn.Dense(4, name="hidden")(x)))
    >>> x = jax.random.normal(jax.random.key(0), (64, 3))
    >>> v = Net().init(jax.random.key(1), x)
    >>> slotted = jp.rewrites.lw_slots(Net(), jp.trace(Net(), v, x))
    >>> w = jp.rewrites.update_normalization(slotted, slotted.init(jax.random.key(1), x), x, k=1)
    >>> h = jax.nn.relu(x @ v["params"]["hidden"]["kernel"] + v["params"]["hidden"]["bias"])
    >>> bool(jnp.allclose(w["lw_norm"]["block_1"]["std"], h.std()))
    True

    References:
      Paper 002, Algorithm 1, lines 5-11 (the lambda layer after block ``k``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a flax.linen Module, got {type(model).__name__}")
    order = forward_order(graph)
    blocks = check_blocks(
        {n: None for n in order}, blocks if blocks is not None else default_blocks(graph)
    )
    position = {name: i for i, name in enumerate(order)}
    readers, last = [], -1
    for i, block in enumerate(blocks):
        end = max(position[n] for n in block)
        if min(position[n] for n in block) <= last:
            raise ValueError(f"blocks[{i}]: {block} does not follow block {i} in the forward pass")
        last = end
        readers.append(order[end + 1] if end + 1 < len(order) else "")
    return LWSlots(model, tuple(readers))
