"""Maximal affine runs of a traced program and their folded kernels (for :func:`collapse`).

A *path* follows an activation from one node to its only reader through steps that keep it an
affine function of the path's input ``x``:

* ``ew``: an elementwise op with one activation operand and per-channel (or scalar) parameters
  or constants: ``add``/``sub``/``mul``/``div``/``neg``/casts (biases, BatchNorm with running
  statistics, scales);
* ``pw``: a pointwise layer: a dense layer over the channel axis, a 1x1 convolution with stride
  1 and no padding;
* ``dom``: the spatial layer a folded run may contain: a kxk convolution (or several that
  compose exactly), or a dense layer
  reading a flattened ``(N, H*W*C)`` value (with the ``flatten`` reshape before it);
* ``spatial``: sum pooling (``reduce_window_sum``, as in average pooling) or a sum over
  spatial axes (``jnp.mean``) before the spatial layer: it commutes with channel maps, so the
  folded op re-applies it to ``x`` first (a bias is multiplied by the window size).

The folded map is computed exactly, in the order of the steps: before the spatial layer it is a
channel matrix ``A`` and vector ``a`` (``v -> v A + a``), the spatial layer's kernel absorbs
``A`` on its input axis, and later steps act on its output axis. A bias before a zero-padded
(or input-dilated) convolution is not exact at the borders (the padding is zeros, not the
bias), so the run is cut there, and likewise before zero-padded pooling, and so is pooling
after the spatial layer. Two kxk convolutions compose into one with a larger kernel when that
is exact (see :func:`_composable`); other second spatial layers cut the run.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune.graph.extend import (
    AFFINE_ARITH,
    AFFINE_ELEMENTWISE,
    CHANNEL_MOVES,
    PER_CHANNEL_PASS,
    Act,
    Literal,
    PVal,
    Replacement,
)

_HI = jax.lax.Precision.HIGHEST


@dataclasses.dataclass
class Step:
    node: int
    kind: str  # "ew", "pw", "dom", "flatten"
    operand: int  # the activation operand


def _acts(node, ann):
    return [
        k for k, v in enumerate(node.ins) if not isinstance(v, Literal) and isinstance(ann[v], Act)
    ]


def _value(v, env):
    return jnp.asarray(v.value) if isinstance(v, Literal) else env[v]


def _per_channel(pv, act: Act):
    """``pv`` as a per-channel vector (or scalar) along ``act``'s axis, or None."""
    pv = jnp.asarray(pv)
    if pv.ndim == 0:
        return pv
    if pv.ndim != len(act.shape):
        return None
    idx = tuple(slice(None) if k == act.axis else 0 for k in range(pv.ndim))
    c = pv[idx]
    if not isinstance(pv, jax.core.Tracer):
        shape = [1] * pv.ndim
        shape[act.axis] = -1  # type: ignore[index]  # a channel layout has an axis
        if not np.array_equal(np.broadcast_to(np.reshape(c, shape), pv.shape), np.asarray(pv)):
            return None
    return c if c.shape[0] > 1 else c.reshape(())


def _channel_source(program, producers, v, width: int) -> bool:
    """Whether constant/parameter operand ``v`` is per-channel (or scalar) by construction:
    following broadcasts, reshapes and casts back, it comes from a value with at most
    ``width`` entries (a ``(C,)`` bias or ``(1, 1, 1, C)`` statistics, not a ``(T, C)``
    positional table). Checked structurally so that it holds under ``vmap``/``jit``."""
    if isinstance(v, Literal):
        return int(np.size(v.value)) in (1, width)
    while v in producers and program.nodes[producers[v]].name in PER_CHANNEL_PASS:
        nxt = program.nodes[producers[v]].ins[0]
        if isinstance(nxt, Literal):
            return int(np.size(nxt.value)) in (1, width)
        v = nxt
    return int(np.prod(program.avals[v].shape)) in (1, width)


