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
import inspect
from typing import Any

import jax
import numpy as np

from jaxprune.graph._adapters import path_str
from jaxprune.graph._errors import GraphError, user_line
from jaxprune.graph._inline import Literal
from jaxprune.graph._layout import Act, PVal
from jaxprune.graph._primitives import BINARY, OUT_SHAPE_PARAM, RANDOM
from jaxprune.graph._rewritten_call import (
    PLAN_CACHE_SIZE,
    Call,
    PlanCache,
    Skeleton,
    content_key,
    hashable,
    prepare_call,
    trace_call,
)

__all__ = [
    "PLAN_CACHE_SIZE",
    "RewriteSpec",
    "RewrittenFunction",
    "abstract_model",
    "build_model",
    "held_leaves",
    "initial_leaves",
    "leaf_keep",
    "model_variables",
    "narrowed_shapes",
    "run_rewritten",
    "signed_call",
    "trace_original",
]


@dataclasses.dataclass(frozen=True, eq=False)
class RewriteSpec:
    """A static rewrite of a model: compared and hashed by content, so two equal rewrites of
    the same model definition are equal (one ``jax.jit`` compilation with the model static).

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
        :func:`run_rewritten`, the narrowed evaluation of pruning); a module-level class with
        value equality (it is part of the content).
      new_treedef: the structure of the rewritten variables when it differs from the
        original's (a rewrite that removes or adds leaves).
      new_paths: the rewritten variables' leaf paths in the order ``runner`` takes them, when
        they differ from ``paths``.
      initializer: ``initializer.initial_leaves(spec, draw, args, kwargs)``: the rewritten
        model's initial leaves from ``draw(i)``, the ``i``-th fresh initialization of the
        original (``{path: array}``); None: the kept slices of ``draw(0)`` (pruning).
      approximate: groups whose channels a reduction mixes (a transformer's residual stream
        under its norms) may be pruned: the narrowed program reduces over the kept channels
        (``prune_units(..., exact=False)``).
      submodules: linen: the :class:`~jaxprune.graph._submodules.Narrowed` submodules of the
        original, rebuilt with their narrowed fields (``Rewritten.submodule``); derived from the
        rest, so not part of the content (and not pickled).
      cache: the traced plans, per argument shapes and static keywords
        (:class:`~jaxprune.graph._rewritten_call.PlanCache`, at most ``PLAN_CACHE_SIZE``);
        not part of the content and not pickled.
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
    initializer: Any = None
    approximate: bool = False
    submodules: tuple = dataclasses.field(default=(), repr=False, metadata={"derived": True})
    cache: PlanCache = dataclasses.field(default_factory=PlanCache, repr=False)

    def _content(self) -> tuple:
        key = self.__dict__.get("_key")
        if key is None:
            key = (
                content_key(self.model, self.kind),
                self.kind,
                hashable(self.treedef),
                self.paths,
                self.avals,
                self.new_avals,
                self.keep,
                hashable(self.runner),
                hashable(self.new_treedef),
                self.new_paths,
                hashable(self.initializer),
                self.approximate,
            )
            object.__setattr__(self, "_key", key)
        return key

    def __eq__(self, other):
        if self is other:
            return True
        if not isinstance(other, RewriteSpec):
            return NotImplemented
        return self._content() == other._content()

    def __hash__(self):
        return hash(self._content())

    def __getstate__(self):
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del state["cache"]
        del state["submodules"]  # flax layers hold initializer closures, which do not pickle
        state["treedef"] = Skeleton.of(self.treedef, self.avals)
        state["new_treedef"] = Skeleton.of(self.new_treedef, self.new_avals)
        return state

    def __setstate__(self, state):
        for name, value in state.items():
            if isinstance(value, Skeleton):
                value = value.treedef()
            object.__setattr__(self, name, value)
        object.__setattr__(self, "cache", PlanCache())
        object.__setattr__(self, "submodules", ())

    def signature(self) -> inspect.Signature | None:
        """The original model's call signature (None if it has none)."""
        sig = self.__dict__.get("_signature", False)
        if sig is False:
            call = self.model if self.kind == "function" else self.model.__call__
            try:
                sig = inspect.signature(call)
            except (TypeError, ValueError):
                sig = None
            object.__setattr__(self, "_signature", sig)
        return sig


