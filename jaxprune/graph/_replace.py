"""Evaluate a traced program with runs of nodes replaced by one linear op (collapse, fusion).

A :class:`Replacement` says: the value produced at ``end`` (a node's output) is computed
instead as ``op(x, kernel) + bias`` from the value ``x`` (an operand of an earlier node), with
a new kernel and bias from the rewritten variables. Everything the original computed only for
that value (the skipped layers, their biases, BatchNorm statistics) is dead and not evaluated;
its leaves are absent from the rewritten variables. :class:`ReplacedRunner` re-traces the
original model at each call's shapes (like pruning, see :mod:`._rewritten`), so the rewritten
model runs at any batch size, under ``jit``/``vmap``/``grad`` and through ``jax.export``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune.graph._errors import GraphError
from jaxprune.graph._inline import Literal

__all__ = ["ReplacedRunner", "Replacement", "live_nodes", "emit", "x_var"]


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


def x_var(program, rep: Replacement):
    node, operand = rep.x
    return program.nodes[node].ins[operand]


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
      signature: the primitive names of the program the replacements were planned on; a call
        that traces to a different program (``train=True`` where BatchNorm was folded with
        ``train=False``) raises instead of replacing the wrong values.
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
            raise GraphError(
                f"the {self.what}d model traces differently at these arguments than when it was "
                f"{self.what}d ({type(e).__name__}: {e}); call it the same way (e.g. the same "
                "train=...)"
            ) from e
        program = graph.analysis.program
        names = tuple(n.name for n in program.nodes)
        for rep in self.reps:
            i = rep.end[0]
            same = names == self.signature if self.signature else True
            if not same or i >= len(program.nodes) or program.nodes[i].name != rep.end_name:
                raise GraphError(
                    f"the {self.what}d model traces differently at these arguments than when it "
                    f"was {self.what}d; call it the same way (e.g. the same train=...)"
                )
        order, live = live_nodes(program, self.reps)
        plan = (graph, order, live)
        spec.cache.put(key, plan)
        return plan

    def __call__(self, spec, leaves, args, kwargs):
        from jaxprune.graph._rewritten_call import prepare_call

        call = prepare_call(args, kwargs)
        graph, order, live = self.plan(spec, call)
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
        by_end = {r.end[0]: r for r in self.reps}

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
