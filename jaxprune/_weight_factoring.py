"""Weight factoring (paper 003, sec. 2.3, Eq. 6): unit-magnitude signs, one scale on the input
(private core shared by rewrites and analysis; public as ``jaxprune.rewrites.factor_weights``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._types import Params

__all__ = ["WEIGHT_NAMES", "factor_weights"]

WEIGHT_NAMES = ("weights", "kernel")
"""Leaf names treated as weights (masked layers' ``weights``, Flax's ``kernel``)."""


def _name(key) -> str | None:
    return getattr(key, "key", getattr(key, "name", None))


def factor_weights(params: Params, rtol: float = 1e-5) -> tuple[Params, float]:
    """Factors constant-magnitude weights out of a bias-free ReLU network.

    For Signed He Constant weights every layer ``l`` has ``w_ij = |w^l| s_ij`` with a sign
    ``s_ij``; with ReLU (and max-pooling), ``max(0, a x) = a max(0, x)`` for ``a > 0``, so each
    layer's magnitude can be pulled out (Eq. 5) and, recursively, moved onto the input (Eq. 6):
    ``net_W(x) = net_S(x * prod_l |w^l|)``. This returns the signs ``S`` (weights of magnitude 1)
    and the scale ``prod_l |w^l|``. Since the output is a positive multiple of ``net_S(x)``,
    ``argmax net_S(x) = argmax net_W(x)``: at inference the scale can even be dropped.

    Scores (any leaf with ``scores`` on its path) are returned unchanged: masks and sign flips
    act on the factored weights exactly as on the original ones.

    Args:
      params: parameter pytree of a bias-free network; weight leaves are those named
        ``"weights"`` or ``"kernel"`` (outside ``scores``) and must have one magnitude each.
      rtol: relative tolerance of the constant-magnitude check (float32 rounding of
        ``sqrt(2 / n)``).

    Returns:
      ``(sign_params, scale)``: ``params`` with each weight replaced by its sign (same dtype),
      and the Python float ``prod_l |w^l|``.

    Raises:
      ValueError: if a leaf is named ``"bias"`` (Eq. 6 needs a bias-free network), no weight
        leaf is found, or a weight leaf does not have a single nonzero magnitude.

    >>> import jax.numpy as jnp
    >>> params = {"dense_0": {"weights": jnp.array([[0.5, -0.5]])},
    ...           "out": {"weights": jnp.array([[2.0], [-2.0]])}}
    >>> signs, scale = factor_weights(params)
    >>> signs["out"]["weights"].ravel().tolist(), scale
    ([1.0, -1.0], 1.0)

    References:
      Paper 003, sec. 2.3, Eqs. 5-6 (weight removal for the Signed He Constant distribution).
    """
    scale = 1.0
    found = False

    def visit(path, leaf):
        nonlocal scale, found
        names = [_name(k) for k in path]
        where = jax.tree_util.keystr(path)
        if "scores" in names:
            return leaf
        if names and names[-1] == "bias":
            raise ValueError(f"params: Eq. 6 needs a bias-free network, found a bias at {where}")
        if not names or names[-1] not in WEIGHT_NAMES:
            return leaf
        w = np.asarray(leaf, dtype=np.float64)
        mag = np.abs(w)
        m = float(mag.max()) if mag.size else 0.0
        if m == 0.0 or not np.allclose(mag, m, rtol=rtol, atol=0.0):
            raise ValueError(
                f"params: weights at {where} do not have one nonzero magnitude "
                f"(min {mag.min() if mag.size else 0.0:.6g}, max {m:.6g}); Eq. 6 factoring "
                "needs constant-magnitude (Signed He Constant) weights"
            )
        found = True
        scale *= float(np.mean(mag))
        return jnp.sign(leaf).astype(jnp.result_type(leaf))

    signs = jax.tree_util.tree_map_with_path(visit, params)
    if not found:
        raise ValueError(f"params: no weight leaf named one of {WEIGHT_NAMES} found")
    return signs, scale
