"""Rewritten models: the original model's program, re-traced per call, run on new variables.

A rewritten model keeps the user's model and a static description of the rewrite (a
:class:`RewriteSpec`). Each call re-traces the original model abstractly at the call's
argument shapes (``jax.make_jaxpr`` over ``jax.ShapeDtypeStruct``; cached per shape), runs
the channel analysis, and evaluates the program on the new, smaller variables. So it works at
any batch size, under ``jit``/``vmap``/``grad`` and through ``jax.export``.

Pruning (``keep``) is an evaluation with narrowed shapes: every unit group's removed channels
are absent from every value that carries them. The shape-carrying parameters of primitives
(reshape sizes, broadcast shapes, zero padding of shortcuts, slice bounds, split sizes, the
group count of depthwise convolutions) are recomputed from the channel layouts; any other
primitive whose result disagrees with the narrowed layout raises :class:`GraphError`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxprune.graph._adapters import path_str
from jaxprune.graph._errors import GraphError, user_line
from jaxprune.graph._inline import Literal
from jaxprune.graph._layout import Act, PVal

__all__ = [
    "RewriteSpec",
    "abstract_model",
    "build_model",
    "held_leaves",
    "leaf_keep",
    "model_variables",
    "narrowed_shapes",
    "run_rewritten",
    "trace_original",
]


@dataclasses.dataclass(frozen=True, eq=False)
class RewriteSpec:
    """A static rewrite of a model (hashed by identity, so it can be a jit-static field).

    Attributes:
      model: the user's original model (linen module or function); for NNX its abstract copy
        and for equinox its static part (:func:`abstract_model`), holding no arrays.
      kind: ``"linen"``, ``"nnx"``, ``"equinox"`` or ``"function"``.
      treedef: the structure of the original variables.
      paths: the original leaf paths, in flattening order.
      avals: ``ShapeDtypeStruct`` of each original leaf.
      new_avals: ``ShapeDtypeStruct`` of each rewritten leaf.
      keep: ``((unit, (bool, ...)), ...)``: the units kept per pruned group.
      runner: ``runner(spec, leaves, args, kwargs)`` evaluating the rewritten model (default:
        :func:`run_rewritten`, the narrowed evaluation of pruning).
      new_treedef: the structure of the rewritten variables when it differs from the
        original's (a rewrite that removes or adds leaves).
      new_paths: the rewritten variables' leaf paths in the order ``runner`` takes them, when
        they differ from ``paths``.
    """

    model: Any
    kind: str
    treedef: Any
    paths: tuple[str, ...]
    avals: tuple[jax.ShapeDtypeStruct, ...]
    new_avals: tuple[jax.ShapeDtypeStruct, ...]
    keep: tuple[tuple[str, tuple[bool, ...]], ...]
    runner: Any = None
    new_treedef: Any = None
    new_paths: tuple[str, ...] | None = None
    cache: dict = dataclasses.field(default_factory=dict, repr=False)


def leaf_keep(graph, keep: dict[str, np.ndarray]) -> dict[tuple[str, int], np.ndarray]:
    """``{(leaf, axis): kept indices}`` for the slices of every pruned unit group.

    Raises:
      GraphError: if a pruned group has coupled channels (``Unit.coupled``).
    """
    out: dict[tuple[str, int], np.ndarray] = {}
    for name, m in keep.items():
        if m.all():
            continue
        unit = graph.units[name]
        if unit.coupled:
            raise GraphError(
                f"unit group {name!r} cannot be pruned exactly: " + "; ".join(unit.coupled)
            )
        for leaf, axis, idx in graph.slices(name):
            hit = np.where(idx >= 0, m[np.maximum(idx, 0)], True)
            prev = out.get((leaf, axis))
            out[(leaf, axis)] = hit if prev is None else prev & hit
    return {k: np.flatnonzero(v) for k, v in out.items()}


def _root_keep(graph, keep):
    missing = sorted(set(keep) - set(graph.units))
    if missing:
        raise GraphError(
            f"the pruned unit group(s) {missing} are not unit groups in this call (e.g. their "
            "channels reach a model output); call the narrow model as it was pruned"
        )
    return {graph.units[name].root: np.asarray(m, bool) for name, m in keep.items()}


def _act_keep(act: Act, roots, locate) -> np.ndarray | None:
    """Bool over ``act``'s channel axis: the positions that survive, or None if all do."""
    if act.axis is None:
        return None
    parts, any_cut = [], False
    for s, a, b in act.segs:
        root, start = locate(s)
        m = roots.get(root)
        if m is None:
            parts.append(np.ones(b - a, bool))
        else:
            part = m[start + a : start + b]
            any_cut |= not part.all()
            parts.append(part)
    if not any_cut:
        return None
    vec = np.concatenate(parts)
    if act.inner > 1:
        vec = np.repeat(vec, act.inner)
    if act.outer > 1:
        vec = np.tile(vec, act.outer)
    return vec


