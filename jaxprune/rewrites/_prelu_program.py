"""The traced program with channel-wise PReLUs at its ReLU sites, and dense->dense folds.

A :class:`PReLUProgram` is the static part of a swapped (and possibly folded) model: the
user's original model, the unit groups that carry slopes, and the layer pairs folded into one.
Called with the new variables' leaves, it re-traces the original model at the call's argument
shapes (cached per shape), and evaluates the program with every ReLU site ``max(x, 0)`` of a
slope-carrying unit group replaced by ``relu(x) + a * min(x, 0)`` (``a`` broadcast along the
channel axis; at ``a = 0`` bit for bit the ReLU). A fold ``(first, second)`` makes ``second``
read ``first``'s input directly with its (already folded) kernel; the nodes that computed
``first``'s output are then dead and skipped.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.graph import path_str
from jaxprune.graph.extend import (
    CALLS,
    Act,
    Literal,
    PlanCache,
    PVal,
    channel_vector,
    content_key,
    hashable,
    prepare_call,
    trace_call,
)

__all__ = ["SLOPES", "PReLUProgram", "relu_sites", "slope_path"]

SLOPES = "prelu"  # the key of the slopes' dict in the trainable variables


def slope_path(prefix: str, unit: str) -> str:
    """The leaf path of a unit group's slopes: ``params/prelu/<unit>/slope`` (linen)."""
    return "/".join(p for p in (prefix, SLOPES, unit, "slope") if p)


def _is_zero(v, ann) -> bool:
    if isinstance(v, Literal):
        return bool(np.all(np.asarray(v.value) == 0))
    return isinstance(ann, PVal) and not ann.leaves and ann.value == 0.0


def relu_sites(graph) -> dict[int, tuple[int, Act]]:
    """``{node index: (activation operand, its layout)}`` of every ``max(x, 0)`` ReLU site.

    A site is a ``max`` of an activation with channel structure and the constant 0, inside
    ``jax.nn.relu`` or written out (``jnp.maximum(h, 0.0)``); a ``max`` inside another named
    function (``relu6``) is not one.
    """
    an = graph.analysis
    out = {}
    for i, node in enumerate(an.program.nodes):
        if node.name != "max" or len(node.ins) != 2:
            continue
        names = [c for c in node.context if c not in CALLS]
        if names and names[-1] != "relu":
            continue
        anns = [None if isinstance(v, Literal) else an.annotations.get(v) for v in node.ins]
        for j in (0, 1):
            a, other = anns[j], 1 - j
            if isinstance(a, Act) and a.axis is not None and _is_zero(node.ins[other], anns[other]):
                out[i] = (j, a)
                break
    return out


def slope_units(graph, sites) -> list[str]:
    """The unit groups (in forward order) whose channels enter at least one ReLU site."""
    roots = {graph.analysis.locate(s)[0] for _, act in sites.values() for s, _, _ in act.segs}
    return [name for name, u in graph.units.items() if u.root in roots]


def slope_vector(act: Act, slopes: dict, locate, dtype):
    """The slopes along ``act``'s channel axis (0, a plain ReLU, on channels without slopes)."""
    return channel_vector(act, slopes, locate, dtype, fill=0.0)


def prelu(x, a, axis: int):
    """``relu(x) + a * min(x, 0)`` with ``a`` along ``axis``; equals ``relu(x)`` at ``a = 0``."""
    shape = [1] * x.ndim
    shape[axis] = a.shape[0]
    return jax.nn.relu(x) + a.reshape(shape) * jnp.where(x < 0, x, jnp.zeros_like(x))


def dot_act_operand(graph, layer: str) -> tuple[int, int]:
    """``(node index, operand index)`` of the activation read by a kernel layer."""
    an = graph.analysis
    info = an.layers[list(graph.layers).index(layer)]
    node = an.program.nodes[info.node]
    for j, v in enumerate(node.ins):
        if not isinstance(v, Literal) and isinstance(an.annotations.get(v), Act):
            return info.node, j
    raise AssertionError(f"layer {layer!r} reads no activation")  # pragma: no cover


