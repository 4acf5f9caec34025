"""The pieces of layerwise reinitialization LW (paper 002, Algorithm 1): norms, rescale, normalize.

Blocks are given as a sequence of tuples of top-level parameter names, in forward order
(``model.lw_blocks()`` for the bundled models, :func:`~jaxprune.graph.extend.default_blocks`
from the traced graph for any other);
``k`` is 1-based as in the paper. A "layer" is one top-level entry of the params (``relu_0``,
``conv_2``, ``norm_2``...); its norm is the Frobenius norm of its *weights* together: every leaf
but ``bias`` (a dense or conv kernel, a norm layer's ``scale``), as the paper says ("rescale the
weights", App. A: "scale back all weights such that the norm of each layer matches the norm
after initialization"); biases are left as they are. ``include_biases=True`` is the alternative:
the norm of all the layer's tensors, all scaled by one factor. ``k`` may be a traced
integer (all functions are jittable with a dynamic ``k``; it is range-checked when concrete).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune._types import Model, Params, PyTree
from jaxprune.graph.extend import (
    Blocks,
    block_index,
    block_statistics,
    check_blocks,
    is_bias,
    layer_norms,
    static_int,
)
from jaxprune.models import NORM_COLLECTION, slot_name

__all__ = ["rescale_blocks", "update_normalization"]


def rescale_blocks(
    params: Params,
    init_norms: dict[str, jax.Array],
    blocks: Blocks,
    k: int | jax.Array,
    *,
    include_biases: bool = False,
) -> Params:
    """Scales the weights of every layer of blocks ``1..k`` back to their initial norm (line 4).

    Each layer's weights (leaves other than ``bias``) are multiplied by ``init_norm /
    current_norm`` of the weights; its biases are unchanged (the paper rescales "the weights").
    With ``include_biases=True`` the norms count all tensors and all are scaled by one factor.
    A layer whose current norm is 0 is left as it is; layers outside blocks ``1..k`` are
    unchanged. ``init_norms`` must be :func:`~jaxprune.analysis.layer_norms` with the same
    ``include_biases``.

    Args:
      params: current parameters.
      init_norms: :func:`~jaxprune.analysis.layer_norms` of the initial parameters.
      blocks: the LW blocks (tuples of top-level names), in forward order.
      k: 1-based block index (Python int or traced integer).
      include_biases: count and scale the biases too (not the paper's choice).

    Returns:
      The rescaled parameters.

    Raises:
      ValueError: bad blocks or ``k``, or a block layer missing from ``init_norms``.

    >>> import jax.numpy as jnp
    >>> p = {"a": {"w": jnp.array([6.0, 8.0]), "bias": jnp.array([2.0])},
    ...      "b": {"w": jnp.array([1.0])}}
    >>> r = rescale_blocks(p, {"a": jnp.array(5.0), "b": jnp.array(2.0)}, [["a"], ["b"]], k=1)
    >>> r["a"]["w"].tolist(), r["a"]["bias"].tolist(), r["b"]["w"].tolist()
    ([3.0, 4.0], [2.0], [1.0])

    References:
      Paper 002, Algorithm 1, line 4; App. A ("scale back all weights such that the norm of each
      layer matches the norm after initialization").
    """
    blocks = check_blocks(params, blocks, k)
    index = block_index(blocks)
    missing = sorted(set(index) - set(init_norms))
    if missing:
        raise ValueError(f"init_norms: no recorded norm for layer(s) {missing}")
    now = layer_norms({name: params[name] for name in index}, include_biases=include_biases)
    out = dict(params)
    for name, i in index.items():
        factor = jnp.where(
            (i <= k) & (now[name] > 0),
            init_norms[name] / jnp.where(now[name] > 0, now[name], 1.0),
            1.0,
        )

        def scale(path, w, f=factor):
            if not include_biases and is_bias(path):
                return w
            return (w * f).astype(w.dtype)

        out[name] = jax.tree_util.tree_map_with_path(scale, params[name])
    return out


def update_normalization(
    model: Model,
    variables: PyTree,
    x: jax.Array,
    k: int | jax.Array,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
) -> PyTree:
    """Inserts/updates the lambda layer ``(x - mu) / sigma`` after block ``k`` (lines 5-11).

    ``mu`` and ``sigma`` are the scalar mean and standard deviation of block ``k``'s output on the
    sample ``x``, computed with the current slots of the blocks below. "Insert" (``n = 1``) and
    "update" (``n > 1``) are the same operation here: every slot exists from ``model.init`` as the
    identity (``mean=0, std=1``), so the variables keep one structure. The other slots are
    unchanged; ``variables`` must hold the ``"lw_norm"`` collection.

    Args:
      model: a module with LW normalization slots (:func:`jaxprune.models.norm_slot`).
      variables: ``{"params": ..., "lw_norm": ...}``.
      x: the sample batch ``X``.
      k: 1-based block index (int or traced integer).
      model_kwargs: keyword arguments of ``model.apply`` (``{"train": False}``).

    Returns:
      New variables with slot ``block_{k}`` set.

    Raises:
      ValueError: when ``variables`` has no ``"lw_norm"`` collection or ``k`` is out of range.

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> model = jp.models.BlockMLP(hidden=(8,), out=2)
    >>> x = jax.random.normal(jax.random.key(0), (64, 3))
    >>> v = update_normalization(model, model.init(jax.random.key(1), x), x, k=1)
    >>> h = jax.nn.relu(x @ v["params"]["relu_0"]["kernel"] + v["params"]["relu_0"]["bias"])
    >>> bool(jnp.allclose(v["lw_norm"]["block_1"]["mean"], h.mean()))
    True

    References:
      Paper 002, Algorithm 1, lines 5-11.
    """
    if NORM_COLLECTION not in variables:
        raise ValueError(
            f"variables: expected a {NORM_COLLECTION!r} collection (from model.init), got "
            f"{sorted(variables)}"
        )
    slots = variables[NORM_COLLECTION]
    kmax = len(slots)
    kk = static_int(k)
    if kk is not None and not 1 <= kk <= kmax:
        raise ValueError(f"k: expected 1 <= k <= {kmax} (the number of blocks), got {k}")
    stats = block_statistics(model, variables, x, model_kwargs=model_kwargs)
    new = {}
    for j in range(1, kmax + 1):
        name = slot_name(j)
        mu, sigma = stats[name]
        old = slots[name]
        new[name] = {
            "mean": jnp.where(j == k, mu, old["mean"]).astype(old["mean"].dtype),
            "std": jnp.where(j == k, sigma, old["std"]).astype(old["std"].dtype),
        }
    return {**variables, NORM_COLLECTION: new}
