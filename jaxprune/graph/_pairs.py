"""Fusable layer pairs of a traced program (paper 001): layer -> elementwise -> layer.

A pair ``(first, second)`` is fusable when everything that reads the first layer's output,
up to the second layer, is elementwise (bias, BatchNorm, the nonlinearity: ``relu``, ``gelu``
and friends, possibly several primitives), a flatten (conv -> dense) or pooling (conv -> conv,
conv -> dense), nothing in between joins another activation, and the second layer is the only
exit. The fused layer reads the first layer's input ``a0`` and replaces the second layer's
pre-activation ``y`` (its output plus the bias/scale steps that follow it).
"""

from __future__ import annotations

import dataclasses

import jax

from jaxprune.graph._analyze import _BINARY, _LINEAR_UNARY, _NONLINEAR_UNARY
from jaxprune.graph._inline import Literal
from jaxprune.graph._layout import Act, PVal

__all__ = ["Pair", "fusable_pairs", "pair_of"]

_ELEMENTWISE = _LINEAR_UNARY | _NONLINEAR_UNARY | _BINARY | {"custom_jvp_call", "stop_gradient"}
_POOL = {"reduce_window_max", "reduce_window_sum"}


@dataclasses.dataclass(frozen=True)
class Pair:
    """A fusable pair, by layer index, with what fusion needs.

    Attributes:
      first, second: indices into ``analysis.layers``.
      kind: ``"dense"`` (dense-dense, conv-dense: a dense layer on ``a0``, flattened per
        example when ``flatten``) or ``"conv"`` (conv-conv).
      a0: the program variable read by the first layer; ``x``: ``(node, operand)`` reading it.
      y: the program variable of the second layer's pre-activation; ``end``: its
        ``(node, output)``.
      flatten: dense on ``a0`` flattened after its batch axis.
      kernel_size, strides: conv-conv: the fused kernel ``k~`` (the receptive field) and stride
        ``s~ = s1 r1 s2`` per spatial axis.
      padding: conv-conv: ``"SAME"`` or ``"VALID"`` (both layers'), or None if they differ.
    """

    first: int
    second: int
    kind: str
    a0: int
    x: tuple[int, int]
    y: int
    end: tuple[int, int]
    flatten: bool = False
    kernel_size: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    padding: str | None = None


def _readers(program):
    out: dict = {}
    for i, node in enumerate(program.nodes):
        for k, v in enumerate(node.ins):
            if not isinstance(v, Literal):
                out.setdefault(v, []).append((i, k))
    return out


def _padding_type(node, in_shape, k_shape):
    pads = [tuple(p) for p in node.params["padding"]]
    same = jax.lax.padtype_to_pads(in_shape, k_shape, node.params["window_strides"], "SAME")
    same = [tuple(p) for p in same] == pads
    if all(p == (0, 0) for p in pads):
        return "ANY" if same else "VALID"
    return "SAME" if same else None