def narrowed_shapes(graph, keep) -> tuple[dict, dict]:
    """``({var: new shape}, {var: (axis, bool kept)})`` of every program value."""
    an = graph.analysis
    roots = _root_keep(graph, keep)
    lk = leaf_keep(graph, keep)
    shapes, cuts = {}, {}
    for v, ann in an.annotations.items():
        shape = list(an.program.avals[v].shape)
        if isinstance(ann, Act):
            vec = _act_keep(ann, roots, an.locate)
            if vec is not None:
                shape[ann.axis] = int(vec.sum())
                cuts[v] = (ann.axis, vec)
        elif isinstance(ann, PVal):
            for i, pairs in enumerate(ann.axes):
                for pair in sorted(pairs):
                    if pair in lk and len(ann.shape) > i and ann.shape[i] > 1:
                        shape[i] = len(lk[pair])
                        break
        shapes[v] = tuple(shape)
    return shapes, cuts


@dataclasses.dataclass
class _Plan:
    graph: Any
    shapes: dict
    cuts: dict
    leaf_shapes: tuple


def trace_original(model, kind: str, treedef, avals, args, kwargs):
    """The layer graph of a rewrite's original model (as kept by :func:`abstract_model`) at
    ``args`` (arrays or ``ShapeDtypeStruct``), with variables of structure ``treedef`` and
    shapes ``avals``."""
    from jaxprune.graph._graph import trace

    variables = jax.tree.unflatten(treedef, list(avals))
    if kind == "nnx":
        variables = None  # the abstract model carries its own (abstract) state
    elif kind == "equinox":
        model = _equinox_apply(model)
    return trace(model, variables, *args, **kwargs)


def plan_for(spec: RewriteSpec, args, kwargs) -> _Plan:
    """Traces ``spec.model`` at ``args``' shapes (cached) and plans the narrowed evaluation."""
    arg_leaves, arg_tree = jax.tree.flatten(args)
    abstract_args = [jax.ShapeDtypeStruct(np.shape(a), a.dtype) for a in arg_leaves]
    try:
        kw = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items())
        key = (arg_tree, tuple((s.shape, s.dtype) for s in abstract_args), kw)
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in spec.cache:
        return spec.cache[key]
    args = jax.tree.unflatten(arg_tree, abstract_args)
    graph = trace_original(spec.model, spec.kind, spec.treedef, spec.avals, args, kwargs)
    keep = {name: np.asarray(m, bool) for name, m in spec.keep}
    shapes, cuts = narrowed_shapes(graph, keep)
    n = len(spec.paths)
    leaf_shapes = tuple(shapes[v] for v in graph.analysis.program.invars[:n])
    plan = _Plan(graph, shapes, cuts, leaf_shapes)
    if key is not None:
        spec.cache[key] = plan
    return plan


def _count(vec, stop):
    return int(vec[:stop].sum())