def classify(i, node, an, layer_at, env, producers=None):
    """The :class:`Step` node ``i`` would be on a path, or None."""
    ann = an.annotations
    acts = _acts(node, ann)
    if len(acts) != 1:
        return None
    k = acts[0]
    act = ann[node.ins[k]]
    out = ann.get(node.outs[0]) if len(node.outs) == 1 else None
    if act.axis is None or not isinstance(out, Act):
        return None
    name = node.name
    if i in layer_at:
        info = layer_at[i]
        if info.op == "dense":
            (lc, rc), (lb, _) = node.params["dimension_numbers"]
            nd = len(act.shape)
            if lb or act.inner != 1 or len(ann[node.ins[1 - k]].shape) != 2:
                return None
            act_c, ker_c = (lc, rc) if k == 0 else (rc, lc)
            if tuple(act_c) != (act.axis,) or len(ker_c) != 1:
                return None
            if k == 0 and act.axis == nd - 1 and tuple(rc) == (0,):
                return Step(i, "pw" if act.outer == 1 else "dom", k)
            # the kernel on the left (``W @ x``, equinox) or contracted on its last axis
            return Step(i, "pw", k) if act.outer == 1 else None
        if info.op != "conv" or act.outer != 1 or act.inner != 1:
            return None
        p = node.params
        spatial = [node.ins[1]]
        ks = np.asarray(ann[spatial[0]].shape)[list(p["dimension_numbers"].rhs_spec[2:])]
        one = (
            all(s == 1 for s in ks)
            and all(s == 1 for s in p["window_strides"])
            and all(tuple(q) == (0, 0) for q in p["padding"])
            and all(d == 1 for d in p["lhs_dilation"])
        )
        return Step(i, "pw" if one else "dom", k)
    if name in ("reduce_window_sum", "reduce_sum"):  # sum pooling / global sums over space
        if act.outer != 1 or act.inner != 1:
            return None
        if name == "reduce_sum" and act.axis in node.params["axes"]:
            return None
        return Step(i, "spatial", k)
    if name == "transpose":  # moves axes; the run's end must restore x's layout (fold)
        return Step(i, "ew", k)
    if name == "reshape":
        if act.outer != 1 or act.inner != 1:
            return None
        if act.axis == len(act.shape) - 1 and out.axis == len(out.shape) - 1 and out.inner == 1:
            return Step(i, "flatten", k) if out.outer > 1 else None
        return None
    if name not in AFFINE_ELEMENTWISE:  # linear in the one activation operand (checked below)
        return None
    if name == "convert_element_type" and not jnp.issubdtype(
        node.params["new_dtype"], jnp.floating
    ):
        return None
    if name in AFFINE_ARITH:
        other = node.ins[1 - k]
        if not isinstance(other, Literal) and not isinstance(ann[other], PVal):
            return None
        if name == "div" and k != 0:
            return None
        if producers is not None and not _channel_source(
            an.program, producers, other, act.shape[act.axis]
        ):
            return None
        if _per_channel(_value(other, env), act) is None:
            return None
    return Step(i, "ew", k)


def paths(program, an, layer_at, env) -> list[list[Step]]:
    """Maximal paths: each value inside a path is read by its next step only."""
    readers: dict = {}
    for node in program.nodes:
        for v in node.ins:
            if not isinstance(v, Literal):
                readers[v] = readers.get(v, 0) + 1
    outs = {v for v in program.outvars if not isinstance(v, Literal)}
    producers = {o: i for i, node in enumerate(program.nodes) for o in node.outs}
    open_: dict = {}
    found: list[list[Step]] = []
    for i, node in enumerate(program.nodes):
        step = classify(i, node, an, layer_at, env, producers)
        if step is None:
            continue
        u = node.ins[step.operand]
        path = open_.pop(u, None)
        if path is None or readers.get(u, 0) != 1 or u in outs:
            path = []
            found.append(path)
        path.append(step)
        open_[node.outs[0]] = path
    return found


