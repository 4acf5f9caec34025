"""Fusable layer pairs of a traced program (paper 001): layer -> elementwise -> layer.

A pair ``(first, second)`` is fusable when everything that reads the first layer's output,
up to the second layer, is elementwise (bias, BatchNorm, the nonlinearity: ``relu``, ``gelu``
and friends, possibly several primitives), a flatten (conv -> dense), pooling (conv -> conv,
conv -> dense) or a transpose, nothing in between joins another activation, and the second
layer is the only exit. The fused layer reads the first layer's input ``a0`` and replaces the
second layer's pre-activation ``y`` (its output plus the bias/scale steps and transposes that
follow it).

Axes are followed by *label* from ``a0`` to ``y`` (``"C"`` for the channels, ``a0``'s axis
number for the others), so a ``W @ x`` layer under ``jax.vmap`` (equinox's ``Linear``: the
product puts the channels first and a transpose moves the batch axis back) pairs exactly like
an ``x @ W`` layer: ``y`` is taken where its axes are ``a0``'s, in ``a0``'s order. A pair whose
``y`` never returns to that layout is not fusable (the fused layer computes in ``a0``'s layout).
"""

from __future__ import annotations

import dataclasses

import jax

from jaxprune.graph._inline import Literal
from jaxprune.graph._layout import Act, PVal
from jaxprune.graph._primitives import AFFINE_ARITH, FUSION_PASS, FUSION_POOL

__all__ = ["Pair", "fusable_pairs", "pair_of"]


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
      kernel_t: dense: the first layer's kernel leaf is stored ``[out, in]`` (a ``W @ x``
        layer such as equinox's ``Linear``); the fused kernel is held the same way.
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
    kernel_t: bool = False

    @property
    def dimension_numbers(self) -> tuple[str, str, str]:
        """Conv-conv: the fused convolution's channels-last dimension numbers, one letter per
        spatial axis: ``("NWC", "WIO", "NWC")`` for 1-D, ``("NHWC", "HWIO", "NHWC")`` for 2-D,
        ``("NDHWC", "DHWIO", "NDHWC")`` for 3-D."""
        nd = len(self.kernel_size)
        sp = "DHW"[-nd:] if nd <= 3 else "".join(chr(ord("a") + i) for i in range(nd))
        return f"N{sp}C", f"{sp}IO", f"N{sp}C"


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


def _a0_labels(act: Act) -> tuple:
    return tuple("C" if d == act.axis else d for d in range(len(act.shape)))


def _layer_labels(an, info, labels) -> tuple | None:
    """Axis labels of a layer's output given its input's (None if the layer also mixes axes
    other than the channels)."""
    node = an.program.nodes[info.node]
    out = an.annotations[node.outs[0]]
    if labels is None or not isinstance(out, Act) or out.axis is None:
        return None
    if info.op == "dense":
        (lc, rc), (lb, rb) = node.params["dimension_numbers"]
        operand = next(
            k
            for k, v in enumerate(node.ins)
            if not isinstance(v, Literal) and an.annotations[v] is info.in_act
        )
        ac, ab = (lc, lb) if operand == 0 else (rc, rb)
        if tuple(ac) != (info.in_act.axis,) or ab:
            return None
        free = [labels[i] for i in range(len(labels)) if i not in ac]
        n_ker = len(out.shape) - len(free)
        res = (free + [None] * n_ker) if operand == 0 else ([None] * n_ker + free)
    else:
        dn = node.params["dimension_numbers"]
        res = [None] * len(out.shape)
        res[dn.out_spec[0]] = labels[dn.lhs_spec[0]]
        for a, b in zip(dn.lhs_spec[2:], dn.out_spec[2:], strict=True):
            res[b] = labels[a]
    res[out.axis] = "C"
    return tuple(res)


def _moved_labels(node, labels, in_shape, out_shape) -> tuple | None:
    """Labels after an op on the channel path between the layers (None if they are lost)."""
    if labels is None:
        return None
    if node.name == "transpose":
        return tuple(labels[p] for p in node.params["permutation"])
    if node.name == "reshape":  # a row-major reshape leaves the leading axes it keeps alone
        k = 0
        while k < min(len(in_shape), len(out_shape)) and in_shape[k] == out_shape[k]:
            k += 1
        return tuple(labels[:k]) + (None,) * (len(out_shape) - k)
    if len(in_shape) != len(out_shape):
        return None
    return labels  # elementwise or pooling: the same axes