def _fix_params(node, plan: _Plan, in_shapes):
    """The primitive's params with shape-carrying entries recomputed for narrowed values."""
    name, params = node.name, dict(node.params)
    out_shapes = [plan.shapes[o] for o in node.outs]
    cuts = plan.cuts
    if name == "reshape":
        params["new_sizes"] = out_shapes[0]
        params["dimensions"] = None
    elif name == "broadcast_in_dim":
        params["shape"] = out_shapes[0]
    elif name == "iota":
        params["shape"] = out_shapes[0]
    elif name == "pad" and node.ins[0] in cuts or (name == "pad" and node.outs[0] in cuts):
        if node.outs[0] in cuts:
            axis, vec = cuts[node.outs[0]]
            cfg = list(params["padding_config"])
            lo, hi, interior = cfg[axis]
            cfg[axis] = (_count(vec, lo), int(vec[len(vec) - hi :].sum()) if hi else 0, interior)
            params["padding_config"] = tuple(cfg)
    elif name == "slice" and not isinstance(node.ins[0], Literal) and node.ins[0] in cuts:
        axis, vec = cuts[node.ins[0]]
        start = list(params["start_indices"])
        limit = list(params["limit_indices"])
        start[axis], limit[axis] = _count(vec, start[axis]), _count(vec, limit[axis])
        params["start_indices"], params["limit_indices"] = tuple(start), tuple(limit)
    elif name == "split" and node.ins[0] in cuts and cuts[node.ins[0]][0] == params["axis"]:
        params["sizes"] = tuple(s[params["axis"]] for s in out_shapes)
    elif name == "conv_general_dilated":
        groups = params.get("feature_group_count", 1)
        lhs_feature = params["dimension_numbers"].lhs_spec[1]
        old_cin = node_in_aval(plan, node, 0).shape[lhs_feature]
        if groups > 1 and groups == old_cin:
            params["feature_group_count"] = in_shapes[0][lhs_feature]
    return params


def node_in_aval(plan, node, i):
    v = node.ins[i]
    if isinstance(v, Literal):
        return jax.ShapeDtypeStruct(np.shape(v.value), np.asarray(v.value).dtype)
    return plan.graph.analysis.program.avals[v]


def run_rewritten(spec: RewriteSpec, leaves, args, kwargs):
    """Evaluates the rewritten model: ``leaves`` are the new variables' leaves in order."""
    plan = plan_for(spec, args, kwargs)
    program = plan.graph.analysis.program
    n = len(spec.paths)
    for path, leaf, shape in zip(spec.paths, leaves, plan.leaf_shapes, strict=True):
        if tuple(np.shape(leaf)) != shape:
            raise ValueError(
                f"variables[{path!r}]: expected shape {shape} (the rewritten model's), got "
                f"{tuple(np.shape(leaf))}"
            )
    env = dict(zip(program.invars, list(leaves) + jax.tree.leaves(args), strict=True))
    del n

    def read(v):
        return v.value if isinstance(v, Literal) else env[v]

    for node in program.nodes:
        vals = [read(v) for v in node.ins]
        params = _fix_params(node, plan, [np.shape(x) for x in vals])
        outs = node.primitive.bind(*vals, **params)
        if not node.primitive.multiple_results:
            outs = (outs,)
        for o, val in zip(node.outs, outs, strict=True):
            if tuple(np.shape(val)) != plan.shapes[o]:
                raise GraphError(
                    f"after pruning, the result has shape {tuple(np.shape(val))} where the "
                    f"channel layout expects {plan.shapes[o]}; jaxprune does not know how to "
                    "narrow this operation",
                    node.name,
                    user_line(node.source_info, node.call_sites),
                )
            env[o] = val
    outs = [read(v) for v in program.outvars]
    return jax.tree.unflatten(plan.graph._out_tree, outs)


