"""Trivially redundant units and kernels (paper 000, sec. 4.1 step 5b and sec. 5), by unit."""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._data_checks import check_finite
from jaxprune.analysis._resolve import resolve

__all__ = [
    "REDUNDANCY_THRESHOLD",
    "redundancy_groups",
    "redundant_units",
    "unit_similarity",
]

REDUNDANCY_THRESHOLD = 0.99
"""Paper 000's normalized-dot-product threshold for a trivially redundant pair."""


def _check_threshold(threshold) -> None:
    if isinstance(threshold, jax.core.Tracer):  # traced (a jit argument): checked by the caller
        return
    if not float(threshold) > 0:
        raise ValueError(f"threshold: expected a value in (0, inf), got {threshold}")


def _normalize(v: jax.Array) -> jax.Array:
    norm = jnp.linalg.norm(v, axis=-1, keepdims=True)
    # A zero vector (e.g. a pruned unit) is similar to nothing: its normalized form is 0.
    return jnp.where(norm > 0, v / jnp.where(norm > 0, norm, 1), 0)


def unit_similarity(
    kernel: jax.Array, bias: jax.Array | None = None, *, circular: bool = False
) -> jax.Array:
    """Normalized dot products between the units' incoming weight vectors (bias included).

    Unit ``u``'s vector is ``concat(kernel[..., u].ravel(), [bias[u]])``. For a conv kernel
    ``(k, k, in, w)`` with ``circular=True``, the similarity of ``u`` and ``v`` is the maximum
    over all ``k*k`` circular permutations of ``u``'s kernel (``jnp.roll`` along both spatial
    axes, the bias unchanged): a kernel is also redundant with its circular permutations, whose
    outputs on large inputs are close to shifted copies (sec. 5). The result is symmetric, with
    ones on the diagonal (zero for an all-zero unit, which is similar to nothing).

    Args:
      kernel: ``(in, w)`` dense or ``(k, k, in, w)`` conv kernel.
      bias: ``(w,)`` or ``None`` (no bias).
      circular: also compare circular permutations (conv kernels only).

    Returns:
      ``(w, w)`` similarities in ``[-1, 1]``.

    Raises:
      ValueError: for ``circular`` on a non-4-D kernel or a bias of the wrong shape.

    >>> import jax.numpy as jnp
    >>> k = jnp.array([[1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])   # units 0 and 1 parallel
    >>> unit_similarity(k, jnp.array([1.0, 2.0, 0.0])).round(3).tolist()
    [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]

    References:
      Paper 000, sec. 4.1 step 5b (normalized dot product of weights incl. bias) and sec. 5
      (trivially redundant and circularly permuted kernels).
    """
    kernel = jnp.asarray(kernel)
    w = kernel.shape[-1]
    if bias is not None and jnp.shape(bias) != (w,):
        raise ValueError(f"bias: expected shape ({w},), got {jnp.shape(bias)}")
    if circular and kernel.ndim != 4:
        raise ValueError(f"circular: needs a conv kernel (k, k, in, w), got shape {kernel.shape}")

    def vectors(k):
        v = jnp.moveaxis(k, -1, 0).reshape(w, -1)
        return v if bias is None else jnp.concatenate([v, jnp.asarray(bias)[:, None]], axis=1)

    ref = _normalize(vectors(kernel))
    if not circular:
        return ref @ ref.T
    kh, kw = kernel.shape[:2]
    shifts = jnp.array([(a, b) for a in range(kh) for b in range(kw)])

    def rolled(shift):
        k = jnp.roll(kernel, shift[0], axis=0)
        return _normalize(vectors(jnp.roll(k, shift[1], axis=1))) @ ref.T

    sims = jax.vmap(rolled)(shifts)  # [shift, u (rolled), v]
    return jnp.max(sims, axis=0)