@dataclasses.dataclass
class Fold:
    """A folded segment: the replacement plus the kernel and bias values."""

    rep: Replacement
    kernel: jax.Array
    bias: jax.Array | None
    layers: tuple[int, ...]
    leaves: frozenset = frozenset()


def _apply_ew(node, step, env, act, A, a, axis=None):
    """Applies an elementwise step to the map ``(A, a)`` (channels on ``A``'s ``axis``)."""
    name = node.name
    if name in CHANNEL_MOVES:
        return A, a
    width = A.shape[-1 if axis is None else axis]

    def scale(M, c):
        if axis is None or jnp.ndim(c) == 0:
            return M * c
        shape = [1] * M.ndim
        shape[axis] = -1
        return M * jnp.reshape(c, shape)

    if name == "neg":
        return -A, None if a is None else -a
    c = _per_channel(_value(node.ins[1 - step.operand], env), act)
    zero = jnp.zeros((width,), A.dtype)
    if name == "add":
        return A, (zero if a is None else a) + c
    if name == "sub":
        if step.operand == 0:
            return A, (zero if a is None else a) - c
        return -A, c - (zero if a is None else a)
    if name == "mul":
        return scale(A, c), None if a is None else a * c
    return scale(A, 1 / c), None if a is None else a / c  # div


def _kernel_io(node, env, operand: int = 0):
    """``(kernel value, in axis, out axis)`` of a layer node whose activation is ``operand``."""
    if node.name == "dot_general":
        k = _value(node.ins[1 - operand], env)
        (lc, rc), _ = node.params["dimension_numbers"]
        ia = int((rc if operand == 0 else lc)[0])
        return k, ia, 1 - ia
    k = _value(node.ins[1], env)
    rhs = node.params["dimension_numbers"].rhs_spec
    return k, rhs[1], rhs[0]


def fold(program, an, layer_at, env, path: list[Step]) -> list[Fold]:
    """Cuts ``path`` into exactly foldable segments and folds each (see the module doc)."""
    ann = an.annotations
    out: list[Fold] = []
    segs, start = [], 0
    seen_dom, biased, seen_dom_node = False, False, None
    for j, st in enumerate(path):
        node = program.nodes[st.node]
        if st.kind == "flatten":
            nxt = path[j + 1] if j + 1 < len(path) else None
            if nxt is None or nxt.kind != "dom" or program.nodes[nxt.node].name != "dot_general":
                segs.append((start, j))  # a flatten not read by a dense layer cuts the run
                start, seen_dom, biased = j + 1, False, False
                continue
        if st.kind == "spatial":
            padded = node.name == "reduce_window_sum" and any(
                tuple(q) != (0, 0) for q in node.params["padding"]
            )
            if seen_dom or (biased and padded):  # pooling after the spatial layer, or a bias
                segs.append((start, j))  # through zero padding: cut the run before it
                start, seen_dom, biased = j, False, False
            continue
        first_of_dom = st.kind == "dom" and not (j > 0 and path[j - 1].kind == "flatten")
        if st.kind == "flatten" or first_of_dom:
            exact = True
            dom = path[j + 1] if st.kind == "flatten" else st
            dn = program.nodes[dom.node]
            if dn.name == "conv_general_dilated":
                exact = all(tuple(q) == (0, 0) for q in dn.params["padding"]) and all(
                    d == 1 for d in dn.params["lhs_dilation"]
                )
            composes = (
                seen_dom
                and st.kind == "dom"
                and _composable(program.nodes[seen_dom_node], dn)
                and not any(p.kind == "flatten" for p in path[start:j])
            )
            if (seen_dom and not composes) or (biased and not exact):
                segs.append((start, j))
                start, biased = j, False
            seen_dom, seen_dom_node = True, dom.node
        if st.kind == "ew" and node.name in ("add", "sub"):
            biased = True
    segs.append((start, len(path)))
    sizes = {p: int(np.prod(program.avals[v].shape)) for v, p in an.leaf_of_var.items()}
    for s, e in segs:
        out.extend(_smallest(program, ann, layer_at, env, path[s:e], sizes))
    return out