def _linen_module_class():
    import flax.linen as nn

    class Rewritten(nn.Module):
        """A rewritten linen model: the original's program run on the new (smaller) variables.

        Its variables have the original's nested structure (``{"params": {"Dense_0": ...}}``),
        minus what the rewrite removed. ``init`` gives zeros of the new shapes; use the
        variables returned by the rewrite.
        """

        spec: RewriteSpec

        @nn.compact
        def __call__(self, *args, **kwargs):
            spec = self.spec
            tree = jax.tree.unflatten(spec.new_treedef or spec.treedef, list(spec.new_avals))
            got = {}
            for col, tops in tree.items():
                got[col] = {}
                for top, sub in tops.items():

                    def zeros(*_, sub=sub):
                        return jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), sub)

                    if col == "params":
                        got[col][top] = self.param(top, zeros)
                    else:
                        got[col][top] = self.variable(col, top, zeros).value
            mutable = [c for c in tree if c != "params" and self.is_mutable_collection(c)]
            call_kwargs = dict(kwargs)
            if mutable:
                call_kwargs["mutable"] = mutable
            leaves = jax.tree.leaves(got)
            out = (spec.runner or run_rewritten)(spec, leaves, args, call_kwargs)
            if mutable:
                out, updates = out
                for col, tops in updates.items():
                    for top, val in tops.items():
                        self.put_variable(col, top, val)
            return out

    return Rewritten


def _nnx_module_class():
    from flax import nnx

    class Node(nnx.Module):
        """A node of the rewritten NNX model's state tree (an attribute per key)."""

    class Rewritten(nnx.Module):
        """A rewritten NNX model: the original's program run on its (smaller) variables.

        Its state has the original's structure (``nnx.state(m)`` has the same paths and
        variable types, ``nnx.Param``, ``nnx.BatchStat``, ...) with the new shapes. It runs
        the original as it was rewritten (its train/eval mode at that time).
        """

        def __init__(self, spec: RewriteSpec, leaves):
            self.spec = spec
            types = {
                "/".join(str(k) for k in path): (path, type(var))
                for path, var in nnx.to_flat_state(nnx.state(spec.model))
            }
            for name, value in zip(_leaf_paths(spec), leaves, strict=True):
                path, kind = types.get(name, (None, nnx.Param))  # new leaves are parameters
                if path is None:
                    path = tuple(int(k) if k.isdigit() else k for k in name.split("/"))
                node = self
                for k, nxt in zip(path[:-1], path[1:], strict=True):
                    child = _nnx_get(node, k)
                    if child is None:
                        child = nnx.List([]) if isinstance(nxt, int) else Node()
                        _nnx_set(node, k, child)
                    node = child
                _nnx_set(node, path[-1], kind(value))

        def __call__(self, *args, **kwargs):
            leaves = held_leaves(self)
            return (self.spec.runner or run_rewritten)(self.spec, leaves, args, kwargs)

    return Rewritten


def _nnx_get(node, k):
    if isinstance(k, int):
        return node[k] if k < len(node) else None
    return getattr(node, k, None)


def _nnx_set(node, k, value):
    if isinstance(k, int):
        if k != len(node):
            raise NotImplementedError(
                f"rewriting an NNX model whose state has a sparse list index ({k}) is not supported"
            )
        node.append(value)
    else:
        setattr(node, k, value)


def _equinox_module_class():
    import equinox as eqx

    class Rewritten(eqx.Module):
        """A rewritten equinox model: the original's program run on its (smaller) arrays.

        ``variables`` has the structure of the original's arrays
        (``eqx.partition(model, eqx.is_array)[0]``) with the new shapes; ``eqx.partition``,
        ``eqx.combine`` and ``eqx.filter_jit`` work as on any module.
        """

        variables: Any
        spec: RewriteSpec = eqx.field(static=True)

        def __call__(self, *args, **kwargs):
            leaves = jax.tree.leaves(self.variables)
            return (self.spec.runner or run_rewritten)(self.spec, leaves, args, kwargs)

    return Rewritten


def _equinox_apply(static):
    import equinox as eqx

    def apply(arrays, *args, **kwargs):
        return eqx.combine(arrays, static)(*args, **kwargs)

    return apply