def pair_of(an, first: int, readers=None) -> tuple[Pair | None, str]:
    """The pair starting at layer ``first``, or ``(None, why not)``."""
    program, ann = an.program, an.annotations
    readers = readers if readers is not None else _readers(program)
    l1 = an.layers[first]
    if l1.op not in ("dense", "conv"):
        return None, f"the first layer is a {l1.op}"
    node1 = program.nodes[l1.node]
    outs = {v for v in program.outvars if not isinstance(v, Literal)}
    x_operand = next(
        k for k, v in enumerate(node1.ins) if not isinstance(v, Literal) and ann[v] is l1.in_act
    )
    a0 = node1.ins[x_operand]
    a0_labels = _a0_labels(l1.in_act)
    region = {node1.outs[0]}
    labels = {node1.outs[0]: _layer_labels(an, l1, a0_labels)}
    layer_at = {info.node: info for info in an.layers}
    # pooling between the layers, per a0 axis label: extra receptive field and stride, both in
    # units of the first layer's output positions
    rf_extra: dict = {}
    jump: dict = {}
    unknown_pool = None
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
        got = {labels[v] for _, v in hit}
        lab = got.pop() if len(got) == 1 else None
        if name in FUSION_POOL:
            dims = zip(node.params["window_dimensions"], node.params["window_strides"], strict=True)
            for d, (w, st) in enumerate(dims):
                if w == 1 and st == 1:
                    continue
                label = None if lab is None else lab[d]
                if not isinstance(label, int) or label == a0_labels[0]:
                    unknown_pool = f"{name} over an axis that is not a spatial axis of the input"
                    continue
                j = jump.get(label, 1)
                rf_extra[label] = rf_extra.get(label, 0) + (w - 1) * j
                jump[label] = j * st
        elif name not in FUSION_PASS and name not in ("reshape", "transpose"):
            return None, f"its output goes through {name!r}, which is not elementwise"
        in_shape = tuple(program.avals[hit[0][1]].shape)
        for o in node.outs:
            labels[o] = _moved_labels(node, lab, in_shape, tuple(program.avals[o].shape))
        region.update(node.outs)
    if region & outs:
        return None, "the first layer's output (or its activation) is a model output"
    if exit_ is None:
        return None, "no layer reads the first layer's output"
    l2 = layer_at[exit_[0]]
    if l2.op not in ("dense", "conv"):
        return None, f"the second layer is a {l2.op}"
    node2 = program.nodes[l2.node]
    flatten = l2.op == "dense" and (l2.in_act.outer > 1 or l2.in_act.inner > 1 or l1.op == "conv")
    if flatten:  # one row per example: the batch axis first, then the channels
        want = (a0_labels[0], "C")
    else:  # one row per position: a0's axes in a0's order, the channels last
        if l1.in_act.axis != len(l1.in_act.shape) - 1:
            return None, "the first layer's input does not hold its channels on the last axis"
        want = a0_labels
    # y: the second layer's output plus the bias/scale steps and transposes after it, taken
    # where its axes are a0's again
    lab = _layer_labels(an, l2, labels[node2.ins[exit_[1]]])
    y, end = node2.outs[0], (l2.node, 0)
    best = (y, end) if lab == want else None
    while len(readers.get(y, ())) == 1 and y not in outs:
        j, k = readers[y][0]
        nxt = program.nodes[j]
        if nxt.name == "transpose":
            lab = _moved_labels(nxt, lab, (), ())
        else:
            other = [v for q, v in enumerate(nxt.ins) if q != k]
            if nxt.name not in AFFINE_ARITH or (nxt.name in ("sub", "div") and k):
                break
            if not all(isinstance(v, Literal) or isinstance(ann[v], PVal) for v in other):
                break
            if len(program.avals[nxt.outs[0]].shape) != len(program.avals[y].shape):
                break
        y, end = nxt.outs[0], (j, 0)
        if lab == want:
            best = (y, end)
    if best is None:
        return None, (
            "the second layer's output is not laid out like the first layer's input "
            f"(its axes {lab}, expected {want})"
        )
    y, end = best
    common = dict(first=first, second=l2.index, a0=a0, x=(l1.node, x_operand), y=y, end=end)
    if l2.op == "dense":
        if flatten and len(program.avals[y].shape) != 2:
            return None, "a flattened dense pair needs a (batch, features) output"
        if not flatten and program.avals[y].shape[:-1] != program.avals[a0].shape[:-1]:
            return None, "the pair changes the number of positions (pooling between dense layers)"
        kernel_t = l1.op == "dense" and (l1.kernel_in_axis, l1.kernel_out_axis) == (1, 0)
        return Pair(kind="dense", flatten=flatten, kernel_t=kernel_t, **common), ""
    if l1.op != "conv":
        return None, "a dense layer followed by a convolution"
    # channels-last convolutions of any number of spatial axes: (N, L, C), (N, H, W, C), ...
    dn1, dn2 = node1.params["dimension_numbers"], node2.params["dimension_numbers"]
    nd = len(program.avals[a0].shape) - 2
    last = (0, nd + 1, *range(1, nd + 1))
    if any(tuple(spec) != last for spec in (dn1.lhs_spec, dn2.lhs_spec, dn1.out_spec)):
        return (
            None,
            "conv-conv fusion needs channels-last convolutions ((N, L, C), (N, H, W, C), ...)",
        )
    if labels[node2.ins[exit_[1]]] != a0_labels:
        return None, "the second convolution reads its input with the axes moved (a transpose)"
    if unknown_pool is not None:
        return None, unknown_pool
    for n in (node1, node2):
        if any(d != 1 for d in (*n.params["lhs_dilation"], *n.params["rhs_dilation"])):
            return None, "a dilated convolution"
    k1 = [program.avals[node1.ins[1]].shape[a] for a in dn1.rhs_spec[2:]]
    k2 = [program.avals[node2.ins[1]].shape[a] for a in dn2.rhs_spec[2:]]
    s1, s2 = node1.params["window_strides"], node2.params["window_strides"]
    ks, strides = [], []
    for a in range(nd):  # spatial axis a is a0's axis a + 1
        extra, j = rf_extra.get(a + 1, 0), jump.get(a + 1, 1)
        ks.append(int(k1[a] + extra * s1[a] + (k2[a] - 1) * s1[a] * j))
        strides.append(int(s1[a] * j * s2[a]))
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