def redundancy_groups(similarity: jax.Array, threshold: float = REDUNDANCY_THRESHOLD) -> jax.Array:
    """Connected components of the relation ``similarity >= threshold``.

    Two units are in one group when a chain of pairs, each at or above ``threshold``, links
    them (paper: "as long as each node in the group is trivially redundant with at least one
    other"). Computed by repeated boolean squaring of the adjacency matrix (``ceil(log2 w)``
    matmuls), so it is jittable and ``vmap``-able.

    Args:
      similarity: ``(w, w)`` symmetric similarities (e.g. :func:`unit_similarity`).
      threshold: in ``(0, inf)``; pairs at or above it are linked.

    Returns:
      ``(w,)`` int labels: the smallest unit index of each unit's group.

    >>> import jax.numpy as jnp
    >>> s = jnp.array([[1, .995, 0, 0], [.995, 1, 0, .992], [0, 0, 1, 0], [0, .992, 0, 1]])
    >>> redundancy_groups(s).tolist()
    [0, 0, 2, 0]

    References:
      Paper 000, sec. 4.1 step 5b.
    """
    _check_threshold(threshold)
    similarity = jnp.asarray(similarity)
    w = similarity.shape[0]
    if similarity.shape != (w, w):
        raise ValueError(f"similarity: expected a square matrix, got {similarity.shape}")
    reach = (similarity >= threshold) | jnp.eye(w, dtype=bool)
    reach = reach | reach.T
    for _ in range(max(1, math.ceil(math.log2(max(w, 2))))):
        r = reach.astype(jnp.float32)
        reach = (r @ r) > 0
    return jnp.argmax(reach, axis=1).astype(jnp.int32)


def _redundant_in_layer(similarity, threshold, scores) -> jax.Array:
    w = similarity.shape[0]
    labels = redundancy_groups(similarity, threshold)
    same = labels[:, None] == labels[None, :]
    idx = jnp.arange(w)
    s = jnp.zeros(w) if scores is None else jnp.asarray(scores, jnp.float32)
    if s.shape != (w,):
        raise ValueError(f"scores: expected shape ({w},) per layer, got {s.shape}")
    # better[i, j]: unit j is preferred over unit i (higher score, ties to the lower index).
    si, sj = s[:, None], s[None, :]
    better = (sj > si) | ((sj == si) & (idx[None, :] < idx[:, None]))
    return jnp.any(same & better, axis=1)


def _bias_leaf(kernel: str, slices, leaves) -> str | None:
    """The unit's bias: a 1-D write slice beside the kernel (same parent path)."""
    parent = kernel.rsplit("/", 1)[0] if "/" in kernel else ""
    for leaf, _, _ in slices:
        lp = leaf.rsplit("/", 1)[0] if "/" in leaf else ""
        if leaf != kernel and lp == parent and jnp.ndim(leaves[leaf]) == 1:
            return leaf
    return None


def _unit_similarity(graph, leaves, name: str, circular: bool) -> jax.Array:
    """``(w, w)`` similarity of a unit group's incoming weights (see :func:`redundant_units`)."""
    unit = graph.units[name]
    slices = graph.slices(name, incoming=True, outgoing=False)
    by_leaf = {leaf: (axis, idx) for leaf, axis, idx in slices}
    pairs = zip(graph.layers, graph.analysis.layers, strict=True)
    infos = {graph.layers[n].kernel: info for n, info in pairs}
    sim = jnp.zeros((unit.width, unit.width))
    done = np.zeros(unit.width, bool)
    for layer in unit.layers:  # each channel: the first layer that writes it
        kernel = graph.layers[layer].kernel
        if kernel not in by_leaf:
            continue
        axis, idx = by_leaf[kernel]
        pos = np.flatnonzero((idx >= 0) & ~done[np.maximum(idx, 0)])
        if pos.size == 0:
            continue
        chan = idx[pos]
        done[chan] = True
        info = infos[kernel]
        k = jnp.take(leaves[kernel], pos, axis=axis)
        if info.kernel_in_axis is not None:  # (spatial..., in, out) as a linen kernel
            k = jnp.moveaxis(k, (info.kernel_in_axis, axis), (-2, -1))
        else:  # depthwise: no input axis
            k = jnp.moveaxis(k, axis, -1)
        bias_leaf = _bias_leaf(kernel, slices, leaves)
        bias = None
        if bias_leaf is not None:
            b_axis, b_idx = by_leaf[bias_leaf]
            order = np.full(unit.width, -1)
            order[b_idx[b_idx >= 0]] = np.flatnonzero(b_idx >= 0)
            bias = jnp.take(leaves[bias_leaf], order[chan], axis=b_axis)
        circ = circular and k.ndim == 4 and graph.layers[layer].op == "conv"
        block = unit_similarity(k, bias, circular=circ)
        sim = sim.at[np.ix_(chan, chan)].set(block)
    return sim


