"""Shared type aliases: parameters, masks and generic pytrees are plain JAX pytrees."""

from __future__ import annotations

from typing import Any

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

__all__ = ["Batch", "Mask", "Params", "PyTree", "UnitMask"]