def leaf_keep(
    graph, keep: dict[str, np.ndarray], check: bool = True
) -> dict[tuple[str, int], np.ndarray]:
    """``{(leaf, axis): kept indices}`` for the slices of every pruned unit group.

    Raises:
      GraphError: if ``check`` and a pruned group has coupled channels (``Unit.coupled``), a
        grouped convolution's output (``Unit.groups``) loses unequal numbers per group, or a
        grouped convolution's input (``Unit.period``) loses different positions per group.
    """
    out: dict[tuple[str, int], np.ndarray] = {}
    for name, m in keep.items():
        if m.all():
            continue
        unit = graph.units[name]
        if check and unit.coupled:
            raise GraphError(
                f"unit group {name!r} cannot be pruned exactly: " + "; ".join(unit.coupled)
            )
        if check and unit.groups > 1:
            removed = (~m).reshape(unit.groups, -1).sum(axis=1).tolist()
            if len(set(removed)) > 1:
                raise GraphError(
                    f"unit group {name!r} is the output of a grouped convolution "
                    f"(feature_group_count={unit.groups}, {unit.width // unit.groups} channels "
                    f"per group): it is pruned in equal numbers per group, but keep[{name!r}] "
                    f"removes {removed}; remove the same number from each group "
                    "(jp.analysis.keep_top(..., graph=graph) does)"
                )
        if check and unit.period and not (m.reshape(-1, unit.period) == m[: unit.period]).all():
            raise GraphError(
                f"unit group {name!r} is read by a grouped convolution, whose kernel reads "
                f"in-group position r of every convolution group with the same entries (period "
                f"{unit.period}): its units are pruned at the same positions in every group, but "
                f"keep[{name!r}] differs between groups; keep the same positions in each group "
                "(jp.analysis.keep_top(..., graph=graph) does)"
            )
        for leaf, axis, idx in graph.slices(name):
            hit = np.where(idx >= 0, m[np.maximum(idx, 0)], True)
            prev = out.get((leaf, axis))
            out[(leaf, axis)] = hit if prev is None else prev & hit
        for leaf, (in_axis, _), idx in graph.grouped_slices(name):  # in-group positions
            hit = np.where(idx[:, 0] >= 0, m[np.maximum(idx[:, 0], 0)], True)
            prev = out.get((leaf, in_axis))
            out[(leaf, in_axis)] = hit if prev is None else prev & hit
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
    return _narrowed(graph.analysis, _root_keep(graph, keep), leaf_keep(graph, keep))


def _narrowed(an, roots, lk) -> tuple[dict, dict]:
    shapes, cuts = {}, {}
    for v, ann in an.annotations.items():
        shape = list(an.program.avals[v].shape)
        if isinstance(ann, Act):
            vec = _act_keep(ann, roots, an.locate)
            if vec is not None:
                shape[ann.axis] = int(vec.sum())  # type: ignore[index]  # kept: has an axis
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
    squeeze: dict  # {(node, operand): (axis, kept bool)}: operands taken at the kept channels


def trace_original(model, kind: str, treedef, avals, args, kwargs):
    """The layer graph of a rewrite's original model (as kept by :func:`abstract_model`) at
    ``args`` (arrays or ``ShapeDtypeStruct``), with variables of structure ``treedef`` and
    shapes ``avals``; keyword arrays (``rngs=``) are program inputs after the arguments."""
    return trace_call(model, kind, treedef, avals, prepare_call(args, kwargs))


def _squeezed_operands(graph, cuts) -> dict:
    """Operands to take at the kept channels where they meet a narrowed activation.

    Two kinds of constants (no parameter in them) span the full channel width next to an
    activation and are exact when sliced: random draws (dropout's mask: the narrow model's mask
    is the full model's mask at the kept channels) and broadcasts that are constant along the
    channel axis (``zeros_like``).
    """
    an = graph.analysis
    program = an.program
    random: set = set()
    uniform: dict = {}
    for node in program.nodes:
        ins = [v for v in node.ins if not isinstance(v, Literal)]
        if node.name in RANDOM or any(v in random for v in ins):
            random.update(o for o in node.outs if not isinstance(an.annotations.get(o), Act))
        if node.name == "broadcast_in_dim":
            x = node.ins[0]
            shape = np.shape(x.value) if isinstance(x, Literal) else program.avals[x].shape
            dims = node.params["broadcast_dimensions"]
            fed = {d for i, d in enumerate(dims) if shape[i] > 1}
            uniform[node.outs[0]] = set(range(len(node.params["shape"]))) - fed
    out = {}
    for i, node in enumerate(program.nodes):
        cut = cuts.get(node.outs[0]) if len(node.outs) == 1 else None
        if cut is None:
            continue
        axis, vec = cut
        for j, v in enumerate(node.ins):
            if isinstance(v, Literal):
                continue
            ann = an.annotations.get(v)
            if not isinstance(ann, PVal) or ann.leaves:
                continue
            shape = program.avals[v].shape
            if len(shape) <= axis or shape[axis] != len(vec):
                continue
            if v in random or axis in uniform.get(v, ()):
                out[(i, j)] = (axis, vec)
    return out


