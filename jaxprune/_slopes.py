"""Where a model's PReLU slopes are: the leaves named ``slope`` (private core of the slope
transforms and analyses; ``slope_layers_of`` is public through ``jaxprune.analysis``)."""

from __future__ import annotations

import jax
import numpy as np

from jaxprune._types import Params

__all__ = ["slope_layer", "slope_layers_of"]


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def slope_layer(path: tuple, slope_key: str) -> str | None:
    """The ``/``-joined layer path of a leaf named ``slope_key`` (None for any other leaf)."""
    names = [_key_name(k) for k in path]
    if names and names[-1] == slope_key and len(names) > 1:
        return "/".join(names[:-1])
    return None


def slope_layers_of(params: Params, slope_key: str = "slope") -> dict[str, tuple[int, ...]]:
    """``{layer: shape}`` of every leaf named ``slope_key`` in ``params``, in leaf order.

    >>> import jax.numpy as jnp
    >>> slope_layers_of({"dense_0": {"kernel": jnp.ones((2, 3))},
    ...                  "prelu_0": {"slope": jnp.ones(3)}})
    {'prelu_0': (3,)}
    """
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        layer = slope_layer(path, slope_key)
        if layer is not None:
            out[layer] = tuple(np.shape(leaf))
    return out
