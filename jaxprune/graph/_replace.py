"""Evaluate a traced program with runs of nodes replaced by one linear op (collapse, fusion).

A :class:`Replacement` says: the value produced at ``end`` (a node's output) is computed
instead as ``op(x, kernel) + bias`` from the value ``x`` (an operand of an earlier node), with
a new kernel and bias from the rewritten variables. Everything the original computed only for
that value (the skipped layers, their biases, BatchNorm statistics) is dead and not evaluated;
its leaves are absent from the rewritten variables. :class:`ReplacedRunner` re-traces the
original model at each call's shapes and keywords (like pruning, see :mod:`._rewritten`), so the
rewritten model runs at any batch size, under ``jit``/``vmap``/``grad``, through
``jax.export``, and in another call mode (``train=True`` with dropout elsewhere in the model):
each replacement is found in the call's program by the nodes it stands for (a
:class:`Region`: their primitives and the parameter leaves they read), not by position. Where
the call changes a replaced part itself (a folded BatchNorm on batch statistics, dropout
between fused layers) it raises :class:`GraphError` naming it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._describe import ADDRESS
from jaxprune.graph._errors import GraphError
from jaxprune.graph._inline import Literal
from jaxprune.graph._layout import Act, PVal
from jaxprune.graph._primitives import RANDOM, SHAPE_PARAMS

__all__ = ["Region", "ReplacedRunner", "Replacement", "emit", "live_nodes", "region_of", "x_var"]


@dataclasses.dataclass(frozen=True)
class Region:
    """The nodes a :class:`Replacement` stands for, described without program positions.

    Attributes:
      nodes: per node of the replaced part, in program order: ``(primitive, params, inputs)``
        with ``params`` as text (without per-call shapes) and each input one of ``("x",)``
        (the replacement's input), ``("r", k, o)`` (output ``o`` of the ``k``-th node),
        ``("p", leaves)`` (a value computed from these variable leaves), ``("lit", text)``
        (a literal), ``("c",)`` (a constant without leaves) or ``("a",)`` (another
        activation).
      x: ``(k, operand)``: the replacement's ``x`` as a node of ``nodes``.
      end: ``k`` of the replaced value's node.
      pre, conv_node: the replacement's ``pre`` and ``conv_node`` as nodes of ``nodes``.
      stats: the leaves read that are not trainable (running statistics of a folded
        BatchNorm).
    """

    nodes: tuple
    x: tuple[int, int]
    end: int
    pre: tuple[int, ...] = ()
    conv_node: int | None = None
    stats: tuple[str, ...] = ()

    def leaves(self) -> tuple[str, ...]:
        """Every variable leaf the replaced part reads, in order."""
        out: dict[str, None] = {}
        for _, _, ins in self.nodes:
            for ref in ins:
                if ref[0] == "p":
                    out.update(dict.fromkeys(ref[1]))
        return tuple(out)


@dataclasses.dataclass(frozen=True)
class Replacement:
    """``value(end) = op(value(x), kernel) + bias``.

    Attributes:
      x: ``(node index, operand index)`` of the node that reads ``x`` first.
      end: ``(node index, output index)`` of the replaced value.
      op: ``"dense"`` (contract ``x``'s ``axis``, or its trailing axes from ``flatten_lead``
        on, with ``kernel[in, out]``) or ``"conv"``.
      kernel, bias: leaf paths in the rewritten variables (``bias`` may be None).
      axis: dense: the contracted (channel) axis of ``x``; the result's channels take its place.
      flatten_lead: dense: flatten ``x``'s axes from this one on first (``(N, H, W, C)`` ->
        ``(N, H*W*C)`` with ``flatten_lead=1``).
      conv_node: conv: the node whose convolution parameters (strides, padding, dilation,
        dimension numbers) the replacement uses.
      conv: conv: ``(strides, padding string, dimension numbers)`` when no node has them (a
        fused convolution); the padding is resolved at each call's input shape.
      end_name: the primitive name at ``end`` (checked at each re-trace).
      pre: nodes applied to ``x`` first, in order, with their parameters (channel-agnostic
        pooling/sums over space that the folded channel map commutes with).
      kernel_t: dense: the kernel is stored ``[out, in]`` (the orientation of a ``W @ x``
        layer, e.g. equinox's ``Linear``).
      region: the nodes it replaces (:func:`region_of`), to find them in another call's
        program; None: found by position only.
    """

    x: tuple[int, int]
    end: tuple[int, int]
    op: str
    kernel: str
    bias: str | None
    axis: int | None = None
    flatten_lead: int | None = None
    conv_node: int | None = None
    conv: tuple | None = None
    end_name: str = ""
    pre: tuple[int, ...] = ()
    kernel_t: bool = False
    region: Region | None = None


def x_var(program, rep: Replacement):
    node, operand = rep.x
    return program.nodes[node].ins[operand]


def _params_text(node) -> str:
    items = sorted((k, v) for k, v in node.params.items() if k not in SHAPE_PARAMS)
    return ADDRESS.sub("", repr(items))


def _literal_text(value) -> str:
    a = np.asarray(value)
    return f"{a.dtype}{a.shape}:{a.tobytes().hex() if a.size <= 64 else a.sum()}"


def _producers(program) -> dict:
    return {o: (i, k) for i, node in enumerate(program.nodes) for k, o in enumerate(node.outs)}


def region_of(program, annotations, rep: Replacement, trainable) -> Region:
    """The nodes ``rep`` replaces: those that depend on its input ``x`` and feed its value.

    Args:
      program: the traced program ``rep`` was planned on.
      annotations: the program's value annotations (``graph.analysis.annotations``).
      rep: the replacement.
      trainable: ``leaf path -> bool``; the other leaves read are the region's ``stats``.
    """
    xv = x_var(program, rep)
    ev = program.nodes[rep.end[0]].outs[rep.end[1]]
    below, after = {xv}, set()
    for i, node in enumerate(program.nodes[: rep.end[0] + 1]):
        if any(not isinstance(v, Literal) and v in below for v in node.ins):
            after.add(i)
            below.update(node.outs)
    need, before = {ev}, set()
    for i in range(rep.end[0], -1, -1):
        node = program.nodes[i]
        if any(o in need for o in node.outs):
            before.add(i)
            need.update(v for v in node.ins if not isinstance(v, Literal))
    order = sorted(after & before)
    pos = {i: k for k, i in enumerate(order)}
    producers = _producers(program)
    nodes: list = []
    stats: dict = {}
    for i in order:
        node = program.nodes[i]
        refs: list[tuple] = []
        for v in node.ins:
            if isinstance(v, Literal):
                refs.append(("lit", _literal_text(v.value)))
            elif v == xv:
                refs.append(("x",))
            elif v in producers and producers[v][0] in pos:
                refs.append(("r", pos[producers[v][0]], producers[v][1]))
            else:
                ann = annotations.get(v)
                if isinstance(ann, PVal) and ann.leaves:
                    leaves = tuple(sorted(ann.leaves))
                    stats.update({p: None for p in leaves if not trainable(p)})
                    refs.append(("p", leaves))
                elif isinstance(ann, Act):
                    refs.append(("a",))
                else:
                    refs.append(("c",))
        nodes.append((node.name, _params_text(node), tuple(refs)))
    return Region(
        nodes=tuple(nodes),
        x=(pos[rep.x[0]], rep.x[1]),
        end=pos[rep.end[0]],
        pre=tuple(pos[i] for i in rep.pre),
        conv_node=None if rep.conv_node is None else pos[rep.conv_node],
        stats=tuple(stats),
    )


def _random_values(program, annotations) -> set:
    """Values drawn from a PRNG key (dropout masks), activations excepted."""
    out: set = set()
    for node in program.nodes:
        ins = [v for v in node.ins if not isinstance(v, Literal)]
        if node.name in RANDOM or node.name.startswith("threefry") or any(v in out for v in ins):
            out.update(o for o in node.outs if not isinstance(annotations.get(o), Act))
    return out


def _match(program, annotations, region: Region, end: int, producers, random) -> dict | None:
    """``{region node: program node}`` when node ``end`` computes ``region``'s value, or None."""
    mapping: dict[int, int] = {}
    used: set[int] = set()
    xv: list = []

    def unify(k: int, i: int) -> bool:
        if k in mapping:
            return mapping[k] == i
        if i in used:
            return False
        name, params, refs = region.nodes[k]
        node = program.nodes[i]
        if node.name != name or len(node.ins) != len(refs) or _params_text(node) != params:
            return False
        mapping[k] = i
        used.add(i)
        for ref, v in zip(refs, node.ins, strict=True):
            lit = isinstance(v, Literal)
            ann = None if lit else annotations.get(v)
            if ref[0] == "lit":
                ok = lit and _literal_text(v.value) == ref[1]
            elif ref[0] == "x":
                ok = not lit and (not xv or xv[0] == v)
                if ok and not xv:
                    xv.append(v)
            elif ref[0] == "r":
                ok = not lit and v in producers and producers[v][1] == ref[2]
                ok = ok and unify(ref[1], producers[v][0])
            elif ref[0] == "p":
                ok = isinstance(ann, PVal) and ann.leaves == frozenset(ref[1])
            elif ref[0] == "c":
                ok = lit or (isinstance(ann, PVal) and not ann.leaves and v not in random)
            else:
                ok = isinstance(ann, Act)
            if not ok:
                return False
        return True

    if not unify(region.end, end) or len(mapping) != len(region.nodes):
        return None
    return mapping


def _inner_readers(program, mapping: dict, end_out) -> list[int]:
    """Nodes outside the replaced part that read a value inside it (other than its result)."""
    inside = set(mapping.values())
    values = {o for i in inside for o in program.nodes[i].outs} - {end_out}
    outs = {v for v in program.outvars if not isinstance(v, Literal)}
    bad = [
        i
        for i, node in enumerate(program.nodes)
        if i not in inside and any(not isinstance(v, Literal) and v in values for v in node.ins)
    ]
    return [*bad, *(["an output"] if values & outs else [])]  # type: ignore[list-item]


def live_nodes(program, reps) -> tuple[list[int], set]:
    """``(node indices to evaluate, live variables)`` when ``reps`` replace their values."""
    by_end = {r.end[0]: r for r in reps}
    live = {v for v in program.outvars if not isinstance(v, Literal)}
    order = []
    for i in range(len(program.nodes) - 1, -1, -1):
        node = program.nodes[i]
        if not any(o in live for o in node.outs):
            continue
        order.append(i)
        if i in by_end:
            live.add(x_var(program, by_end[i]))
        else:
            live.update(v for v in node.ins if not isinstance(v, Literal))
    return order[::-1], live


def emit(program, rep: Replacement, x, kernel, bias):
    """The replacement's value, checked against the original value's shape."""
    end_node = program.nodes[rep.end[0]]
    aval = program.avals[end_node.outs[rep.end[1]]]
    for i in rep.pre:
        node = program.nodes[i]
        x = node.primitive.bind(x, **node.params)
    if rep.op == "dense":
        if rep.flatten_lead is not None:
            x = x.reshape(x.shape[: rep.flatten_lead] + (-1,))
            axis = x.ndim - 1
        else:
            axis = rep.axis
        kernel = kernel.T if rep.kernel_t else kernel
        y = jax.lax.dot_general(x, kernel.astype(x.dtype), (((axis,), (0,)), ((), ())))
        y = jnp.moveaxis(y, -1, axis)
        out_axis = axis
    elif rep.conv_node is not None:
        node = program.nodes[rep.conv_node]
        params = dict(node.params, feature_group_count=1, batch_group_count=1)
        y = node.primitive.bind(x, kernel.astype(x.dtype), **params)
        out_axis = params["dimension_numbers"].out_spec[1]
    else:
        assert rep.conv is not None  # a conv replacement without its node carries its settings
        strides, padding, dn = rep.conv
        dnums = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, dn)
        y = jax.lax.conv_general_dilated(
            x, kernel.astype(x.dtype), strides, padding, dimension_numbers=dnums
        )
        out_axis = dnums.out_spec[1]
    if bias is not None:
        shape = [1] * y.ndim
        shape[out_axis] = -1
        y = y + jnp.reshape(bias, shape).astype(y.dtype)
    y = y.astype(aval.dtype)
    if tuple(y.shape) != tuple(aval.shape):
        raise GraphError(
            f"the replacement of {rep.end_name!r} computes shape {tuple(y.shape)} where the "
            f"model has {tuple(aval.shape)}"
        )
    return y


