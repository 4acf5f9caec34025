"""Read-only reports on trained connectivity: pruned/flipped fractions, masks, sizes in bits.

These functions pair every ``weights`` entry of a dict with its sibling ``scores`` entry, which
covers the masked layers (``{"dense_0": {"weights": W, "scores": T}}``) and
:class:`~jaxprune.models.Scored` (``{"weights": tree, "scores": tree}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from jaxprune._straight_through import check_kind, gate
from jaxprune._types import Mask, Params
from jaxprune._weight_factoring import factor_weights

__all__ = [
    "changed_fraction",
    "connectivity_mask",
    "effective_weights",
    "layer_fractions",
    "size_in_bits",
]


def _pairs(params, path=()):
    """Yields ``(path, weights, scores)`` for every weights/scores pair (leaf by leaf)."""
    if isinstance(params, Mapping):
        if "weights" in params and "scores" in params:
            w, t = params["weights"], params["scores"]
            if jax.tree.structure(w) != jax.tree.structure(t):
                raise ValueError(
                    f"params: weights and scores at {'/'.join(path) or '<root>'} "
                    "have different structures"
                )
            flat = jax.tree_util.tree_flatten_with_path(w)[0]
            for (sub, wl), tl in zip(flat, jax.tree.leaves(t), strict=True):
                name = "/".join((*path, *(str(getattr(k, "key", k)) for k in sub)))
                yield name, wl, tl
        else:
            for k, v in params.items():
                yield from _pairs(v, (*path, str(k)))


def _replace_pairs(params, fn: Callable):
    if isinstance(params, Mapping):
        if "weights" in params and "scores" in params:
            rest = {k: v for k, v in params.items() if k not in ("weights", "scores")}
            return {**rest, "weights": jax.tree.map(fn, params["weights"], params["scores"])}
        return {k: _replace_pairs(v, fn) for k, v in params.items()}
    return params


def _checked_pairs(params, kind):
    check_kind(kind)
    pairs = list(_pairs(params))
    if not pairs:
        raise ValueError("params: no 'weights'/'scores' pair found (expected masked layers)")
    return pairs


def layer_fractions(params: Params, kind: str) -> dict[str, jax.Array]:
    """Per layer, the fraction of pruned (``m(t) = 0``) or flipped (``f(t) = -1``) weights.

    Works under ``jit`` and ``vmap`` (e.g. over a seed axis), so it can be logged every epoch:
    these are the bottom-row curves of Figs. 1-2 and 6-7.

    Args:
      params: params holding ``weights``/``scores`` pairs.
      kind: ``"mask"`` (fraction pruned) or ``"flip"`` (fraction flipped).

    Returns:
      ``{layer_path: scalar}``, e.g. ``{"dense_0": ..., "out": ...}``.

    Raises:
      ValueError: on an unknown ``kind`` or params without any pair.

    >>> import jax.numpy as jnp
    >>> p = {"dense_0": {"weights": jnp.ones(4), "scores": jnp.array([1.0, -1.0, -2.0, 0.5])}}
    >>> {k: float(v) for k, v in layer_fractions(p, "mask").items()}
    {'dense_0': 0.5}

    References:
      Paper 003, Figs. 1-2, 6-7 (bottom rows: fraction of pruned/flipped weights per epoch).
    """
    pairs = _checked_pairs(params, kind)
    return {name: jnp.mean(gate(t, kind) <= 0) for name, _, t in pairs}


def changed_fraction(params: Params, kind: str) -> jax.Array:
    """Fraction of *all* the network's weights that are pruned (or flipped), weighted by size.

    >>> import jax.numpy as jnp
    >>> p = {"a": {"weights": jnp.ones(3), "scores": jnp.array([-1.0, 1.0, 1.0])},
    ...      "b": {"weights": jnp.ones(1), "scores": jnp.array([-1.0])}}
    >>> float(changed_fraction(p, "flip"))
    0.5

    References:
      Paper 003, sec. 2.2 ("the fraction of removed connections is about 45%").
    """
    pairs = _checked_pairs(params, kind)
    changed = jnp.sum(jnp.stack([jnp.sum(gate(t, kind) <= 0) for _, _, t in pairs]))
    return changed / sum(jnp.size(t) for _, _, t in pairs)


def connectivity_mask(params: Params, kind: str) -> Mask:
    """The trained connectivity as a boolean pytree shaped like the plain (unscored) params.

    Each ``{"weights": W, "scores": T}`` pair becomes ``{"weights": bool}``: for ``"mask"``,
    True where the connection is kept (``t > 0``); for ``"flip"``, True where the weight keeps
    its initial sign (``t >= 0``). The result has the structure of the ``kind=None`` model's
    params, so it can serve as a :data:`~jaxprune.Mask` elsewhere.

    >>> import jax.numpy as jnp
    >>> p = {"out": {"weights": jnp.ones(3), "scores": jnp.array([0.2, -0.1, 0.0])}}
    >>> connectivity_mask(p, "mask")["out"]["weights"].tolist()
    [True, False, False]

    References:
      Paper 003, Eq. 1 (the mask ``M``) and sec. 3 (the sign filter ``F``).
    """
    _checked_pairs(params, kind)
    return _replace_pairs(params, lambda w, t: gate(t, kind) > 0)


def effective_weights(params: Params, kind: str) -> Params:
    """The weights the network uses, ``w * m(t)`` or ``w * f(t)``, without the scores.

    The result is the params of the same architecture built with ``kind=None``: e.g.
    ``lenet_300_100(kind=None).apply({"params": effective_weights(p, "mask")}, x)`` equals the
    masked network's output. For ``"mask"`` the pruned entries are exact zeros (sparse).

    >>> import jax.numpy as jnp
    >>> p = {"out": {"weights": jnp.array([1.0, 2.0]), "scores": jnp.array([-0.1, 0.1])}}
    >>> effective_weights(p, "flip")["out"]["weights"].tolist()
    [-1.0, 2.0]

    References:
      Paper 003, Eq. 2.
    """
    _checked_pairs(params, kind)
    return _replace_pairs(params, lambda w, t: w * gate(t, kind).astype(jnp.result_type(w)))


def size_in_bits(params: Params, kind: str, float_bits: int = 32) -> dict[str, int]:
    """Storage of the dense network vs the factored one of sec. 2.3 (1 bit per sign).

    * ``dense_bits``: every weight as a ``float_bits`` float (the trained-weights baseline).
    * ``factored_bits``: after Eq. 6 factoring (Signed He Constant weights), one
      ``float_bits`` scale plus, per weight, 1 bit (the effective sign ``sign(w) f(t)``) for
      ``"flip"``, or 2 bits (sign and keep bit, a fixed-width code; a ternary code would need
      ``log2 3`` bits) for ``"mask"``.

    Args:
      params: masked params with constant-magnitude weights per layer.
      kind: ``"mask"`` or ``"flip"``.
      float_bits: bits of one float.

    Returns:
      ``{"weights": n, "dense_bits": ..., "factored_bits": ...}``.

    Raises:
      ValueError: if the weights cannot be factored (see
        :func:`~jaxprune.rewrites.factor_weights`) or ``kind`` is unknown.

    >>> import jax.numpy as jnp
    >>> p = {"out": {"weights": jnp.array([0.5, -0.5]), "scores": jnp.array([0.1, -0.1])}}
    >>> size_in_bits(p, "flip")
    {'weights': 2, 'dense_bits': 64, 'factored_bits': 34}

    References:
      Paper 003, sec. 2.3 (Eq. 6) and sec. 4 (only the filter ``F`` of one-bit signs needs to be
      stored).
    """
    pairs = _checked_pairs(params, kind)
    factor_weights(params)  # raises unless every layer has one magnitude
    n = int(sum(jnp.size(w) for _, w, _ in pairs))
    per_weight = 1 if kind == "flip" else 2
    return {
        "weights": n,
        "dense_bits": n * float_bits,
        "factored_bits": n * per_weight + float_bits,
    }
