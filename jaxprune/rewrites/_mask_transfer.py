"""Transfer a mask of linear (inactive) PReLU units to a fresh network (paper 004, sec. 4.1.1)."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._types import Params, UnitMask
from jaxprune.graph.extend import check_mask

__all__ = ["MASK_TRANSFER_MODES", "set_linear_slopes", "transfer_mask"]

MASK_TRANSFER_MODES = ("exact", "layer", "global")
"""Paper 004's three ways to transfer the inactive-unit mask (sec. 4.1.1)."""


def transfer_mask(
    inactive: Mapping[str, object], mode: str = "exact", key: jax.Array | None = None
) -> UnitMask:
    """The mask to give a freshly initialized network: kept, or shuffled within layers or globally.

    * ``"exact"``: the same units are inactive.
    * ``"layer"``: each layer's mask is permuted among that layer's units (same count per layer).
    * ``"global"``: all units of all layers are pooled and permuted (same total count; the
      per-layer counts change).

    Args:
      inactive: ``{layer: bool[width]}`` (e.g. ``SlopeSparsityState.inactive``).
      mode: one of :data:`MASK_TRANSFER_MODES`.
      key: PRNG key, required for the shuffled modes.

    Returns:
      ``{layer: bool[width]}`` with the same layers and shapes.

    Raises:
      ValueError: an unknown ``mode``, an empty mask, a mask that is not bool (naming
        ``inactive['layer']``), or a shuffled mode without ``key``.

    >>> import jax, jax.numpy as jnp
    >>> m = {"prelu_0": jnp.array([True, True, False, False]), "prelu_1": jnp.array([True, False])}
    >>> s = transfer_mask(m, "layer", jax.random.key(0))
    >>> [int(v.sum()) for v in s.values()]
    [2, 1]
    >>> g = transfer_mask(m, "global", jax.random.key(0))
    >>> sum(int(v.sum()) for v in g.values()), [v.shape for v in g.values()]
    (3, [(4,), (2,)])

    References:
      Paper 004, sec. 4.1.1 (exact, layer-wise permutation, global permutation).
    """
    if mode not in MASK_TRANSFER_MODES:
        raise ValueError(f"mode: expected one of {MASK_TRANSFER_MODES}, got {mode!r}")
    if not inactive:
        raise ValueError("inactive: expected at least one layer")
    masks = {k: check_mask("inactive", k, v, np.shape(v)) for k, v in inactive.items()}  # type: ignore[call-overload]
    if mode == "exact":
        return masks
    if key is None:
        raise ValueError(f"key: mode {mode!r} shuffles and needs a PRNG key")
    if mode == "layer":
        keys = jax.random.split(key, len(masks))
        return {
            k: jax.random.permutation(kk, m.ravel()).reshape(m.shape)
            for kk, (k, m) in zip(keys, masks.items(), strict=True)
        }
    flat = jax.random.permutation(key, jnp.concatenate([m.ravel() for m in masks.values()]))
    out, offset = {}, 0
    for k, m in masks.items():
        out[k] = flat[offset : offset + m.size].reshape(m.shape)
        offset += m.size
    return out


def set_linear_slopes(
    params: Params, inactive: Mapping[str, object], slope_key: str = "slope"
) -> Params:
    """Returns ``params`` with the slopes of ``inactive`` units set to exactly 1 (linear).

    Layers are named by the ``/``-joined path of the dict that holds ``slope_key`` (as in
    :class:`~jaxprune.transforms.SlopeSparsityState`). Inputs are not modified.

    Raises:
      ValueError: a layer of ``inactive`` has no slope in ``params``, or a shape differs.

    >>> import jax.numpy as jnp
    >>> p = {"prelu_0": {"slope": jnp.zeros(3)}, "out": {"bias": jnp.zeros(1)}}
    >>> set_linear_slopes(p, {"prelu_0": [True, False, True]})["prelu_0"]["slope"].tolist()
    [1.0, 0.0, 1.0]

    References:
      Paper 004, sec. 4.1.1 (the mask of inactive PReLUs is kept, everything else re-initialized).
    """
    todo = {k: np.asarray(v, bool) for k, v in inactive.items()}
    seen = set()

    def fix(path, leaf):
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        layer = "/".join(names[:-1])
        if names[-1] != slope_key or layer not in todo:
            return leaf
        seen.add(layer)
        if todo[layer].shape != jnp.shape(leaf):
            raise ValueError(
                f"inactive[{layer!r}]: expected shape {jnp.shape(leaf)}, got {todo[layer].shape}"
            )
        return jnp.where(todo[layer], jnp.ones_like(leaf), leaf)

    out = jax.tree_util.tree_map_with_path(fix, params)
    missing = sorted(set(todo) - seen)
    if missing:
        raise ValueError(f"inactive: {missing[0]!r} has no {slope_key!r} leaf in params")
    return out
