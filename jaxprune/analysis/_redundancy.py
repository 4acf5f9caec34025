"""Trivially redundant units and kernels (paper 000, sec. 4.1 step 5b and sec. 5), by unit."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._data_checks import check_finite
from jaxprune._types import Model, Variables
from jaxprune.analysis._resolve import resolve
from jaxprune.graph import GraphError
from jaxprune.graph.extend import SliceInfo, affine_runs, run_scale_shift

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


def _on_group(graph, act, root: int) -> np.ndarray:
    sl = SliceInfo("", 0, act.segs, act.outer, act.inner, "write")
    return graph._index(sl, root)


def _unit_similarity(graph, leaves, name: str, circular: bool, runs) -> jax.Array:
    """``(w, w)`` similarity of a unit group's folded incoming weights (see
    :func:`redundant_units`)."""
    unit = graph.units[name]
    an = graph.analysis
    w = unit.width
    slices = graph.slices(name, incoming=True, outgoing=False)
    by_leaf = {leaf: (axis, idx) for leaf, axis, idx in slices}
    layer_run = {r.layer: r for r in runs if r.layer is not None}
    covered = set()
    blocks = []  # writers: (kernel (..., w) with the units last, shift (w,), is a conv kernel)
    later = []  # per-channel maps after the writers: (params (w, m), shift (w,), written)

    def on_group(run):
        out_chan = _on_group(graph, run.act, unit.root)
        ok = out_chan >= 0
        scale, shift = run_scale_shift(an, leaves, run)
        a = jnp.zeros(w).at[out_chan[ok]].set(scale[ok])
        d = jnp.zeros(w).at[out_chan[ok]].set(shift[ok])
        written = np.zeros(w, bool)
        written[out_chan[ok]] = True
        return a, d, written

    for info in an.layers:  # every layer writing the group's channels
        kernel = info.kernel
        if kernel not in by_leaf or info.index not in layer_run:
            continue
        run = layer_run[info.index]
        covered |= {kernel, *run.leaves}
        axis, idx = by_leaf[kernel]
        pos = np.flatnonzero(idx >= 0)
        chan = idx[pos]
        k = jnp.take(leaves[kernel], pos, axis=axis)
        if info.kernel_in_axis is not None:  # (spatial..., in, units) as a linen kernel
            k = jnp.moveaxis(k, (info.kernel_in_axis, axis), (-2, -1))
        else:
            k = jnp.moveaxis(k, axis, -1)
        a, d, written = on_group(run)
        k_full = jnp.zeros(k.shape[:-1] + (w,), jnp.float32).at[..., chan].set(k * a[chan])
        if info.op == "depthwise_conv":  # a per-channel filter on the group's own channels
            later.append((jnp.moveaxis(k_full, -1, 0).reshape(w, -1), d, written))
        else:
            blocks.append((k_full, d, k.ndim == 4 and info.op == "conv"))
    for run in runs:  # per-channel scales and shifts after a join (a pre-activation BatchNorm)
        if run.layer is not None or not run.act.segs:
            continue
        if not (_on_group(graph, run.act, unit.root) >= 0).any():
            continue
        covered |= run.leaves
        if run.activation:  # an activation's own parameters (PReLU slopes): not compared
            continue
        a, d, written = on_group(run)
        later.append((a[:, None], d, written))
    uncovered = sorted({leaf for leaf, _, _ in slices} - covered)
    if uncovered:
        raise GraphError(
            f"redundant_units: unit group {name!r}: the parameters {uncovered} "
            "act on its channels other than as a per-channel scale or shift "
            "of a layer's output (a BatchNorm using batch statistics, a LayerNorm), so its units "
            "have no fixed incoming weights to compare; for BatchNorm, trace the model in "
            "evaluation mode (train=False, or model.eval() for an NNX module)"
        )

    def stream(shift_):
        parts = []
        for k, d, is_conv in blocks:
            if is_conv and shift_ is not None:
                k = jnp.roll(k, (shift_[0] % k.shape[0], shift_[1] % k.shape[1]), axis=(0, 1))
            parts += [jnp.moveaxis(k, -1, 0).reshape(w, -1), d[:, None]]
        return jnp.concatenate(parts, axis=1) if parts else jnp.zeros((w, 1))

    ref = stream(None)
    sim = _normalize(ref) @ _normalize(ref).T
    convs = [k.shape[:2] for k, _, is_conv in blocks if is_conv]
    if circular and convs:
        kh, kw = convs[0]
        rolled = [
            _normalize(stream((a, b))) @ _normalize(ref).T for a in range(kh) for b in range(kw)
        ]
        sim = jnp.max(jnp.stack(rolled), axis=0)
    # A per-channel map (scale or filter P, shift D) on the group's values after the writers:
    # units u, v whose values are s_v = c s_u stay proportional after it iff
    # (P_v |s_v|, D_v) is parallel to (P_u |s_u|, D_u), |s| the norm of a unit's stream vector.
    norm = jnp.linalg.norm(ref, axis=1)
    for p, d, written in later:
        part = _normalize(jnp.concatenate([p * norm[:, None], d[:, None]], axis=1))
        both = written[:, None] & written[None, :]
        neither = ~written[:, None] & ~written[None, :]
        sim = jnp.minimum(sim, jnp.where(both, part @ part.T, jnp.where(neither, 1.0, 0.0)))
    return sim


def redundant_units(
    model: Model,
    variables: Variables,
    x: jax.Array | None = None,
    threshold: float = REDUNDANCY_THRESHOLD,
    *,
    scores: Mapping[str, jax.Array] | None = None,
    circular: bool = False,
    model_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, jax.Array]:
    """Trivially redundant units of every unit group: all but one member of each group.

    A unit's vector is its incoming weights with everything that sets its pre-activation
    folded in, from every slice of its coupling group: for each layer writing it, its kernel
    column (a conv filter for a conv unit) times the per-channel scale that follows, and its
    shift, ``(s K, s (b - mean) + shift)`` for a layer with bias ``b`` followed by a BatchNorm
    with running statistics (``s = scale / sqrt(var + eps)``), concatenated over the layers of a
    residual group. Two units are trivially redundant when these vectors are parallel (their
    pre-activations are positive multiples of each other, so one can be merged into the
    other's outgoing weights); comparing the conv kernels alone would merge units whose
    BatchNorm shifts differ. Per-channel maps on the group's values after its layers (a
    pre-activation BatchNorm after a residual join, a depthwise filter) must keep the units
    proportional too: their similarity is the smallest of the stream's and each map's.
    An activation's own parameters (PReLU slopes) are not compared. The slices are found by the
    graph's write slices (:meth:`~jaxprune.graph.Graph.slices`), so it works on the dense and
    conv units of any model. Groups are the connected components of
    :func:`redundancy_groups` on these similarities. One member of each group is **kept**
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
      model_kwargs: keyword arguments of the model's own call (``{"train": False}``).

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
      Paper 000, sec. 4.1 step 5b ("the normalized dot product of the vectors formed by the
      weights (including bias)"; with a BatchNorm these are the folded weights) and sec. 5.
    """
    _check_threshold(threshold)
    graph, variables = resolve(model, variables, None if x is None else (x,), model_kwargs)
    check_finite("variables", variables)
    scores = dict(scores or {})
    check_finite("scores", scores)
    unknown = sorted(set(scores) - set(graph.units))
    if unknown:
        raise ValueError(
            f"scores: unknown unit(s) {unknown}; the model's units are {list(graph.units)}"
        )
    leaves = graph.model.leaves(variables)
    runs = affine_runs(graph.analysis)
    out = {}
    for name, unit in graph.units.items():
        sim = _unit_similarity(graph, leaves, name, circular, runs)
        s = scores.get(name)
        if s is not None and jnp.shape(s) != (unit.width,):
            raise ValueError(
                f"scores[{name!r}]: expected shape ({unit.width},), got {jnp.shape(s)}"
            )
        out[name] = _redundant_in_layer(sim, threshold, s)
    return out