@dataclasses.dataclass(frozen=True, eq=False)
class PReLUProgram:
    """Static description of a swapped/folded model: its runner and initializer (compared and
    hashed by content; pickled without its plan cache).

    Attributes:
      model: the user's original model (as kept by ``abstract_model``: no arrays).
      kind: the model's kind (``"linen"``, ``"nnx"``, ``"equinox"``, ``"function"``).
      orig_treedef, orig_avals: the original variables' structure and leaf shapes.
      orig_paths: the original leaf paths.
      new_paths: the new variables' leaf paths, in flattening order.
      prefix: the trainable collection's path prefix (``"params"`` for linen, else ``""``).
      units: the unit groups that carry slopes (their slope leaf is in ``new_paths``).
      folds: ``((first layer, second layer), ...)`` in forward order.
      slope: the slopes' initial value (``init`` of a linen model).
      fold_leaves: ``((first kernel, first bias or None, second kernel, second bias or
        None), ...)`` per fold, the leaves ``init`` folds as ``fold_linear`` did.
    """

    model: Any
    kind: str
    orig_treedef: Any
    orig_paths: tuple[str, ...]
    orig_avals: tuple
    new_paths: tuple[str, ...]
    prefix: str
    units: tuple[str, ...]
    folds: tuple[tuple[str, str], ...] = ()
    slope: float = 0.0
    fold_leaves: tuple = ()
    cache: PlanCache = dataclasses.field(default_factory=PlanCache, repr=False)

    def _content(self) -> tuple:
        return (
            content_key(self.model, self.kind),
            hashable(self.orig_treedef),
            *(getattr(self, f.name) for f in dataclasses.fields(self)[3:] if f.name != "cache"),
        )

    def __eq__(self, other):
        if not isinstance(other, PReLUProgram):
            return NotImplemented
        return self is other or self._content() == other._content()

    def __hash__(self):
        return hash(self._content())

    def __getstate__(self):
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "cache"
        }

    def __setstate__(self, state):
        for name, value in state.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "cache", PlanCache())

    def graph_for(self, args, kwargs):
        """The original model's graph at ``args``' shapes (cached), with its sites."""
        return self._plan(prepare_call(args, kwargs))

    def _plan(self, call):
        plan = self.cache.get(call.key)
        if plan is not None:
            return plan
        graph = trace_call(self.model, self.kind, self.orig_treedef, self.orig_avals, call)
        missing = [u for u in self.units if u not in graph.units]
        if missing:
            raise ValueError(
                f"the unit group(s) {missing} with PReLU slopes are not unit groups in this call "
                "(call the model as it was swapped, e.g. train=False)"
            )
        sites = relu_sites(graph)
        redirect = {}
        for first, second in self.folds:
            src = dot_act_operand(graph, first)
            var = redirect.get(src, graph.analysis.program.nodes[src[0]].ins[src[1]])
            redirect[dot_act_operand(graph, second)] = var
        live = _live_nodes(graph.analysis.program, redirect)
        out = (graph, sites, redirect, live)
        self.cache.put(call.key, out)
        return out

    def initial_leaves(self, spec, draw, args, kwargs):
        """A linen model's initial leaves: the original's fresh ones, slopes at ``slope``,
        every fold applied to the fresh pair (``RewriteSpec.initializer``)."""
        del args, kwargs
        values = dict(draw(0))
        for k1, b1, k2, b2 in self.fold_leaves:
            w1, w2 = jnp.asarray(values[k1]), jnp.asarray(values[k2])
            values[k2] = jnp.matmul(w1, w2, precision=jax.lax.Precision.HIGHEST)
            if b1 is not None:
                b = jnp.matmul(values[b1], w2, precision=jax.lax.Precision.HIGHEST)
                values[b2] = b + values[b2]
        slopes = {slope_path(self.prefix, u) for u in self.units}
        out = []
        for path, aval in zip(self.new_paths, spec.new_avals, strict=True):
            if path in slopes:
                out.append(jnp.full(aval.shape, self.slope, aval.dtype))
            else:
                out.append(values[path])
        return out

    def __call__(self, spec, leaves, args, kwargs):
        """The rewritten model's runner (``RewriteSpec.runner``)."""
        del spec
        call = prepare_call(args, kwargs)
        graph, sites, redirect, live = self._plan(call)
        return self._evaluate(graph, sites, redirect, live, leaves, call)

    def _evaluate(self, graph, sites, redirect, live, leaves, call):
        an = graph.analysis
        program = an.program
        by_path = dict(zip(self.new_paths, leaves, strict=True))
        slopes = {graph.units[u].root: by_path[slope_path(self.prefix, u)] for u in self.units}
        env = {}
        for v, p in zip(program.invars, self.orig_paths, strict=False):
            if p in by_path:
                env[v] = by_path[p]
        n = len(self.orig_paths)
        env.update(zip(program.invars[n:], call.leaves, strict=True))

        def read(v):
            return v.value if isinstance(v, Literal) else env[v]

        for i, node in enumerate(program.nodes):
            if i not in live:
                continue
            vals = [
                env[redirect[(i, j)]] if (i, j) in redirect else read(v)
                for j, v in enumerate(node.ins)
            ]
            site = sites.get(i)
            vec = None
            if site is not None:
                j, act = site
                vec = slope_vector(act, slopes, an.locate, jnp.result_type(vals[j]))
            if vec is not None:
                outs = (prelu(vals[j], vec, act.axis),)
            else:
                outs = node.primitive.bind(*vals, **node.params)
                if not node.primitive.multiple_results:
                    outs = (outs,)
            for o, val in zip(node.outs, outs, strict=True):
                env[o] = val
        outs = [read(v) for v in program.outvars]
        return jax.tree.unflatten(graph._out_tree, outs)


def _live_nodes(program, redirect) -> set[int]:
    """Indices of the nodes the outputs depend on, with ``redirect``'s operands replaced."""
    need = {v for v in program.outvars if not isinstance(v, Literal)}
    live = set()
    for i in range(len(program.nodes) - 1, -1, -1):
        node = program.nodes[i]
        if not any(o in need for o in node.outs):
            continue
        live.add(i)
        for j, v in enumerate(node.ins):
            v = redirect.get((i, j), v)
            if not isinstance(v, Literal):
                need.add(v)
    return live


def flat_paths(tree) -> tuple[list[str], list, Any]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [path_str(p) for p, _ in flat], [v for _, v in flat], treedef
