"""Fold linearized PReLU unit groups into their readers (beyond paper 004; paper 000's fold).

A unit group whose slopes are all exactly 1 is the identity: the layer that produces it and
the layer that reads it compose to one affine map, ``x @ (W1 @ W2) + (b1 @ W2 + b2)`` (paper
000, Eq. 6). :func:`fold_linear` replaces the pair by one layer of the model returned by
:func:`~jaxprune.rewrites.swap_relu_for_prelu`: the first layer's kernel and bias and the
group's slopes disappear, the second layer's kernel becomes ``W1 @ W2``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._types import Model, Variables
from jaxprune.graph import as_model
from jaxprune.graph.extend import (
    Act,
    Literal,
    PlanCache,
    PVal,
    check_model_kwargs,
    held_leaves,
    model_variables,
    nest,
    takes_model,
)
from jaxprune.rewrites._prelu_program import PReLUProgram, flat_paths, slope_path
from jaxprune.rewrites._prelu_swap import rewritten
from jaxprune.rewrites._result import RewriteResult, count_params, result

__all__ = ["fold_linear"]


def _program_of(model) -> PReLUProgram:
    spec = getattr(model, "spec", None)
    run = getattr(spec, "runner", None)
    if not isinstance(run, PReLUProgram):
        raise TypeError(
            "model: expected a model returned by jp.rewrites.swap_relu_for_prelu (or by "
            f"fold_linear), got {type(model).__name__}"
        )
    return run


def _single_consumer(program, var, skip=None):
    users = [
        (i, j)
        for i, node in enumerate(program.nodes)
        if i != skip
        for j, v in enumerate(node.ins)
        if v == var and not isinstance(v, Literal)
    ]
    outs = [v for v in program.outvars if v == var]
    return users[0] if len(users) == 1 and not outs else None


def _dense_pair(graph, sites, unit: str):
    """``(first, second, first_bias_leaf or None)`` if ``unit`` is a foldable dense chain.

    Foldable: one producing dense layer ``first`` with a 2-D kernel, optionally plus a bias,
    then exactly one ReLU site, read by exactly one dense layer ``second`` (2-D kernel) and by
    nothing else.
    """
    an = graph.analysis
    program = an.program
    u = graph.units[unit]
    if len(u.layers) != 1 or u.coupled:
        return None
    first = graph.layers[u.layers[0]]
    if first.op != "dense":
        return None
    info1 = an.layers[list(graph.layers).index(first.name)]
    var = program.nodes[info1.node].outs[0]
    bias = None
    step = _single_consumer(program, var)
    if step is None:
        return None
    node = program.nodes[step[0]]
    if node.name == "add":
        other = node.ins[1 - step[1]]
        ann = None if isinstance(other, Literal) else an.annotations.get(other)
        if not isinstance(ann, PVal) or len(ann.leaves) != 1:
            return None
        bias = next(iter(ann.leaves))
        var = node.outs[0]
        step = _single_consumer(program, var)
        if step is None:
            return None
    if step[0] not in sites:
        return None
    var = program.nodes[step[0]].outs[0]
    step = _single_consumer(program, var)
    if step is None:
        return None
    for info2, name2 in zip(an.layers, graph.layers, strict=True):
        if info2.node == step[0]:
            second = graph.layers[name2]
            act = an.annotations[var]
            ok = (
                second.op == "dense"
                and isinstance(act, Act)
                and act.outer == act.inner == 1
                and act.axis == len(act.shape) - 1
                and info2.kernel_in_axis == 0
                and info2.kernel_out_axis == 1
                and info1.kernel_in_axis == 0
                and info1.kernel_out_axis == 1
            )
            return (first.name, second.name, bias) if ok else None
    return None


def _bias_of(graph, layer: str):
    """The bias leaf added right after ``layer``'s product, or None."""
    an = graph.analysis
    program = an.program
    info = an.layers[list(graph.layers).index(layer)]
    step = _single_consumer(program, program.nodes[info.node].outs[0])
    if step is None or program.nodes[step[0]].name != "add":
        return None
    other = program.nodes[step[0]].ins[1 - step[1]]
    ann = None if isinstance(other, Literal) else an.annotations.get(other)
    if isinstance(ann, PVal) and len(ann.leaves) == 1:
        return next(iter(ann.leaves))
    return None


def _nest(keypaths, leaves):
    """Nested dicts from ``jax.tree_util`` key paths (dict keys only)."""
    out: dict = {}
    for path, leaf in zip(keypaths, leaves, strict=True):
        keys = [getattr(k, "key", None) for k in path]
        if any(k is None for k in keys):
            raise ValueError("fold_linear: the variables must be nested dicts")
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = leaf
    return out


