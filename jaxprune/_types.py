"""Shared type aliases: parameters, masks and generic pytrees are plain JAX pytrees."""

from __future__ import annotations

from typing import Any, Literal

import jax

PyTree = Any
"""Any JAX pytree (nested dicts/tuples/lists of arrays)."""

Params = Any
"""A parameter pytree, e.g. ``variables["params"]`` of a Flax module."""

Mask = Any
"""A pytree of booleans (or 0/1 arrays) matching a parameter pytree or a per-unit layout."""

UnitMask = dict[str, jax.Array]
"""Per-layer unit masks: ``{layer_name: bool[width]}`` for the hidden units of a model."""

Batch = tuple[jax.Array, jax.Array]
"""``(inputs, targets)``."""

Outgoing = Literal["redraw", "zero", "keep"]
"""What happens to a reinitialized unit's outgoing weights: drawn anew, zeroed or kept."""

Model = Any
"""A user's model: a ``flax.linen`` or ``flax.nnx`` module, an equinox module, a haiku
``Transformed``, a function ``f(params, x)``, or a traced :class:`~jaxprune.graph.Graph` where
the function says so."""

Variables = Any
"""A model's variables in its own form: linen's ``{"params": ..., "batch_stats": ...}``, a
function's or haiku's params; ``None`` for NNX and equinox modules, which hold their own."""

__all__ = ["Batch", "Mask", "Model", "Outgoing", "Params", "PyTree", "UnitMask", "Variables"]