def _leaves(program, ann, steps) -> frozenset:
    """The parameter leaves a run of steps reads (kernels, biases, BatchNorm entries)."""
    leaves: set = set()
    for s in steps:
        for k, v in enumerate(program.nodes[s.node].ins):
            if k != s.operand and not isinstance(v, Literal) and isinstance(ann[v], PVal):
                leaves |= ann[v].leaves
    return frozenset(leaves)


def _smallest(program, ann, layer_at, env, steps, sizes) -> list[Fold]:
    """Folds of consecutive pieces of ``steps`` (cut before layers) with the fewest parameters.

    Folding a bottleneck (``4 -> 1 -> 3``) would grow the model (``4 x 3`` against ``4 + 3``),
    so each run is cut, before some of its layers, into the pieces whose folds hold the fewest
    parameters in all (ties: fewer pieces, i.e. fewer layers); a piece that does not fold keeps
    its own parameters.
    """
    starts = [j for j, s in enumerate(steps) if s.node in layer_at]
    if len(starts) < 2:
        f = _fold_segment(program, ann, layer_at, env, steps)
        return [] if f is None else [f]
    bounds = [0] + starts[1:] + [len(steps)]
    m = len(bounds) - 1
    memo: dict = {}

    def piece(i, k):
        if (i, k) not in memo:
            sub = steps[bounds[i] : bounds[k]]
            f = _fold_segment(program, ann, layer_at, env, sub)
            if f is None:
                cost = sum(sizes.get(leaf, 0) for leaf in _leaves(program, ann, sub))
            else:
                cost = int(np.size(f.kernel)) + (0 if f.bias is None else int(np.size(f.bias)))
            memo[(i, k)] = (cost, f)
        return memo[(i, k)]

    best: list = [((0, 0), [])] + [None] * m
    for k in range(1, m + 1):
        for i in range(k):
            (cost, n), folds = best[i]
            c, f = piece(i, k)
            cand = ((cost + c, n + 1), folds + ([] if f is None else [f]))
            if best[k] is None or cand[0] < best[k][0]:
                best[k] = cand
    return best[m][1]