@dataclasses.dataclass(frozen=True)
class ReplacedRunner:
    """Runs a model whose values ``reps`` are replaced (the ``runner`` of a RewriteSpec;
    compared by value, so equal rewrites compare equal).

    Attributes:
      reps: the replacements, by node index of the original program at the traced shapes.
      new_paths: the rewritten variables' leaf paths, in flattening order.
      what: the rewrite's name for error messages (``"collapse"``).
      signature: the primitive names of the program the replacements were planned on. A call
        that traces to another program (``train=True``, ``rngs=``, ``mutable=``) finds each
        replacement by its region (the nodes it stands for, by the parameter leaves they
        read); where that part itself differs (``train=True`` where a BatchNorm was folded
        with ``train=False``, active dropout between fused layers) it raises
        :class:`GraphError` naming the layers instead of replacing the wrong values.
    """

    reps: tuple[Replacement, ...]
    new_paths: tuple[str, ...]
    what: str
    signature: tuple[str, ...] = ()

    def plan(self, spec, call):
        from jaxprune.graph._rewritten_call import trace_call

        key = None if call.key is None else ("replaced", call.key)
        plan = spec.cache.get(key)
        if plan is not None:
            return plan
        try:
            graph = trace_call(spec.model, spec.kind, spec.treedef, spec.avals, call)
        except Exception as e:  # e.g. BatchNorm updating statistics the rewrite removed
            stats = [p for r in self.reps if r.region is not None for p in r.region.stats]
            norms = list(dict.fromkeys(_layer(p, spec.kind) for p in stats))
            folded = f" (it folded the BatchNorm layer(s) {norms})" if norms else ""
            raise GraphError(
                f"the {self.what}d model traces differently at these arguments than when it was "
                f"{self.what}d ({type(e).__name__}: {e}); call it the same way{folded} (e.g. "
                "the same train=...)"
            ) from e
        program = graph.analysis.program
        names = tuple(n.name for n in program.nodes)
        if self.signature and names == self.signature:  # the program it was planned on
            reps = self.reps
        else:
            reps = tuple(self._locate(spec, graph, rep, call) for rep in self.reps)
        order, live = live_nodes(program, reps)
        plan = (graph, order, live, reps)
        spec.cache.put(key, plan)
        return plan

    def _locate(self, spec, graph, rep: Replacement, call) -> Replacement:
        """``rep`` with its node positions in this call's program (found by its region)."""
        program = graph.analysis.program
        if rep.region is None:
            if rep.end[0] >= len(program.nodes) or program.nodes[rep.end[0]].name != rep.end_name:
                raise GraphError(
                    f"the {self.what}d model traces differently at these arguments than when "
                    f"it was {self.what}d; call it the same way (e.g. the same train=...)"
                )
            return rep
        region, ann = rep.region, graph.analysis.annotations
        producers = _producers(program)
        random = _random_values(program, ann)
        name = region.nodes[region.end][0]
        found = []
        for i, node in enumerate(program.nodes):
            if node.name == name:
                mapping = _match(program, ann, region, i, producers, random)
                if mapping is not None:
                    found.append(mapping)
        if len(found) != 1:
            raise self._changed(spec, rep, call, "ambiguous" if found else None)
        mapping = found[0]
        end = (mapping[region.end], rep.end[1])
        readers = _inner_readers(program, mapping, program.nodes[end[0]].outs[end[1]])
        if readers:
            raise self._changed(spec, rep, call, readers)
        return dataclasses.replace(
            rep,
            x=(mapping[region.x[0]], region.x[1]),
            end=end,
            pre=tuple(mapping[k] for k in region.pre),
            conv_node=None if region.conv_node is None else mapping[region.conv_node],
        )

    def _changed(self, spec, rep: Replacement, call, why) -> GraphError:
        """The error for a call that changes the replaced part ``rep`` itself."""
        region = rep.region
        assert region is not None  # a replacement built from a region
        given = [f"{k}={v!r}" for k, v in call.static.items()]
        mode = ", ".join(given + [f"{name}=…" for name, _, _ in call.dynamic]) or "these arguments"
        layers = list(dict.fromkeys(_layer(p, spec.kind) for p in region.leaves()))
        if region.stats:
            norms = list(dict.fromkeys(_layer(p, spec.kind) for p in region.stats))
            keep = (
                "collapse with fold_batchnorm=False to keep them (they then train and update "
                "their statistics), or "
                if self.what == "collapse"
                else ""
            )
            return GraphError(
                f"the {self.what}d model traces differently in this call ({mode}): "
                f"the BatchNorm layer(s) {norms} that {self.what} folded into {layers[0]!r} "
                "use batch statistics here, which a folded layer cannot; "
                f"{keep}call the {self.what}d model in evaluation mode as it was "
                f"{self.what}d (e.g. train=False)"
            )
        detail = (
            "matches more than one part of this call's program"
            if why == "ambiguous"
            else "has a value that this call also reads elsewhere"
            if why
            else "computes differently here (e.g. dropout between these layers is active)"
        )
        return GraphError(
            f"the {self.what}d model traces differently in this call ({mode}): the part that "
            f"{self.what} replaced (layers {layers}) {detail}, so the {self.what}d layer cannot "
            f"stand in for it; call the {self.what}d model as it was {self.what}d (e.g. "
            "train=False)"
        )

    def __call__(self, spec, leaves, args, kwargs):
        from jaxprune.graph._rewritten_call import prepare_call

        call = prepare_call(args, kwargs)
        graph, order, live, reps = self.plan(spec, call)
        program = graph.analysis.program
        new = dict(zip(self.new_paths, leaves, strict=True))
        n = len(spec.paths)
        env = {}
        for v, path in zip(program.invars[:n], spec.paths, strict=True):
            if v in live:
                if path not in new:
                    raise GraphError(f"{self.what}: the rewritten model still reads {path!r}")
                env[v] = new[path]
        env.update(zip(program.invars[n:], call.leaves, strict=True))
        by_end = {r.end[0]: r for r in reps}

        def read(v):
            return v.value if isinstance(v, Literal) else env[v]

        for i in order:
            node = program.nodes[i]
            rep = by_end.get(i)
            if rep is not None:
                bias = None if rep.bias is None else new[rep.bias]
                val = emit(program, rep, read(x_var(program, rep)), new[rep.kernel], bias)
                env[node.outs[rep.end[1]]] = val
                continue
            outs = node.primitive.bind(*[read(v) for v in node.ins], **node.params)
            if not node.primitive.multiple_results:
                outs = (outs,)
            env.update(zip(node.outs, outs, strict=True))
        outs = [read(v) for v in program.outvars]
        return jax.tree.unflatten(graph._out_tree, outs)


def _layer(path: str, kind: str) -> str:
    """The layer of a leaf path: ``params/Dense_0/kernel`` -> ``Dense_0`` (linen drops the
    collection), ``bn/mean`` -> ``bn``."""
    parts = path.split("/")[:-1]
    if kind == "linen" and len(parts) > 1:
        parts = parts[1:]
    return "/".join(parts) or path


def nest(flat: dict[str, Any]):
    """``{"a/b/c": leaf}`` -> nested dicts (empty collections dropped)."""
    out: dict = {}
    for path, leaf in flat.items():
        d = out
        parts = path.split("/")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = leaf
    return out
