"""Which entries a reinitialization round redraws: WELSR, DSD, WELS and FC masks (paper 002).

Every builder is a pure function of the params (and a key) returning a boolean pytree with the
params' structure and shapes, ready for :func:`~jaxprune.rewrites.reinit_round`
(read-only selections, so they live with the analyses):

* WELSR: :func:`random_mask` with a *fresh* key every round;
* WELS: :func:`random_mask` with one key fixed before training (the same subset every round);
* DSD: :func:`magnitude_mask`, the smallest-magnitude entries of each layer;
* FC: :func:`layer_mask` on the classifier head or the last dense layers.

Fractions count per parameter tensor ("per layer"): a tensor of ``n`` entries gets exactly
``floor(fraction * n + 0.5)`` masked entries, so every layer loses the same share.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._data_checks import check_fraction
from jaxprune._types import Mask, Params

__all__ = ["layer_mask", "magnitude_mask", "random_mask"]


def _top_names(params: Params) -> list[str]:
    if not hasattr(params, "keys"):
        raise ValueError(f"params: expected a mapping of layer names, got {type(params).__name__}")
    return [str(k) for k in params.keys()]


def _selected(params: Params, layers: Sequence[str] | None) -> set[str]:
    names = _top_names(params)
    if layers is None:
        return set(names)
    if isinstance(layers, str):
        raise ValueError(f"layers: expected a sequence of layer names, got the string {layers!r}")
    unknown = sorted(set(layers) - set(names))
    if unknown:
        raise ValueError(f"layers: {unknown} not in params; expected names from {sorted(names)}")
    return set(layers)


def _per_leaf(params: Params, layers: Sequence[str] | None, fn) -> Mask:
    chosen = _selected(params, layers)

    def leaf(i, path, p):
        if str(path[0].key) not in chosen:
            return jnp.zeros(jnp.shape(p), bool)
        return fn(i, p)

    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    return jax.tree.unflatten(treedef, [leaf(i, path, p) for i, (path, p) in enumerate(flat)])


def _count(fraction: float, size: int) -> int:
    return int(np.floor(fraction * size + 0.5))


def _lowest(scores: jax.Array, k: int) -> jax.Array:
    """Boolean mask of the ``k`` lowest scores (ties: lower flat index first)."""
    flat = scores.reshape(-1)
    idx = jnp.argsort(flat, stable=True)[:k]
    return jnp.zeros(flat.shape, bool).at[idx].set(True).reshape(scores.shape)


def random_mask(
    params: Params, key: jax.Array, fraction: float = 0.2, layers: Sequence[str] | None = None
) -> Mask:
    """A uniformly random subset of exactly ``fraction`` of each tensor's entries (WELSR, WELS).

    WELSR draws a new subset every round (pass a new key each round); WELS fixes the subset
    before training (pass the same key every round). Paper 002 follows Taha et al. (2021) with
    20% of the parameters.

    Args:
      params: parameter pytree (a mapping of top-level layer names).
      key: PRNG key; one uniform draw for all tensors together (in leaf order), each tensor's
        subset being the entries with the lowest draws (a single threefry call keeps compile
        time low inside jitted training loops).
      fraction: share of each tensor to mask, in [0, 1].
      layers: top-level layer names to draw from (default: all); the others get all-False.

    Returns:
      Boolean pytree with the structure and shapes of ``params``.

    Raises:
      ValueError: on a fraction outside [0, 1] or an unknown layer name.

    >>> import jax, jax.numpy as jnp
    >>> m = random_mask({"d": {"kernel": jnp.zeros((10, 10))}}, jax.random.key(0), 0.2)
    >>> int(m["d"]["kernel"].sum())
    20

    References:
      Paper 002, sec. 1 ("Random subset" = WELSR, "Fixed subset" = WELS) and Table 2 caption
      (20% of the parameters).
    """
    f = check_fraction(fraction)
    sizes = [int(jnp.size(p)) for p in jax.tree.leaves(params)]
    u = jax.random.uniform(key, (max(sum(sizes), 1),))
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return _per_leaf(
        params,
        layers,
        lambda i, p: _lowest(
            u[starts[i] : starts[i + 1]].reshape(jnp.shape(p)), _count(f, sizes[i])
        ),
    )


def magnitude_mask(
    params: Params, fraction: float = 0.2, layers: Sequence[str] | None = None
) -> Mask:
    """The ``fraction`` smallest-magnitude entries of each tensor (DSD, extended to many rounds).

    Ties (e.g. zero-initialized biases) are broken by the lower flat index, so the mask always
    has exactly ``floor(fraction * n + 0.5)`` entries per tensor.

    Args:
      params: parameter pytree.
      fraction: share of each tensor to mask, in [0, 1].
      layers: top-level layer names to consider (default: all).

    Returns:
      Boolean pytree with the structure and shapes of ``params``.

    Raises:
      ValueError: on a fraction outside [0, 1] or an unknown layer name.

    >>> import jax.numpy as jnp
    >>> w = {"d": {"kernel": jnp.array([0.5, -0.1, 2.0, 0.3, -4.0])}}
    >>> magnitude_mask(w, 0.4)["d"]["kernel"].tolist()
    [False, True, False, True, False]

    References:
      Paper 002, sec. 1 ("Weight magnitudes", a multi-round DSD of Han et al. 2017).
    """
    f = check_fraction(fraction)
    return _per_leaf(params, layers, lambda i, p: _lowest(jnp.abs(p), _count(f, jnp.size(p))))


def layer_mask(params: Params, layers: Sequence[str]) -> Mask:
    """All entries of the named top-level layers (FC: the classifier head or last dense layers).

    Args:
      params: parameter pytree.
      layers: top-level layer names, e.g. ``("out",)`` for the head of
        :class:`~jaxprune.models.BlockMLP` or ``SCNN().fc_layers()``.

    Returns:
      Boolean pytree with the structure and shapes of ``params``.

    Raises:
      ValueError: on an unknown layer name.

    >>> import jax.numpy as jnp
    >>> p = {"relu_0": {"bias": jnp.zeros(2)}, "out": {"bias": jnp.zeros(3)}}
    >>> {k: v["bias"].tolist() for k, v in layer_mask(p, ["out"]).items()}
    {'out': [True, True, True], 'relu_0': [False, False]}

    References:
      Paper 002, sec. 1 ("Fully-connected layers": Li et al. 2020; Zhao et al. 2018).
    """
    return _per_leaf(params, layers, lambda i, p: jnp.ones(jnp.shape(p), bool))
