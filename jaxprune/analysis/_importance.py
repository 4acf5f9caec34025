"""Importance scores over coupled unit groups, and keep masks at a target ratio.

Beside paper 000's unit ablation (the loss ratio with one unit removed, one forward pass per
unit), the pruning literature's cheap criteria, each from one trace and at most one backward
pass, each over *every* parameter slice of a unit: its kernel column, bias and norm entries
(the write slices) and the kernel rows of every layer reading it, through skips and
concatenations (the read slices), as :meth:`jaxprune.graph.Graph.slices` lists them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._data_checks import check_data, check_finite
from jaxprune._losses import LossFn, get_loss
from jaxprune._types import Batch, Model, Variables
from jaxprune.analysis._resolve import resolve
from jaxprune.graph import Graph
from jaxprune.graph.extend import run_program

__all__ = ["IMPORTANCE_METHODS", "importance", "keep_top"]

IMPORTANCE_METHODS = ("magnitude", "taylor", "activation")
"""The criteria of :func:`importance`."""


def _inputs(data, method: str):
    """``(x, y)`` (``y`` None where the method needs no targets) of ``data``."""
    if method == "taylor":
        return check_data(data)
    if isinstance(data, (tuple, list)):
        if not data:
            raise ValueError("data: expected x or (x, y), got an empty sequence")
        return data[0], None
    return data, None


def _to_units(per_entry: jax.Array, idx: np.ndarray, width: int) -> jax.Array:
    """``out[u] = sum of per_entry[r] where idx[r] == u`` (``idx`` static, -1 skipped)."""
    if idx.size * width <= 1 << 20:  # a small static 0/1 matrix: one matmul, compiles fast
        onehot = (idx[:, None] == np.arange(width)[None, :]).astype(np.float32)
        return per_entry @ onehot
    valid = np.flatnonzero(idx >= 0)
    return jax.ops.segment_sum(per_entry[valid], idx[valid], num_segments=width)


def _reduce_to_units(graph: Graph, values: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """``{unit: float[width]}``: ``values`` (entrywise, by leaf path) summed over each unit's
    slices; leaves missing from ``values`` are skipped."""
    out = {}
    for name, unit in graph.units.items():
        acc = jnp.zeros(unit.width, jnp.float32)
        for leaf, axis, idx in graph.slices(name):
            a = values.get(leaf)
            if a is None:
                continue
            per_entry = jnp.sum(a, axis=tuple(i for i in range(a.ndim) if i != axis))
            acc = acc + _to_units(per_entry.astype(jnp.float32), idx, unit.width)
        for leaf, (ia, oa), idx in graph.grouped_slices(name):  # grouped convs reading it
            a = values.get(leaf)
            if a is None:
                continue
            per_entry = jnp.sum(a, axis=tuple(i for i in range(a.ndim) if i not in (ia, oa)))
            per_entry = per_entry.T if ia > oa else per_entry
            acc = acc + _to_units(per_entry.astype(jnp.float32).ravel(), idx.ravel(), unit.width)
        out[name] = acc
    return out


def _activation_scores(graph: Graph, variables, x) -> dict[str, jax.Array]:
    """Mean |activation| of each unit's channels where they are read, averaged over the points
    that read them (every layer and channel reduction reading the group)."""
    an = graph.analysis
    points = [(an.program.nodes[n].ins[i], act) for n, i, act in an.mask_points]
    flat = jax.tree.leaves(variables) + jax.tree.leaves((x,))
    _, got = run_program(an, flat, capture={v for v, _ in points})
    roots = {u.root: name for name, u in graph.units.items()}
    sums = {name: np.zeros(u.width) for name, u in graph.units.items()}
    acc = {name: jnp.zeros(u.width, jnp.float32) for name, u in graph.units.items()}
    for var, act in points:
        value = jnp.abs(got[var].astype(jnp.float32))
        per_channel = jnp.mean(value, axis=tuple(i for i in range(value.ndim) if i != act.axis))
        per_channel = per_channel.reshape(act.outer, -1, act.inner).mean(axis=(0, 2))
        pos = 0
        for s, a, b in act.segs:
            root, start = an.locate(s)
            name = roots.get(root)
            if name is not None:
                acc[name] = acc[name].at[start + a : start + b].add(per_channel[pos : pos + b - a])
                sums[name][start + a : start + b] += 1
            pos += b - a
    return {
        name: jnp.where(sums[name] > 0, acc[name] / np.maximum(sums[name], 1), jnp.nan)
        for name in graph.units
    }


def importance(
    model: Model,
    variables: Variables,
    data: jax.Array | Batch | None = None,
    method: str = "magnitude",
    loss: str | LossFn = "mse",
    *,
    model_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, jax.Array]:
    """Importance of every unit of every coupled group, from one trace.

    A unit's parameter entries are all its group's slices
    (:meth:`~jaxprune.graph.Graph.slices`): the kernel columns, biases and norm entries writing
    its channel in every layer of the group, and the kernel rows of every layer reading it
    (through skips, concatenations and flattening). Only trainable leaves count (not
    BatchNorm's running statistics). The criteria:

    * ``"magnitude"``: the L2 norm of all those entries (Li et al., 2017, who score a filter by
      its kernel; here the whole coupled group). No data needed beyond the example input that
      traces the model (or a :class:`~jaxprune.graph.Graph`).
    * ``"taylor"``: ``|sum of w * dL/dw|`` over those entries, with one ``jax.grad`` of the mean
      loss over the batch: the first-order estimate of the loss change when the unit's
      parameters are zeroed (Molchanov et al., 2019, eq. 8, which squares it: same ranking).
      Its write slices alone give ``|sum over the batch of z * dL/dz|`` for the unit's
      pre-activation ``z`` (Molchanov et al., 2017).
    * ``"activation"``: the mean absolute value of the unit's channel on the data, where it is
      read (the input of each layer or channel reduction reading it), averaged over those
      reads; one forward pass.

    A grouped convolution reading the unit contributes the entries of its kernel that read
    the unit's channel (:meth:`~jaxprune.graph.Graph.grouped_slices`).

    Args:
      model: a ``flax.linen``/``flax.nnx``/equinox module, a function ``f(params, x)``, or a
        :class:`~jaxprune.graph.Graph` (traced at the data's shapes for ``"taylor"`` and
        ``"activation"``).
      variables: its variables (see :func:`jaxprune.trace`); ``None`` for NNX/equinox modules or
        a Graph's own.
      data: ``(x, y)`` for ``"taylor"``; ``x`` or ``(x, y)`` otherwise (``None`` with a Graph
        for ``"magnitude"``).
      method: one of :data:`IMPORTANCE_METHODS`.
      loss: ``"taylor"``'s loss, by name or per-example callable (as :func:`unit_ablation`).
      model_kwargs: keyword arguments of the model's own call (``{"train": False}``).

    Returns:
      ``{unit: float32[width]}``, keyed by the graph's unit names; higher is more important.
      Works under ``jax.jit`` (the graph and ``method`` static).

    Raises:
      ValueError: for an unknown ``method`` (listing the valid ones), missing data, ``x`` and
        ``y`` of different lengths (``"taylor"``), NaN/inf in ``variables``.

    >>> import jax.numpy as jnp, flax.linen as nn, jaxprune as jp
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(2)(x))
    ...         return nn.Dense(1)(h)
    >>> p = {"Dense_0": {"kernel": jnp.array([[3.0, 0.0]]), "bias": jnp.array([0.0, 1.0])},
    ...      "Dense_1": {"kernel": jnp.array([[4.0], [0.0]]), "bias": jnp.array([0.0])}}
    >>> x = jnp.ones((2, 1))
    >>> s = jp.analysis.importance(Net(), {"params": p}, x, method="magnitude")
    >>> s["Dense_0"].tolist()  # sqrt(3² + 0² + 4²), sqrt(0² + 1² + 0²)
    [5.0, 1.0]
    >>> jp.analysis.keep_top(s, ratio=0.5)["Dense_0"].tolist()
    [True, False]

    References:
      Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017 (magnitude); Molchanov et
      al., "Pruning Convolutional Neural Networks for Resource Efficient Inference", ICLR 2017,
      and "Importance Estimation for Neural Network Pruning", CVPR 2019, eq. 8 (Taylor);
      beside paper 000's unit ablation (sec. 3.2, :func:`unit_ablation`).
    """
    if method not in IMPORTANCE_METHODS:
        raise ValueError(f"method: expected one of {list(IMPORTANCE_METHODS)}, got {method!r}")
    if data is None:
        if method != "magnitude" or not isinstance(model, Graph):
            raise ValueError(
                f"data: method {method!r} needs "
                + ("(x, y)" if method == "taylor" else "the model's input x (or a Graph)")
            )
        graph, variables = resolve(model, variables, None, model_kwargs)
        x = y = None
    else:
        x, y = _inputs(data, method)
        graph, variables = resolve(model, variables, (x,), model_kwargs)
    check_finite("variables", variables)
    loss_fn = get_loss(loss) if method == "taylor" else None
    # one compiled program (the trace is static): an eager gradient through the traced
    # program would dispatch each primitive separately
    return jax.jit(lambda v, x, y: _scores(graph, v, x, y, method, loss_fn))(variables, x, y)


def _scores(graph: Graph, variables, x, y, method: str, loss_fn) -> dict[str, jax.Array]:
    paths = graph.leaf_paths
    leaves = jax.tree.leaves(variables)
    trainable = {p: a for p, a in zip(paths, leaves, strict=True) if graph.model.trainable(p)}
    if method == "magnitude":
        squares = {p: jnp.square(a.astype(jnp.float32)) for p, a in trainable.items()}
        return {k: jnp.sqrt(v) for k, v in _reduce_to_units(graph, squares).items()}
    if method == "activation":
        return _activation_scores(graph, variables, x)
    treedef = jax.tree.structure(variables)

    def mean_loss(tr):
        full = [tr.get(p, a) for p, a in zip(paths, leaves, strict=True)]
        return jnp.mean(loss_fn(graph.apply(jax.tree.unflatten(treedef, full), x), y))

    grads = jax.grad(mean_loss)(trainable)
    products = {p: (a * grads[p]).astype(jnp.float32) for p, a in trainable.items()}
    return {k: jnp.abs(v) for k, v in _reduce_to_units(graph, products).items()}


def _ceil_to(n: int, step: int, cap: int) -> int:
    return min(cap, max(step, math.ceil(n / step) * step))


def keep_top(
    scores: Mapping[str, jax.Array],
    ratio: float,
    *,
    per_layer: bool = True,
    round_to: int | None = None,
    graph: Graph | None = None,
) -> dict[str, np.ndarray]:
    """Keep masks for :func:`jaxprune.prune_units`: the highest-scoring units at ``ratio``.

    Per layer (default), each group keeps its ``ceil(ratio * width)`` best units; globally
    (``per_layer=False``), the ``ceil(ratio * total)`` best units over all groups are kept,
    wherever they are (the scores must then be comparable across layers). Either way a group
    keeps at least one unit. Ties go to the lower index. Each entry of a score vector is one
    unit of the graph (a channel, or a whole head where the graph's unit is a head), so a mask
    never splits what the graph counts as one unit.

    ``round_to`` rounds each group's kept count *up* to a multiple of ``round_to`` (8 or 128
    channels for accelerators), capped at the group's width and never zero: the smallest
    multiple above the count, so rounding keeps more, never fewer (at ``round_to=8`` a group
    of 64 at ratio 0.3 keeps 24, not 16); the extra units are the next best by score.

    With ``graph``, a grouped convolution's output (``Unit.groups = g``) keeps the same number
    in each of its ``g`` blocks (the best within each block, ``ceil(count / g)`` per block,
    ``round_to`` applying to the total), and a grouped convolution's input
    (``Unit.period = p``) keeps the same positions in every block of ``p`` (the positions with
    the highest summed scores), as pruning requires.

    Args:
      scores: ``{unit: float[width]}`` (:func:`importance`, :func:`unit_ablation` ratios, ...);
        higher is kept first.
      ratio: the fraction of units to keep, in ``(0, 1]``.
      per_layer: rank within each group (True) or over all groups (False).
      round_to: a positive int, or None.
      graph: the :class:`~jaxprune.graph.Graph` the scores are of (for grouped convolutions).

    Returns:
      ``{unit: bool[width]}`` (NumPy), every group of ``scores``.

    Raises:
      ValueError: for ``ratio`` outside ``(0, 1]``, ``round_to < 1``, scores that are not
        finite 1-D vectors, or (with ``graph``) a unit the graph does not have, a width that
        differs from the graph's, or a group that is both a grouped convolution's output and
        another's input.

    >>> import numpy as np, jaxprune as jp
    >>> s = {"a": np.array([0.1, 0.9, 0.5, 0.3]), "b": np.array([2.0, 1.0])}
    >>> {k: m.tolist() for k, m in jp.analysis.keep_top(s, ratio=0.5).items()}
    {'a': [False, True, True, False], 'b': [True, False]}
    >>> {k: m.tolist() for k, m in jp.analysis.keep_top(s, 0.5, per_layer=False).items()}
    {'a': [False, True, False, False], 'b': [True, True]}

    References:
      Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019, sec. 3
      (global ranking of groups by score).
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise ValueError(f"ratio: expected a fraction of units to keep in (0, 1], got {ratio!r}")
    if round_to is not None and (
        isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1
    ):
        raise ValueError(f"round_to: expected a positive int or None, got {round_to!r}")
    if not isinstance(scores, Mapping):
        raise ValueError(f"scores: expected {{unit: float[width]}}, got {type(scores).__name__}")
    vecs = {}
    for name, s in scores.items():
        v = np.asarray(s, np.float64)
        if v.ndim != 1 or v.size == 0 or not np.isfinite(v).all():
            raise ValueError(
                f"scores[{name!r}]: expected a non-empty finite 1-D vector, got shape "
                f"{v.shape}" + ("" if v.ndim != 1 else " with NaN/inf")
            )
        vecs[name] = v
    groups = dict.fromkeys(vecs, 1)
    periods: dict[str, int] = {}
    if graph is not None:
        for name, v in vecs.items():
            unit = graph.units.get(name)
            if unit is None or unit.width != v.size:
                raise ValueError(
                    f"scores[{name!r}]: "
                    + (
                        f"not a unit of the graph (its units are {list(graph.units)})"
                        if unit is None
                        else f"{v.size} scores for a unit group of width {unit.width}"
                    )
                )
            groups[name] = unit.groups
            if unit.period:
                if unit.groups > 1:
                    raise ValueError(
                        f"scores[{name!r}]: unit group {name!r} is both a grouped convolution's "
                        "output and another's input; choose its keep mask by hand (equal "
                        f"numbers in each of its {unit.groups} blocks, the same positions in "
                        f"each block of {unit.period})"
                    )
                periods[name] = unit.period
    if per_layer:
        counts = {k: math.ceil(ratio * v.size) for k, v in vecs.items()}
    else:
        allv = np.concatenate(list(vecs.values()))
        n_keep = math.ceil(ratio * allv.size)
        order = np.argsort(-allv, kind="stable")
        chosen = np.zeros(allv.size, bool)
        chosen[order[:n_keep]] = True
        counts, pos = {}, 0
        for k, v in vecs.items():
            counts[k] = int(chosen[pos : pos + v.size].sum())
            pos += v.size
    out = {}
    for name, v in vecs.items():
        if name in periods:  # the same in-group positions in every convolution group
            period = periods[name]
            copies = v.size // period
            per_pos = max(1, math.ceil(counts[name] / copies))
            if round_to is not None:
                per_pos = _ceil_to(per_pos, round_to // math.gcd(round_to, copies), period)
            best = np.argsort(-v.reshape(copies, period).sum(axis=0), kind="stable")[:per_pos]
            positions = np.zeros(period, bool)
            positions[best] = True
            out[name] = np.tile(positions, copies)
            continue
        g = groups[name]
        block = v.size // g
        per_block = max(1, math.ceil(counts[name] / g))
        if round_to is not None:
            step = round_to // math.gcd(round_to, g)  # g * per_block a multiple of round_to
            per_block = _ceil_to(per_block, step, block)
        mask = np.zeros(v.size, bool)
        for j in range(g):
            part = v[j * block : (j + 1) * block]
            best = np.argsort(-part, kind="stable")[:per_block]
            mask[j * block + best] = True
        out[name] = mask
    return out