def _fold_segment(program, ann, layer_at, env, steps: list[Step]):
    if not steps:
        return None
    layers = tuple(layer_at[s.node].index for s in steps if s.node in layer_at)
    leaves = _leaves(program, ann, steps)
    if not layers or (len(layers) < 2 and len(leaves) <= 2):
        return None
    if not any(s.kind in ("spatial", "flatten", "dom") for s in steps):
        n = _same_layout_prefix(program, ann, steps)
        if n < len(steps):
            return _fold_segment(program, ann, layer_at, env, steps[:n])
    first = program.nodes[steps[0].node]
    x_act = ann[first.ins[steps[0].operand]]
    m = x_act.shape[x_act.axis]
    A = jnp.eye(m, dtype=jnp.float32)
    a = None
    K = oax = None  # after the spatial layer: its kernel with the folded input, out axis
    flatten_lead = dom_node = None
    pre: list[int] = []
    for s in steps:
        node = program.nodes[s.node]
        act = ann[node.ins[s.operand]]
        if s.kind == "flatten":
            flatten_lead = len(ann[node.outs[0]].shape) - 1
            continue
        if s.kind == "spatial":  # commutes with the channel map; re-applied to x first
            pre.append(s.node)
            if a is not None:
                shape = ann[node.ins[s.operand]].shape
                if node.name == "reduce_sum":
                    n = int(np.prod([shape[q] for q in node.params["axes"]]))
                else:
                    n = int(np.prod(node.params["window_dimensions"]))
                a = a * n
            continue
        if s.kind == "ew":
            if K is None:
                A, a = _apply_ew(node, s, env, act, A, a)
            else:
                K, b = _apply_ew(node, s, env, act, K, a, axis=oax)
                a = b
            continue
        kv, ia, oa = _kernel_io(node, env, s.operand)
        kv = kv.astype(jnp.float32)
        if s.kind == "pw":
            W = jnp.moveaxis(kv, (ia, oa), (0, 1)).reshape(kv.shape[ia], kv.shape[oa])
            if K is None:
                A = jnp.matmul(A, W, precision=_HI)
            else:
                K = jnp.moveaxis(jnp.tensordot(K, W, ((oax,), (0,)), precision=_HI), -1, oax)  # type: ignore[arg-type]  # set with K
            a = None if a is None else jnp.matmul(a, W, precision=_HI)
            continue
        if K is not None:  # a second convolution: kxk -> kxk composed (see _composable)
            K, a, oax = _compose(program.nodes[dom_node], K, a, node, kv)
            dom_node = s.node
            continue
        dom_node = s.node
        if node.name == "dot_general":  # dense on a flattened (N, P*M) value
            p = kv.shape[0] // A.shape[1]
            k3 = kv.reshape(p, A.shape[1], kv.shape[1])
            K = jnp.einsum("im,pmc->pic", A, k3, precision=_HI).reshape(p * A.shape[0], -1)
            a = None if a is None else jnp.einsum("m,pmc->c", a, k3, precision=_HI)
            oax = 1
        else:
            K = jnp.moveaxis(jnp.tensordot(A, kv, ((1,), (ia,)), precision=_HI), 0, ia)
            if a is not None:
                t = jnp.moveaxis(kv, (oa, ia), (0, 1))
                a = jnp.einsum("m,om...->o", a, t, precision=_HI)
            oax = oa
    end = steps[-1].node
    first_layer = an_layer = layer_at[steps[[s.node in layer_at for s in steps].index(True)].node]
    kdtype = _value(program.nodes[first_layer.node].ins[1], env).dtype
    kernel_path = an_layer.kernel
    bias_path = (kernel_path.rsplit("/", 1)[0] + "/bias") if "/" in kernel_path else None
    if bias_path is None:
        bias_path = kernel_path + "_bias"
    common = dict(
        pre=tuple(pre),
        x=(steps[0].node, steps[0].operand),
        end=(end, 0),
        kernel=kernel_path,
        bias=None if a is None else bias_path,
        end_name=program.nodes[end].name,
    )
    if K is not None:
        if program.nodes[dom_node].name == "dot_general":
            rep = Replacement(op="dense", axis=x_act.axis, flatten_lead=flatten_lead, **common)
        else:
            rep = Replacement(op="conv", conv_node=dom_node, **common)
        kernel = K
    elif program.nodes[first_layer.node].name == "conv_general_dilated" and not any(
        program.nodes[i].name == "reduce_sum" for i in pre
    ):  # a 1x1 conv run stays a 1x1 conv (unless a global sum removed the spatial axes)
        fl = program.nodes[first_layer.node]
        rhs = fl.params["dimension_numbers"].rhs_spec
        nd = len(rhs)
        kernel = jnp.moveaxis(A.reshape(A.shape + (1,) * (nd - 2)), (0, 1), (rhs[1], rhs[0]))
        rep = Replacement(op="conv", conv_node=first_layer.node, **common)
    else:
        fl = program.nodes[first_layer.node]
        k0 = next(s.operand for s in steps if s.node == first_layer.node)
        transposed = fl.name == "dot_general" and _kernel_io(fl, env, k0)[1] == 1
        rep = Replacement(
            op="dense", axis=ann[program.nodes[end].outs[0]].axis, kernel_t=transposed, **common
        )
        kernel = A.T if transposed else A  # in the first layer's own orientation
    bias = None if a is None else a.astype(kdtype)
    return Fold(rep, kernel.astype(kdtype), bias, layers, leaves)