def pair_of(an, first: int, readers=None) -> tuple[Pair | None, str]:
    """The pair starting at layer ``first``, or ``(None, why not)``."""
    program, ann = an.program, an.annotations
    readers = readers if readers is not None else _readers(program)
    l1 = an.layers[first]
    if l1.op not in ("dense", "conv"):
        return None, f"the first layer is a {l1.op}"
    node1 = program.nodes[l1.node]
    outs = {v for v in program.outvars if not isinstance(v, Literal)}
    region = {node1.outs[0]}
    layer_at = {info.node: info for info in an.layers}
    rf_extra, jump = 0, 1
    exit_ = None
    for i in range(l1.node + 1, len(program.nodes)):
        node = program.nodes[i]
        ins_act = [
            (k, v)
            for k, v in enumerate(node.ins)
            if not isinstance(v, Literal) and isinstance(ann[v], Act)
        ]
        hit = [(k, v) for k, v in ins_act if v in region]
        if not hit:
            continue
        if i in layer_at:
            if exit_ is not None or len(hit) != 1:
                return None, "the first layer's output reaches more than one layer"
            exit_ = (i, hit[0][0])
            continue
        if len(hit) != len(ins_act):
            return None, f"its output is joined with another activation ({node.name})"
        name = node.name
        if name in _POOL:
            win = [w for w in node.params["window_dimensions"] if w != 1]
            st = [s for s in node.params["window_strides"] if s != 1] or [1]
            rf_extra += (max(win, default=1) - 1) * jump
            jump *= st[0]
        elif name not in _ELEMENTWISE and name != "reshape":
            return None, f"its output goes through {name!r}, which is not elementwise"
        region.update(node.outs)
    if region & outs:
        return None, "the first layer's output (or its activation) is a model output"
    if exit_ is None:
        return None, "no layer reads the first layer's output"
    l2 = layer_at[exit_[0]]
    if l2.op not in ("dense", "conv"):
        return None, f"the second layer is a {l2.op}"
    node2 = program.nodes[l2.node]
    # y: the second layer's output plus the bias/scale steps after it
    y, end = node2.outs[0], (l2.node, 0)
    while len(readers.get(y, ())) == 1 and y not in outs:
        j, k = readers[y][0]
        nxt = program.nodes[j]
        other = [v for q, v in enumerate(nxt.ins) if q != k]
        if nxt.name not in ("add", "sub", "mul", "div") or (nxt.name in ("sub", "div") and k):
            break
        if not all(isinstance(v, Literal) or isinstance(ann[v], PVal) for v in other):
            break
        y, end = nxt.outs[0], (j, 0)
    x_operand = next(k for k, v in enumerate(node1.ins) if isinstance(ann.get(v), Act))
    a0 = node1.ins[x_operand]
    common = dict(first=first, second=l2.index, a0=a0, x=(l1.node, x_operand), y=y, end=end)
    if l2.op == "dense":
        (lc, _), (lb, _) = node2.params["dimension_numbers"]
        act2 = l2.in_act
        if lb or tuple(lc) != (len(act2.shape) - 1,) or act2.axis != len(act2.shape) - 1:
            return None, "the second dense layer does not contract the channel axis"
        flatten = act2.outer > 1 or act2.inner > 1 or l1.op == "conv"
        if flatten and len(program.avals[y].shape) != 2:
            return None, "a flattened dense pair needs a (batch, features) output"
        return Pair(kind="dense", flatten=flatten, **common), ""
    if l1.op != "conv":
        return None, "a dense layer followed by a convolution"
    dn1, dn2 = node1.params["dimension_numbers"], node2.params["dimension_numbers"]
    if tuple(dn1.lhs_spec) != (0, 3, 1, 2) or tuple(dn2.lhs_spec) != (0, 3, 1, 2):
        return None, "conv-conv fusion needs channels-last (NHWC) convolutions"
    for nd in (node1, node2):
        if any(d != 1 for d in (*nd.params["lhs_dilation"], *nd.params["rhs_dilation"])):
            return None, "a dilated convolution"
    k1 = [program.avals[node1.ins[1]].shape[a] for a in dn1.rhs_spec[2:]]
    k2 = [program.avals[node2.ins[1]].shape[a] for a in dn2.rhs_spec[2:]]
    s1, s2 = node1.params["window_strides"], node2.params["window_strides"]
    ks, strides = [], []
    for a in range(len(k1)):
        rf = k1[a] + rf_extra * s1[a] + (k2[a] - 1) * s1[a] * jump
        ks.append(int(rf))
        strides.append(int(s1[a] * jump * s2[a]))
    in1 = program.avals[a0].shape[1:-1]
    in2 = program.avals[node2.ins[0]].shape[1:-1]
    p1 = _padding_type(node1, in1, k1)
    p2 = _padding_type(node2, in2, k2)
    pad = p1 if p2 in (p1, "ANY") else (p2 if p1 == "ANY" else None)
    pad = "SAME" if pad == "ANY" else pad
    return Pair(
        kind="conv", kernel_size=tuple(ks), strides=tuple(strides), padding=pad, **common
    ), ""


def fusable_pairs(an) -> list[Pair]:
    """Every fusable pair of the program, in forward order."""
    readers = _readers(an.program)
    out = []
    for info in an.layers:
        pair, _ = pair_of(an, info.index, readers)
        if pair is not None:
            out.append(pair)
    return out
