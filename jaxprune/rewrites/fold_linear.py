"""Fold linearized PReLU channels into their neighbours (beyond paper 004; uses paper 000's fold).

A PReLU channel with slope exactly 1 is the identity: its value is an affine function of the
layer's inputs, so it can be multiplied into every layer that reads it (paper 000, Eq. 6,
``fold_dense``). A layer whose channels are *all* linear disappears (its
neighbours are joined directly, as :func:`~jaxprune.collapse` does for linear layers); a partially
linear layer keeps its nonlinear channels and its linear ones become a direct (skip) connection
from the layer's inputs to the layer's readers.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._types import Params
from jaxprune.models.prelu import PReLUMLP
from jaxprune.rewrites._collapse_mlp import fold_dense

__all__ = ["MLPCost", "fold_linear", "mlp_cost"]


class MLPCost(NamedTuple):
    """Size of a :class:`~jaxprune.models.PReLUMLP`.

    Attributes:
      params: number of scalar parameters (kernels, biases, slopes).
      macs: multiply-accumulates per example (the kernel entries; FLOPs are about ``2 * macs``).
      depth: number of hidden (PReLU) layers.
      nonlinear_units: PReLU channels whose slope is not exactly 1.
    """

    params: int
    macs: int
    depth: int
    nonlinear_units: int


def _check(model, params) -> int:
    if not isinstance(model, PReLUMLP):
        raise TypeError(f"model: expected a jaxprune.models.PReLUMLP, got {type(model).__name__}")
    try:
        d = int(np.shape(params["dense_0"]["kernel"])[0])
    except (KeyError, TypeError, IndexError):
        raise ValueError("params['dense_0']['kernel']: missing (the first hidden layer)") from None
    want = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, d), "float32"))
    want = want["params"]
    if jax.tree.structure(want) != jax.tree.structure(params):
        raise ValueError(
            f"params: structure {sorted(params)} does not match {model}; expected "
            f"layers {sorted(want)}"
        )
    for (path, w), p in zip(
        jax.tree_util.tree_flatten_with_path(want)[0], jax.tree.leaves(params), strict=True
    ):
        if tuple(w.shape) != tuple(np.shape(p)):
            raise ValueError(
                f"params{jax.tree_util.keystr(path)}: expected shape {w.shape}, got {np.shape(p)}"
            )
    return d


def mlp_cost(model: PReLUMLP, params: Params) -> MLPCost:
    """Parameters, MACs per example, depth and nonlinear channels of a ``PReLUMLP``.

    >>> import jax, jaxprune as jp
    >>> net = jp.models.PReLUMLP(hidden=(4,), out=2)
    >>> p = net.init(jax.random.key(0), jax.numpy.zeros((1, 3)))["params"]
    >>> jp.rewrites.mlp_cost(net, p)
    MLPCost(params=30, macs=20, depth=1, nonlinear_units=4)

    References:
      Paper 004, sec. 3 (linear channels); paper 000, sec. 3 (parameter counts).
    """
    _check(model, params)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    n = sum(int(np.size(v)) for _, v in leaves)
    macs = sum(
        int(np.size(v)) for path, v in leaves if jax.tree_util.keystr(path).endswith("['kernel']")
    )
    nonlinear = sum(
        int(np.sum(np.asarray(params[f"prelu_{i}"]["slope"]) != 1))
        for i in range(len(model.hidden))
    )
    return MLPCost(n, macs, len(model.hidden), nonlinear)


def fold_linear(model: PReLUMLP, params: Params, *, only_if_smaller: bool = True):
    """Removes the linear (slope exactly 1) PReLU channels of a ``PReLUMLP``; outputs unchanged.

    Hidden layers are visited in order. For a layer ``v`` with linear channels ``L``, every
    reader ``w`` of ``v`` (the next layer, or a skip target) gets, from every input ``u`` of
    ``v``, the folded kernel ``K_uv[:, L] @ K_vw[L, :]`` (added to an existing connection or a
    new skip ``skip_{u}_{w}``) and the bias ``b_v[L] @ K_vw[L, :]``
    (``fold_dense``); ``L`` is then removed from ``v``. A layer left with
    no channels is removed and the network gets shallower; at least one hidden layer is kept.
    Arithmetic is float64, so outputs match to float rounding of the original dtype.

    Only channels whose slope is *exactly* 1 fold (after :func:`~jaxprune.transforms.slope_sparsity`
    or :func:`~jaxprune.rewrites.set_linear_slopes`); a slope of 0.995 is not linear.

    Args:
      model: a :class:`~jaxprune.models.PReLUMLP` (skips allowed).
      params: its params.
      only_if_smaller: fold a layer's linear channels only when that does not increase the
        parameter count (a narrow linear bottleneck is cheaper than the full skip it would
        become); ``False`` folds every linear channel (smallest depth).

    Returns:
      ``(PReLUMLP, params)``; hidden layers and nodes are renumbered, skips added as needed.

    Raises:
      TypeError: ``model`` is not a ``PReLUMLP``.
      ValueError: ``params`` do not match ``model`` (the message names the path).

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> net = jp.models.PReLUMLP(hidden=(8, 8, 8), out=2)
    >>> x = jax.random.normal(jax.random.key(1), (5, 3))
    >>> p = net.init(jax.random.key(0), x)["params"]
    >>> p = jp.rewrites.set_linear_slopes(p, {"prelu_1": jnp.ones(8, bool)})
    >>> small, q = jp.rewrites.fold_linear(net, p)
    >>> small.hidden, jp.rewrites.mlp_cost(net, p).params, jp.rewrites.mlp_cost(small, q).params
    ((8, 8), 218, 138)
    >>> bool(jnp.allclose(net.apply({"params": p}, x), small.apply({"params": q}, x), atol=1e-5))
    True

    References:
      Beyond paper 004 (sec. 3: a linearized channel only forms linear combinations); the fold
      itself is paper 000, sec. 3.1, Eq. 6.
    """
    _check(model, params)
    n_hidden = len(model.hidden)
    last = n_hidden + 1
    dtype = {i: jnp.result_type(params[f"prelu_{i}"]["slope"]) for i in range(n_hidden)}
    f64 = lambda a: np.asarray(a, np.float64)
    # node b >= 1: bias[b]; edges[(a, b)]: kernel; slope[b] for hidden nodes
    bias = {
        b: f64(params["out" if b == last else f"dense_{b - 1}"]["bias"]) for b in range(1, last + 1)
    }
    edges = {
        (b - 1, b): f64(params["out" if b == last else f"dense_{b - 1}"]["kernel"])
        for b in range(1, last + 1)
    }
    for a, b in model.skips:
        edges[(a, b)] = f64(params[f"skip_{a}_{b}"]["kernel"])
    slope = {b: f64(params[f"prelu_{b - 1}"]["slope"]) for b in range(1, last)}
    kdtype = {
        key: jnp.result_type(
            params[f"skip_{key[0]}_{key[1]}"]["kernel"]
            if key in model.skips
            else params["out" if key[1] == last else f"dense_{key[1] - 1}"]["kernel"]
        )
        for key in edges
    }
    out_dtype = jnp.result_type(params["out"]["kernel"])
    width = {0: edges[(0, 1)].shape[0], **{b: bias[b].size for b in bias}}
    alive = list(range(1, last))
    for v in range(1, last):
        lin = slope[v] == 1.0
        if not lin.any():
            continue
        if lin.all() and len(alive) == 1:
            continue
        ins = [a for (a, b) in edges if b == v]
        outs = [w for (a, w) in edges if a == v]
        nl = int(lin.sum())
        before = sum(width[u] * nl for u in ins) + 2 * nl + sum(nl * width[w] for w in outs)
        after = sum(width[u] * width[w] for u in ins for w in outs if (u, w) not in edges)
        if only_if_smaller and after > before and not (lin.all() and after == 0):
            continue
        for w in outs:
            k_vw = edges[(v, w)][lin]
            for u in ins:
                k, _ = fold_dense(edges[(u, v)][:, lin], None, k_vw, None)
                edges[(u, w)] = edges.get((u, w), 0.0) + np.asarray(k, np.float64)
            bias[w] = bias[w] + f64(bias[v][lin] @ k_vw)
            edges[(v, w)] = edges[(v, w)][~lin]
        for u in ins:
            edges[(u, v)] = edges[(u, v)][:, ~lin]
        bias[v], slope[v] = bias[v][~lin], slope[v][~lin]
        width[v] = int((~lin).sum())
        if width[v] == 0:
            alive.remove(v)
            edges = {k: e for k, e in edges.items() if v not in k}
    nodes = [0, *alive, last]
    new_id = {old: i for i, old in enumerate(nodes)}
    skips = tuple(sorted((new_id[a], new_id[b]) for a, b in edges if new_id[b] - new_id[a] >= 2))
    small = PReLUMLP(
        hidden=tuple(width[v] for v in alive),
        out=model.out,
        out_activation=model.out_activation,
        skips=skips,
    )
    new = {}
    for i, v in enumerate(alive):
        prev = nodes[i]
        new[f"dense_{i}"] = {
            "kernel": edges[(prev, v)].astype(kdtype.get((prev, v), dtype[v - 1])),
            "bias": bias[v].astype(dtype[v - 1]),
        }
        new[f"prelu_{i}"] = {"slope": slope[v].astype(dtype[v - 1])}
    new["out"] = {
        "kernel": edges[(nodes[-2], last)].astype(out_dtype),
        "bias": bias[last].astype(out_dtype),
    }
    for a, b in skips:
        key = (nodes[a], nodes[b])
        new[f"skip_{a}_{b}"] = {"kernel": edges[key].astype(kdtype.get(key, out_dtype))}
    to_jax = jax.tree.map(lambda a: jnp.asarray(a), new)
    return small, to_jax