def abstract_model(adapter):
    """What a rewrite keeps of the user's model: it as is for linen and functions; for NNX a
    copy with ``ShapeDtypeStruct`` values (the graphdef and variable types, no arrays); for
    equinox the static part (``eqx.partition(model, eqx.is_array)[1]``)."""
    if adapter.kind == "nnx":
        from flax import nnx

        graphdef, state = nnx.split(adapter.model)
        state = jax.tree.map(lambda a: a, state)  # a copy; its values are replaced below
        avals = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), adapter.variables
        )
        nnx.replace_by_pure_dict(state, avals)  # the state passed, if one was
        return nnx.merge(graphdef, state)
    if adapter.kind == "equinox":
        import equinox as eqx

        return eqx.partition(adapter.model, eqx.is_array)[1]
    return adapter.model


_CLASSES: dict[str, Any] = {}


def build_model(spec: RewriteSpec, leaves=None):
    """The rewritten model in the user's kind.

    A linen Module (its variables are passed to ``apply``), a function
    ``apply_fn(params, *args)`` for a function, or, holding ``leaves`` (the new variables'
    leaves in ``spec.paths`` order), an ``nnx.Module`` for NNX and an ``eqx.Module`` for
    equinox.
    """
    if spec.kind == "linen":
        if "linen" not in _CLASSES:
            _CLASSES["linen"] = _linen_module_class()
        return _CLASSES["linen"](spec)
    if spec.kind == "function":

        def apply_fn(params, *args, **kwargs):
            return (spec.runner or run_rewritten)(spec, jax.tree.leaves(params), args, kwargs)

        apply_fn.spec = spec
        return apply_fn
    if spec.kind in ("nnx", "equinox"):
        if leaves is None:
            raise ValueError(f"build_model: a {spec.kind} model holds its variables; pass leaves")
        if spec.kind not in _CLASSES:
            factory = _nnx_module_class if spec.kind == "nnx" else _equinox_module_class
            _CLASSES[spec.kind] = factory()
        if spec.kind == "nnx":
            return _CLASSES["nnx"](spec, list(leaves))
        treedef = spec.new_treedef or spec.treedef
        return _CLASSES["equinox"](jax.tree.unflatten(treedef, list(leaves)), spec)
    raise NotImplementedError(f"rewriting a {spec.kind} model is not supported yet")


def model_variables(spec: RewriteSpec, model, leaves):
    """The variables returned with a rewritten model: the user's structure for linen and
    functions, the state's pure dict (``nnx.to_pure_dict(nnx.state(model))``) for NNX, the
    arrays (``eqx.filter(model, eqx.is_array)``) for equinox."""
    if spec.kind == "nnx":
        from flax import nnx

        return nnx.to_pure_dict(nnx.state(model))
    if spec.kind == "equinox":
        import equinox as eqx

        return eqx.filter(model, eqx.is_array)
    return jax.tree.unflatten(spec.new_treedef or spec.treedef, list(leaves))


def _leaf_paths(spec: RewriteSpec) -> tuple[str, ...]:
    return spec.paths if spec.new_paths is None else spec.new_paths


def held_leaves(model, variables=None) -> list:
    """The leaves of a rewritten model's variables in the order its runner takes them.

    ``variables``: for linen and functions the variables passed to the model; for NNX
    ``None`` (the model's own state) or a pure dict / ``nnx.State``; for equinox ``None`` or
    ``eqx.filter(model, eqx.is_array)``.
    """
    spec = model.spec
    if spec.kind == "equinox":
        held = model if variables is None else variables
        return jax.tree.leaves(held.variables)
    if spec.kind == "nnx":
        from flax import nnx

        state = nnx.state(model) if variables is None else variables
        tree = nnx.to_pure_dict(state) if isinstance(state, nnx.State) else state
    else:
        tree = variables
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    by_path = {path_str(p): v for p, v in flat}
    missing = [p for p in _leaf_paths(spec) if p not in by_path]
    if missing:
        raise ValueError(f"variables: missing the rewritten model's leaves {missing}")
    return [by_path[p] for p in _leaf_paths(spec)]