def redundant_units(
    model,
    variables,
    x=None,
    threshold: float = REDUNDANCY_THRESHOLD,
    *,
    scores: Mapping[str, jax.Array] | None = None,
    circular: bool = False,
    **kwargs,
) -> dict[str, jax.Array]:
    """Trivially redundant units of every unit group: all but one member of each group.

    A unit's vector is its incoming weights: its column of the kernel of the first layer that
    writes it (the unit group's first layer; a conv filter for a conv unit) and that layer's
    bias entry, found by the graph's write slices (:meth:`~jaxprune.graph.Graph.slices`), so
    it works on the dense and conv units of any model. Groups are the connected components of
    :func:`redundancy_groups` on :func:`unit_similarity`. One member of each group is **kept**
    (not redundant): the one with the highest ``scores`` value (e.g. the ablation loss ratio,
    so the most contributing member stays), ties and ``scores=None`` going to the lowest unit
    index. The other members are redundant; a unit alone in its group is never redundant.
    Jittable (trace-time shapes only).

    Args:
      model: a ``flax.linen``/``flax.nnx``/equinox module, a function ``f(params, x)``, or a
        :class:`~jaxprune.graph.Graph` (then ``x`` may be omitted).
      variables: its variables (see :func:`jaxprune.trace`); ``None`` for NNX/equinox modules or
        a Graph's own.
      x: an example input (only its shapes matter).
      threshold: similarity at or above which a pair is redundant (paper: 0.99), in
        ``(0, inf)``.
      scores: optional ``{unit: float[width]}`` preference for the member to keep.
      circular: for conv units, also match circular permutations of kernels (sec. 5).
      **kwargs: keyword arguments of the model call (``train=False``), passed to the trace.

    Returns:
      ``{unit: bool[width]}``, True for a redundant unit.

    Raises:
      ValueError: for a non-positive ``threshold``, unknown units / wrong shapes in
        ``scores``, or NaN/inf in ``variables`` or ``scores`` (a NaN similarity is never
        redundant; values traced under ``jit`` are not inspected).

    >>> import jax.numpy as jnp, flax.linen as nn
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(3)(x))
    ...         return nn.Dense(1)(h)
    >>> k0, b0 = jnp.array([[1.0, 2.0, 0.0]]), jnp.array([1.0, 2.0, 1.0])
    >>> p = {"Dense_0": {"kernel": k0, "bias": b0},
    ...      "Dense_1": {"kernel": jnp.ones((3, 1)), "bias": jnp.zeros(1)}}
    >>> x = jnp.ones((1, 1))
    >>> redundant_units(Net(), {"params": p}, x)["Dense_0"].tolist()
    [False, True, False]
    >>> scores = {"Dense_0": jnp.array([0.5, 3.0, 1.0])}
    >>> redundant_units(Net(), {"params": p}, x, scores=scores)["Dense_0"].tolist()
    [True, False, False]

    References:
      Paper 000, sec. 4.1 step 5b and sec. 5.
    """
    _check_threshold(threshold)
    graph, variables = resolve(model, variables, None if x is None else (x,), kwargs)
    check_finite("variables", variables)
    scores = dict(scores or {})
    check_finite("scores", scores)
    unknown = sorted(set(scores) - set(graph.units))
    if unknown:
        raise ValueError(
            f"scores: unknown unit(s) {unknown}; the model's units are {list(graph.units)}"
        )
    leaves = graph.model.leaves(variables)
    out = {}
    for name, unit in graph.units.items():
        sim = _unit_similarity(graph, leaves, name, circular)
        s = scores.get(name)
        if s is not None and jnp.shape(s) != (unit.width,):
            raise ValueError(
                f"scores[{name!r}]: expected shape ({unit.width},), got {jnp.shape(s)}"
            )
        out[name] = _redundant_in_layer(sim, threshold, s)
    return out