def _check_mixing(graph, keep) -> None:
    """Raises for a pruned group whose channels a reduction mixes in this call's program."""
    an = graph.analysis
    for name, m in keep.items():
        if m.all():
            continue
        root = graph.units[name].root
        why = [r for s, info in an.spaces.items() if an.find(s)[0] == root for r in info.mixing]
        if why:
            raise GraphError(f"unit group {name!r} cannot be pruned exactly: " + "; ".join(why))


def plan_for(spec: RewriteSpec, call: Call) -> _Plan:
    """Traces ``spec.model`` for ``call`` (cached) and plans the narrowed evaluation."""
    plan = spec.cache.get(call.key)
    if plan is not None:
        return plan
    graph = trace_call(spec.model, spec.kind, spec.treedef, spec.avals, call)
    keep = {name: np.asarray(m, bool) for name, m in spec.keep}
    roots = _root_keep(graph, keep)
    if not spec.approximate:  # constants aligned with the channels: sliced or refused below
        _check_mixing(graph, keep)
    an = graph.analysis
    lk = leaf_keep(graph, keep, check=False)
    shapes, cuts = _narrowed(an, roots, lk)
    n = len(spec.paths)
    leaf_shapes = tuple(shapes[v] for v in an.program.invars[:n])
    plan = _Plan(graph, shapes, cuts, leaf_shapes, _squeezed_operands(graph, cuts))
    spec.cache.put(call.key, plan)
    return plan


def _count(vec, stop):
    return int(vec[:stop].sum())


def _fix_params(node, plan: _Plan, in_shapes):
    """The primitive's params with shape-carrying entries recomputed for narrowed values."""
    name, params = node.name, dict(node.params)
    out_shapes = [plan.shapes[o] for o in node.outs]
    cuts = plan.cuts
    if name in OUT_SHAPE_PARAM:
        params[OUT_SHAPE_PARAM[name]] = out_shapes[0]
        if name == "reshape":
            params["dimensions"] = None
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
    elif name == "gather":  # an embedding lookup's rows: as wide as its narrowed table
        old = node_in_aval(plan, node, 0).shape
        params["slice_sizes"] = tuple(
            new if size == full else size
            for size, full, new in zip(params["slice_sizes"], old, in_shapes[0], strict=True)
        )
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


def _fit_to(vals, shape):
    """An approximate prune's elementwise operands cut to the narrowed ``shape``: a value of
    the full channel width there (a norm's statistic broadcast over the channels) keeps its
    first entries, exact for a broadcast value (the report measures the rest)."""
    out = []
    for x in vals:
        if np.ndim(x) == len(shape):
            for axis, (n, want) in enumerate(zip(np.shape(x), shape, strict=True)):
                if n > want > 0 and n != 1:
                    x = jax.lax.slice_in_dim(x, 0, want, axis=axis)
        out.append(x)
    return out


def run_rewritten(spec: RewriteSpec, leaves, args, kwargs):
    """Evaluates the rewritten model: ``leaves`` are the new variables' leaves in order."""
    call = prepare_call(args, kwargs)
    plan = plan_for(spec, call)
    program = plan.graph.analysis.program
    for path, leaf, shape in zip(spec.paths, leaves, plan.leaf_shapes, strict=True):
        if tuple(np.shape(leaf)) != shape:
            raise ValueError(
                f"variables[{path!r}]: expected shape {shape} (the rewritten model's), got "
                f"{tuple(np.shape(leaf))}"
            )
    env = dict(zip(program.invars, list(leaves) + call.leaves, strict=True))

    def read(v):
        return v.value if isinstance(v, Literal) else env[v]

    for i, node in enumerate(program.nodes):
        vals = [read(v) for v in node.ins]
        for j in range(len(vals)):
            sq = plan.squeeze.get((i, j))
            if sq is not None:
                vals[j] = jax.numpy.take(vals[j], np.flatnonzero(sq[1]), axis=sq[0])
        if spec.approximate and node.name in BINARY:
            vals = _fit_to(vals, plan.shapes[node.outs[0]])
        params = _fix_params(node, plan, [np.shape(x) for x in vals])
        try:
            outs = node.primitive.bind(*vals, **params)
        except (TypeError, ValueError) as e:
            raise GraphError(
                f"after pruning, this operation's operands no longer fit ({e}); a value of the "
                "full channel width (a constant aligned with the channels) meets a narrowed "
                "one, which jaxprune does not know how to narrow",
                node.name,
                user_line(node.source_info, node.call_sites),
            ) from e
        if not node.primitive.multiple_results:
            outs = (outs,)
        for o, val in zip(node.outs, outs, strict=True):
            loose = spec.approximate and node.name in BINARY  # a statistic times narrowed
            if tuple(np.shape(val)) != plan.shapes[o] and not loose:  # parameters (norms)
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