def _same_layout_prefix(program, ann, steps: list[Step]) -> int:
    """The longest prefix of a run of pointwise steps whose result has the layout of its
    input ``x`` (the same axes in the same order): transposes and ``W @ x`` dense layers
    (channels first) move axes, and the replacement computes its value in ``x``'s layout."""
    first = program.nodes[steps[0].node]
    x = ann[first.ins[steps[0].operand]]
    start = tuple("C" if d == x.axis else d for d in range(len(x.shape)))
    labels, best = start, 0
    for j, s in enumerate(steps):
        node = program.nodes[s.node]
        act = ann[node.ins[s.operand]]
        if node.name == "transpose":
            labels = tuple(labels[p] for p in node.params["permutation"])
        elif node.name == "dot_general":
            free = tuple(lab for d, lab in enumerate(labels) if d != act.axis)
            labels = free + ("C",) if s.operand == 0 else ("C",) + free
        elif node.name == "conv_general_dilated":
            dn = node.params["dimension_numbers"]
            out: list = [None] * len(labels)
            out[dn.out_spec[0]], out[dn.out_spec[1]] = labels[dn.lhs_spec[0]], "C"
            for a, b in zip(dn.lhs_spec[2:], dn.out_spec[2:], strict=True):
                out[b] = labels[a]
            labels = tuple(out)
        elif len(ann[node.outs[0]].shape) != len(labels):
            return best
        if labels == start:
            best = j + 1
    return best


def _unpadded(p) -> bool:
    return (
        all(tuple(q) == (0, 0) for q in p["padding"])
        and all(d == 1 for d in p["lhs_dilation"])
        and all(d == 1 for d in p["rhs_dilation"])
        and p["feature_group_count"] == 1
        and p["batch_group_count"] == 1
    )


def _composable(first, second) -> bool:
    """Whether conv ``second`` applied to conv ``first``'s output is one convolution exactly.

    ``y[q] = sum_b sum_a x[s*q + b + a] K1[a] K2[b]`` is a convolution of ``x`` with kernel
    ``K[u] = sum_{a+b=u} K1[a] K2[b]`` and ``second``'s stride ``s`` when ``first`` has stride
    1 and neither pads nor dilates (a zero-padded border of ``first``'s output is not
    ``first`` applied to padding), with ungrouped channels and the same layouts.
    """
    if first.name != "conv_general_dilated" or second.name != "conv_general_dilated":
        return False
    p1, p2 = first.params, second.params
    return (
        _unpadded(p1)
        and _unpadded(p2)
        and all(st == 1 for st in p1["window_strides"])
        and p1["dimension_numbers"] == p2["dimension_numbers"]
    )


def _compose(first, K, a, second, kv):
    """``(kernel, bias, out axis)`` of conv ``second`` after conv ``first`` (kernel ``K``,
    bias ``a`` on its output channels, both in ``first``'s kernel layout)."""
    r1 = first.params["dimension_numbers"].rhs_spec
    r2 = second.params["dimension_numbers"].rhs_spec
    k1 = jnp.moveaxis(K, tuple(r1[2:]) + (r1[1], r1[0]), tuple(range(K.ndim)))  # (..., i, m)
    k2 = jnp.moveaxis(kv, tuple(r2[2:]) + (r2[1], r2[0]), tuple(range(kv.ndim)))  # (..., m, o)
    nsp = K.ndim - 2
    shape = tuple(p + q - 1 for p, q in zip(k1.shape[:nsp], k2.shape[:nsp], strict=True))
    out = jnp.zeros(shape + (k1.shape[-2], k2.shape[-1]), jnp.float32)
    for b in np.ndindex(*k2.shape[:nsp]):
        window = tuple(slice(o, o + n) for o, n in zip(b, k1.shape[:nsp], strict=True))
        term = jnp.tensordot(k1, k2[b], ((nsp + 1,), (0,)), precision=_HI)
        out = out.at[window].add(term)
    bias = None if a is None else jnp.einsum("m,...mo->o", a, k2, precision=_HI)
    kernel = jnp.moveaxis(out, tuple(range(out.ndim)), tuple(r2[2:]) + (r2[1], r2[0]))
    return kernel, bias, r2[0]
