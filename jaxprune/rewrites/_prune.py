"""Structural pruning of any traced model: remove units, return a narrower model of its kind."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxprune._types import Model, Variables
from jaxprune.graph import GraphError, as_model, path_str, trace
from jaxprune.graph.extend import (
    RewriteSpec,
    abstract_model,
    build_model,
    leaf_keep,
    model_variables,
    narrowed_submodules,
    state_args,
    takes_model,
)
from jaxprune.rewrites._result import RewriteResult, count_params, result

__all__ = ["KeptSlices", "prune_units"]


@dataclasses.dataclass(frozen=True)
class KeptSlices:
    """A pruned model's initializer: the kept slices of the original's fresh initialization.

    Attributes:
      slices: ``((leaf path, axis, kept indices), ...)``.
    """

    slices: tuple[tuple[str, int, tuple[int, ...]], ...]

    def initial_leaves(self, spec, draw, args, kwargs):
        del args, kwargs
        fresh = dict(draw(0))
        for path, axis, idx in self.slices:
            fresh[path] = jax.numpy.take(jax.numpy.asarray(fresh[path]), np.asarray(idx), axis)
        return [fresh[p] for p in spec.paths]


def _field_lines(narrowed, keep) -> list[str]:
    """One report line per rebuilt layer whose fields changed, outermost layers only, and
    none that repeats a unit group's own line (``Dense_0``'s features are its units)."""
    lines: list[str] = []
    done: list[str] = []
    for n in narrowed:
        if n.module is None or not n.changes or any(n.path.startswith(d + "/") for d in done):
            continue
        done.append(n.path)
        if n.path in keep and all(f == "features" for f, _, _ in n.changes):
            continue
        lines.append(n.line())
    return lines


def _concrete_keep(keep) -> dict:
    if not isinstance(keep, Mapping):
        raise ValueError(
            f"keep: expected a mapping {{unit: bool[width]}}, got {type(keep).__name__}"
        )
    out = {}
    for name, m in keep.items():
        if isinstance(m, jax.core.Tracer):
            raise ValueError(
                f"keep[{name!r}]: expected a concrete bool array; prune_units changes shapes, so "
                "it cannot run under jax.jit/vmap (call it outside, then jit the narrow model)"
            )
        out[name] = np.asarray(m)  # shape and dtype: graph.check_units (the shared checker)
    return out


def _round_up(graph, variables_flat, keep, round_to):
    """Keeps extra units so each pruned group's width is a multiple of ``round_to``.

    The extra units are the removed ones with the largest incoming-weight norm (the L2 norm
    of their writing slices: kernel columns, biases, norm entries), ties by lowest index. A
    grouped convolution's channels keep their shape: the output's ``Unit.groups`` blocks each
    gain the same number, the input's in-group positions (``Unit.period``) are added in every
    group at once (each block or position counted by its summed norm).
    """
    out = {}
    for name, m in keep.items():
        unit = graph.units[name]
        # the unit's blocks: rows of `view` are pruned alike (period) or in equal numbers
        # (groups); `rows` of them, `cols` entries each
        if unit.period:
            view = m.reshape(-1, unit.period).T  # (positions, copies)
        else:
            view = m.reshape(unit.groups, -1)
        rows, cols = view.shape
        if unit.period:
            step = round_to // math.gcd(round_to, cols)
            kept = int(view[:, 0].sum())
            target = min(rows, -(-kept // step) * step)
        else:
            step = round_to // math.gcd(round_to, rows)
            kept = int(view[0].sum())
            target = min(cols, -(-kept // step) * step)
        irregular = (
            not (view == view[:, :1]).all() if unit.period else len(set(view.sum(1).tolist())) > 1
        )
        if target <= kept or irregular:
            out[name] = m  # nothing to add, or a mask that pruning refuses anyway
            continue
        norm = np.zeros(m.shape[0])
        for leaf, axis, idx in graph.slices(name, outgoing=False):
            a = np.moveaxis(np.asarray(variables_flat[leaf], np.float64), axis, 0)
            sq = (a.reshape(a.shape[0], -1) ** 2).sum(1)
            np.add.at(norm, idx[idx >= 0], sq[idx >= 0])
        norm = norm.reshape(-1, unit.period).T if unit.period else norm.reshape(rows, -1)
        view = view.copy()
        if unit.period:  # whole positions, by their norm summed over the groups
            score = norm.sum(1)
            cand = np.flatnonzero(~view[:, 0])
            view[cand[np.lexsort((cand, -score[cand]))][: target - kept], :] = True
            out[name] = view.T.reshape(-1)
        else:  # the same number in every block
            for j in range(rows):
                cand = np.flatnonzero(~view[j])
                view[j, cand[np.lexsort((cand, -norm[j][cand]))][: target - kept]] = True
            out[name] = view.reshape(-1)
    return out


@takes_model
def prune_units(
    model: Model,
    variables: Variables,
    keep: dict[str, Any],
    *args: Any,
    round_to: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    exact: bool = True,
) -> RewriteResult:
    """Removes units; returns a narrower model of the model's own kind.

    Every unit group with ``keep[unit][i] == False`` loses channel ``i`` everywhere it lives:
    the kernel columns, biases and norm entries that write it (in every layer of a residual
    group, the shortcut projection included) and the kernel rows that read it (through skips,
    concatenation and flatten). The narrow model's outputs equal the masked network's,
    ``jp.trace(model, variables, *args).apply(variables, *args, masks=keep)``, up to float
    rounding (the sums skip exact zeros).

    The narrow model re-traces the original at each call's argument shapes, so it runs at any
    batch size, under ``jit``/``vmap``/``grad`` and through ``jax.export``.

    Args:
      model: a ``flax.linen`` Module, a ``flax.nnx`` Module, an ``equinox`` Module or a function
        ``f(params, *args)``.
      variables: its variables (linen: every collection) or params; omitted for NNX and equinox
        modules, which hold their state (``prune_units(module, keep, x)``).
      keep: ``{unit: bool[width]}`` (unit names as in ``jp.trace(...).units``); unlisted units
        are kept.
      *args: example arguments of the call (only their shapes matter).
      round_to: if set (8 for GPUs, 128 for TPUs), keep widths rounded up to a multiple of it
        (capped at the full width): the extra units kept are the removed ones with the largest
        incoming weights (L2 norm of kernel columns, biases and norm entries); a grouped
        convolution's channels gain the same number per group, its input whole positions.
      model_kwargs: keyword arguments of the model's own call (``{"train": False}``).
      exact: if False, also prune groups whose channels are coupled by a reduction over them
        (a transformer's residual stream under LayerNorm/RMSNorm): the narrow model's norms
        then reduce over the kept channels only, which is not the masked network; the
        report's ``output_error`` is the largest absolute output difference from the
        original measured on ``*args``.

    Returns:
      A :class:`~jaxprune.rewrites.RewriteResult` whose ``.report.changes`` has one line per
      narrowed group (``"Dense_0: 64 -> 41 units"``) and one per flax layer whose constructor
      fields changed beyond that (``"MultiHeadDotProductAttention_0: num_heads 4 -> 2,
      qkv_features 8 -> 4"``); a linen ``.model.submodule(path)`` is that layer rebuilt with
      them. ``.model`` and ``.variables``: a linen
      Module whose variables have the original's
      nested structure with narrowed leaves; ``(apply_fn, params)`` for a function; for NNX
      an ``nnx.Module`` holding the narrowed variables (same state paths and variable types;
      called as ``narrow_model(x)``, in the mode the original was pruned in) and its state's
      pure dict; for equinox an ``eqx.Module`` holding the narrowed arrays (called as
      ``narrow_model(x)``) and ``eqx.filter(narrow_model, eqx.is_array)``. A linen narrow
      model's ``init(key, *args)`` is the original's ``init(key, *args)`` pruned the same way
      (every kept entry from the original layer's initializer; train it on with
      ``jp.training.fit`` without ``variables=``). See
      :class:`~jaxprune.graph._rewritten_linen.Rewritten` for saving and loading.

    Raises:
      ValueError: for an unknown unit, a mask of the wrong length or dtype, a traced mask
        (under ``jit``), or a mask removing every unit of a group.
      GraphError: for a group whose channels are coupled (LayerNorm-like reductions over the
        channels, constants aligned with them), naming why, unless ``exact=False``.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, numpy as np
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(4)(x))
    ...         return nn.Dense(2)(h)
    >>> x = jnp.ones((3, 5)); net = Net(); v = net.init(jax.random.key(0), x)
    >>> keep = {"Dense_0": np.array([True, False, True, False])}
    >>> r = prune_units(net, v, keep, x)
    >>> r.report.changes, r.report.params_before, r.report.params_after
    (('Dense_0: 4 -> 2 units',), 34, 18)
    >>> r.variables["params"]["Dense_0"]["kernel"].shape
    (5, 2)
    >>> masked = trace(net, v, x).apply(v, x, masks=keep)
    >>> bool(jnp.allclose(r.model.apply(r.variables, x), masked, atol=1e-6))
    True
    """
    adapter = as_model(model, variables)
    keep = _concrete_keep(keep)
    graph = trace(model, *state_args(model, variables), *args, model_kwargs=model_kwargs)
    keep = {k: np.asarray(v) for k, v in graph.check_units(keep, "keep", fill=False).items()}
    for name, m in keep.items():
        if not m.any():
            raise ValueError(
                f"keep[{name!r}]: would remove all {m.shape[0]} units of group {name!r}; a group "
                "needs at least one unit"
            )
    flat, treedef = jax.tree_util.tree_flatten_with_path(adapter.variables)
    paths = tuple(path_str(p) for p, _ in flat)
    leaves = [v for _, v in flat]
    by_path = dict(zip(paths, leaves, strict=True))
    if round_to is not None:
        if not isinstance(round_to, int) or round_to < 1:
            raise ValueError(f"round_to: expected a positive int, got {round_to!r}")
        keep = _round_up(graph, by_path, keep, round_to)
    if not isinstance(exact, bool):
        raise ValueError(f"exact: expected True or False, got {exact!r}")
    try:
        kept = leaf_keep(graph, keep)  # raises GraphError for coupled groups
    except GraphError as e:
        if exact:
            raise GraphError(
                f"{e}; pass exact=False to prune it approximately (the report then carries the "
                "output error measured on the given inputs)"
            ) from None
        kept = leaf_keep(graph, keep, check=False)
    new = {}
    for path, leaf in by_path.items():
        for (lp, axis), idx in kept.items():
            if lp == path:
                leaf = jax.numpy.take(jax.numpy.asarray(leaf), idx, axis=axis)
        new[path] = jax.numpy.asarray(leaf)
    new_leaves = [new[p] for p in paths]
    narrowed: tuple = ()
    if adapter.kind == "linen":
        narrowed = narrowed_submodules(
            model, adapter.variables, jax.tree.unflatten(treedef, new_leaves), args, graph.kwargs
        )
    spec = RewriteSpec(
        model=abstract_model(adapter),
        kind=adapter.kind,
        treedef=treedef,
        paths=paths,
        avals=tuple(jax.ShapeDtypeStruct(np.shape(a), a.dtype) for a in leaves),
        new_avals=tuple(jax.ShapeDtypeStruct(np.shape(a), a.dtype) for a in new_leaves),
        keep=tuple((k, tuple(bool(b) for b in m)) for k, m in keep.items() if not m.all()),
        initializer=KeptSlices(
            tuple((p, a, tuple(int(i) for i in idx)) for (p, a), idx in sorted(kept.items()))
        ),
        approximate=not exact,
        submodules=narrowed,
    )
    narrow = build_model(spec, new_leaves)
    narrow_vars = model_variables(spec, narrow, new_leaves)
    error = None
    if not exact:
        new_adapter = as_model(
            narrow, narrow_vars if adapter.kind in ("linen", "function") else None
        )
        diffs = jax.tree.map(
            lambda a, b: float(jax.numpy.abs(jax.numpy.asarray(a) - b).max()),
            adapter.apply(adapter.variables, *args, **graph.kwargs),
            new_adapter.apply(new_adapter.variables, *args, **graph.kwargs),
        )
        error = max(jax.tree.leaves(diffs), default=0.0)
    return result(
        narrow,
        narrow_vars,
        before=count_params(by_path, adapter.trainable),
        after=count_params(new, adapter.trainable),
        changes=[
            f"{name}: {m.shape[0]} -> {int(m.sum())} "
            + {"heads": "heads", "kv_groups": "key/value heads"}.get(
                graph.units[name].kind, "units"
            )
            for name, m in keep.items()
            if not m.all()
        ]
        + _field_lines(narrowed, keep),
        output_error=error,
    )