class RewrittenFunction:
    """A rewritten function model ``apply_fn(params, *args, **kwargs)``.

    A module-level callable (it pickles when the original function does, or saves with
    :func:`jaxprune.graph.save_rewritten`, and compares by its :class:`RewriteSpec`), with the
    original function's signature (``inspect.signature(apply_fn)``).
    """

    def __init__(self, spec: RewriteSpec):
        self.spec = spec

    def __call__(self, params, *args, **kwargs):
        spec = self.spec
        return (spec.runner or run_rewritten)(spec, jax.tree.leaves(params), args, kwargs)

    @property
    def __signature__(self):
        return self.spec.signature()

    def __eq__(self, other):
        return isinstance(other, RewrittenFunction) and self.spec == other.spec

    def __hash__(self):
        return hash(("RewrittenFunction", self.spec))

    def __repr__(self):
        name = getattr(self.spec.model, "__name__", type(self.spec.model).__name__)
        return f"RewrittenFunction({name})"


def signed_call(spec: RewriteSpec, call):
    """A function calling ``call(self, ...)`` whose signature is ``self`` + the original's."""
    sig = spec.signature()

    def method(self, *args, **kwargs):
        return call(self, *args, **kwargs)

    if sig is not None:
        first = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
        method.__signature__ = sig.replace(  # type: ignore[attr-defined]  # inspect reads it
            parameters=[first, *sig.parameters.values()]
        )
    return method


def initial_leaves(spec: RewriteSpec, rngs, args, kwargs) -> list:
    """A rewritten linen model's initial leaves (in ``new_paths`` order): the rewrite applied
    to the original's ``init`` with ``rngs`` (``spec.initializer``; pruning: the kept slices)."""
    if spec.kind != "linen":
        raise NotImplementedError(f"a rewritten {spec.kind} model has no init")
    kwargs = {k: v for k, v in kwargs.items() if k not in ("mutable", "rngs")}
    draws: dict[int, dict] = {}

    def draw(i: int) -> dict:
        if i not in draws:
            keys = rngs if i == 0 else {n: jax.random.fold_in(k, i) for n, k in rngs.items()}
            fresh = spec.model.init(keys, *args, **kwargs)
            flat, _ = jax.tree_util.tree_flatten_with_path(fresh)
            draws[i] = {path_str(p): v for p, v in flat}
        return draws[i]

    if spec.initializer is not None:
        leaves = list(spec.initializer.initial_leaves(spec, draw, args, kwargs))
    else:  # a rewrite that keeps every leaf's path and shape
        fresh = draw(0)
        missing = [p for p in _leaf_paths(spec) if p not in fresh]
        if missing:
            raise GraphError(f"init: the original model's init has no leaves {missing}")
        leaves = [fresh[p] for p in _leaf_paths(spec)]
    for path, leaf, aval in zip(_leaf_paths(spec), leaves, spec.new_avals, strict=True):
        if tuple(np.shape(leaf)) != tuple(aval.shape):
            raise GraphError(
                f"init: the initial value of {path!r} has shape {tuple(np.shape(leaf))} where "
                f"the rewritten model has {tuple(aval.shape)}"
            )
    return [jax.numpy.asarray(v, a.dtype) for v, a in zip(leaves, spec.new_avals, strict=True)]


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


def build_model(spec: RewriteSpec, leaves=None):
    """The rewritten model in the user's kind.

    A linen Module (its variables are passed to ``apply``), a function
    ``apply_fn(params, *args)`` for a function, or, holding ``leaves`` (the new variables'
    leaves in ``spec.paths`` order), an ``nnx.Module`` for NNX and an ``eqx.Module`` for
    equinox. Each is an instance of a module-level class (it pickles) that compares by its
    ``spec``.
    """
    if spec.kind == "linen":
        from jaxprune.graph._rewritten_linen import Rewritten

        return Rewritten(spec)
    if spec.kind == "function":
        return RewrittenFunction(spec)
    if spec.kind in ("nnx", "equinox"):
        if leaves is None:
            raise ValueError(f"build_model: a {spec.kind} model holds its variables; pass leaves")
        if spec.kind == "nnx":
            from jaxprune.graph._rewritten_nnx import Rewritten as RewrittenNNX

            return RewrittenNNX(spec, list(leaves))
        from jaxprune.graph._rewritten_equinox import Rewritten as RewrittenEquinox

        treedef = spec.new_treedef or spec.treedef
        return RewrittenEquinox(jax.tree.unflatten(treedef, list(leaves)), spec)
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