@takes_model
def fold_linear(
    prelu_model: Model,
    prelu_vars: Variables,
    *args: Any,
    model_kwargs: Mapping[str, Any] | None = None,
) -> RewriteResult:
    """Folds every all-linear dense unit group into its reader; returns a shallower model.

    For each unit group of ``prelu_model`` (from :func:`swap_relu_for_prelu`) whose slopes are
    *all exactly* 1 (after :func:`~jaxprune.transforms.slope_sparsity` or
    :func:`~jaxprune.rewrites.set_linear_slopes`; 0.995 is not linear), produced by one dense
    layer ``first`` (``x @ W1 + b1``, 2-D kernel) and read only by one dense layer ``second``
    (``h @ W2 + b2``), the pair becomes one layer: ``second`` reads ``first``'s input with
    kernel ``W1 @ W2`` and bias ``b1 @ W2 + b2`` (computed in float64, stored in ``W2``'s
    dtype); ``first``'s leaves and the group's slopes are removed. Groups are visited in forward
    order, so a run of linear groups folds into one layer.

    Not folded (kept, their slope-1 channels computing the identity): partially linear groups
    (paper 004 measures them with ENW/APL/NAPL, :mod:`jaxprune.analysis`), and all-linear
    groups that are not such a dense pair (convolutions, residual groups, several readers,
    ``second`` without a bias while ``first`` has one). For linear chains without PReLUs see
    :func:`jaxprune.collapse`; this is its minimal dense->dense case, kept here on its own.

    Args:
      prelu_model: a model returned by :func:`swap_relu_for_prelu` (or by this function).
      prelu_vars: its variables (``.variables`` of :func:`swap_relu_for_prelu`'s result);
        omitted for NNX and equinox modules, which hold their state.
      *args: example arguments of the call (only their shapes matter).
      model_kwargs: keyword arguments of the model's own call (``{"train": False}``).

    Returns:
      A :class:`~jaxprune.rewrites.RewriteResult`: ``.model`` of the same kind, equal in
      outputs up to float rounding, its ``.variables``, and ``.report.changes`` naming each
      folded pair (``"Dense_0 + Dense_1 -> Dense_1"``). A linen
      folded model's ``init(key, *args)`` is the original's ``init(key, *args)`` with the same
      pairs folded (``W1 @ W2`` of the fresh layers) and the remaining slopes at their initial
      value.

    Raises:
      TypeError: ``prelu_model`` does not come from :func:`swap_relu_for_prelu`.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxprune as jp
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(8)(x))
    ...         h = nn.relu(nn.Dense(4)(h))
    ...         return nn.Dense(2)(h)
    >>> x = jax.random.normal(jax.random.key(1), (6, 3)); net = Net()
    >>> p = jp.rewrites.swap_relu_for_prelu(net, net.init(jax.random.key(0), x), x)
    >>> pnet, pv = p.model, p.variables["params"]
    >>> pv = jp.rewrites.set_linear_slopes(pv, {"prelu/Dense_0": jnp.ones(8, bool)})
    >>> r = fold_linear(pnet, {"params": pv}, x)
    >>> r.report.changes, r.variables["params"]["Dense_1"]["kernel"].shape
    (('Dense_0 + Dense_1 -> Dense_1',), (3, 4))
    >>> bool(jnp.allclose(r.model.apply(r.variables, x), pnet.apply({"params": pv}, x), atol=1e-5))
    True

    References:
      Beyond paper 004 (sec. 3: a linearized channel only forms linear combinations); the fold
      is paper 000, sec. 3.1, Eq. 6.
    """
    run = _program_of(prelu_model)
    graph, sites, _, _ = run.graph_for(args, check_model_kwargs(model_kwargs))
    if run.kind in ("nnx", "equinox"):
        paths, leaves = list(run.new_paths), held_leaves(prelu_model, prelu_vars)
    else:
        paths, leaves, _ = flat_paths(prelu_vars)
    if tuple(paths) != run.new_paths:
        raise ValueError(
            f"prelu_vars: leaf paths {paths} do not match the model's {list(run.new_paths)}"
        )
    values = dict(zip(paths, leaves, strict=True))
    prefix = run.prefix
    held = run.kind in ("nnx", "equinox")
    trainable = as_model(prelu_model, None if held else prelu_vars).trainable
    before = count_params(values, trainable)

    units, folds, removed = list(run.units), list(run.folds), set()
    fold_leaves = list(run.fold_leaves)
    for unit in run.units:
        s = np.asarray(values[slope_path(prefix, unit)])
        if not np.all(s == 1.0):
            continue
        pair = _dense_pair(graph, sites, unit)
        if pair is None:
            continue
        first, second, b1 = pair
        k1, k2 = graph.layers[first].kernel, graph.layers[second].kernel
        b2 = _bias_of(graph, second)
        if b1 is not None and b2 is None:
            continue
        w1 = np.asarray(values[k1], np.float64)
        w2 = np.asarray(values[k2], np.float64)
        dtype = jnp.result_type(values[k2])
        values[k2] = jnp.asarray(w1 @ w2, dtype)
        if b1 is not None:
            bias = np.asarray(values[b1], np.float64) @ w2 + np.asarray(values[b2], np.float64)
            values[b2] = jnp.asarray(bias, jnp.result_type(values[b2]))
            removed.add(b1)
        removed |= {k1, slope_path(prefix, unit)}
        units.remove(unit)
        folds.append((first, second))
        fold_leaves.append((k1, b1, k2, b2))
    if not folds or folds == list(run.folds):
        if held:  # the variables it holds, as a rewrite returns them
            prelu_vars = model_variables(prelu_model.spec, prelu_model, leaves)
        return result(prelu_model, prelu_vars, before=before, after=before, changes=())
    kept = [p for p in paths if p not in removed]
    if run.kind in ("linen", "function"):  # the user's own (dict) structure
        keypaths = [kp for kp, _ in jax.tree_util.tree_flatten_with_path(prelu_vars)[0]]
        by_str = dict(zip(paths, keypaths, strict=True))
        new_vars = _nest([by_str[p] for p in kept], [values[p] for p in kept])
    else:
        new_vars = nest({p: values[p] for p in kept})
    new_paths, new_leaves, new_treedef = flat_paths(new_vars)
    new_run = dataclasses.replace(
        run,
        new_paths=tuple(new_paths),
        units=tuple(units),
        folds=tuple(folds),
        fold_leaves=tuple(fold_leaves),
        cache=PlanCache(),
    )
    return result(
        *rewritten(new_run, new_treedef, new_leaves),
        before=before,
        after=count_params({p: values[p] for p in kept}, trainable),
        changes=[f"{a} + {b} -> {b}" for a, b in folds[len(run.folds) :]],
    )
