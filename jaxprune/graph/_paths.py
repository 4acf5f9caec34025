"""Channel-level data-flow DAG recorded during the dataflow, for path counting (paper 004).

Each activation with a channel axis gets a :class:`PathNode`: a vector of channels, each of
which is a vertex of the network's computation graph at channel granularity. Nodes:

* ``input`` (a model input) and ``zero`` (zero-padded channels: no path reaches them);
* ``layer``: a dense or conv layer, every output channel summing every input channel ``mult``
  times (``mult`` = kernel entries per channel pair, times the flatten tiling); a grouped
  conv (``groups`` > 1) sums only the input channels of its group;
* ``chan``: a depthwise conv, channel ``c`` from channel ``c`` (``mult`` = its window);
* ``sum``: an elementwise join of several channel vectors (residual adds);
* ``site``: a nonlinearity applied channel-wise; ``segs`` locates each channel's unit;
* ``concat`` / ``slice``: channel concatenation and slicing;
* ``scale``: a product with per-channel parameters (a norm's scale, a PReLU's slope).

Norms (a product with a channel reduction), pooling, scalings and reshapes keep the channel
vector. One activation function
lowered to several primitives (``x * sigmoid(x)``, PReLU's ``where(x >= 0, x, a * x)``) is one
site: a nonlinear op drops every operand that is a site or a scaling computed from another
operand; the site keeps the parameter leaves of the scalings it drops (a PReLU's slope), so an
activity mask can name the activation's own parameters.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxprune.graph._inline import Literal
from jaxprune.graph._layout import Act, PVal
from jaxprune.graph._primitives import POOL

__all__ = ["PathNode", "record_paths"]


@dataclasses.dataclass(frozen=True)
class PathNode:
    """One channel vector of the data-flow DAG (see the module docstring)."""

    kind: str
    width: int
    srcs: tuple[int, ...] = ()
    mult: float = 1.0
    segs: tuple = ()
    start: int = 0
    pool: bool = False
    layer: int | None = None
    params: tuple[str, ...] = ()  # scale: its parameter leaves; site: those of its activation
    groups: int = 1  # layer: a grouped conv, block j of the outputs sums block j of the inputs


def _new(st, node: PathNode) -> int:
    st.paths.append(node)
    return len(st.paths) - 1


def _reaches(st, pid: int, target: int) -> bool:
    """Whether ``target`` is reached from ``pid`` through sites, sums and scalings only."""
    stack, seen = [pid], set()
    while stack:
        p = stack.pop()
        if p == target:
            return True
        if p in seen:
            continue
        seen.add(p)
        if st.paths[p].kind in ("site", "sum", "scale"):
            stack.extend(st.paths[p].srcs)
    return False


def _join(st, ids: list[int], width: int) -> int:
    ids = list(dict.fromkeys(ids))
    return ids[0] if len(ids) == 1 else _new(st, PathNode("sum", width, tuple(ids)))


def record_paths(st, node, ins, outs, n_layers: int, sited: bool) -> None:
    """Sets ``st.path_of[var]`` for ``node``'s channel outputs, given its rule's results.

    ``n_layers`` is the number of layers before the node, ``sited`` whether it marked a site.
    """

    def pid(v):
        return None if isinstance(v, Literal) else st.path_of.get(v)

    in_ids = [pid(v) for v in node.ins]
    chan_in = [
        (p, a) for p, a in zip(in_ids, ins, strict=True) if isinstance(a, Act) and p is not None
    ]
    for o, out in zip(node.outs, outs, strict=True):
        if not isinstance(out, Act) or out.axis is None or not chan_in:
            continue
        w = int(out.channels)
        name = node.name
        if len(st.layers) > n_layers:  # a dense or conv layer
            info = st.layers[-1]
            src = next(p for p, a in chan_in if a is info.in_act)
            ker = next(a for a in ins if isinstance(a, PVal))
            if info.op == "dense":
                mult = info.in_act.outer * info.in_act.inner
                kind = "layer"
            else:
                spatial = [
                    n
                    for i, n in enumerate(ker.shape)
                    if i not in (node.params["dimension_numbers"].rhs_spec[:2])
                ]
                mult = float(np.prod(spatial)) if spatial else 1.0
                kind = "chan" if info.op == "depthwise_conv" else "layer"
            groups = st.spaces[info.out_space].groups if info.op == "grouped_conv" else 1
            node_ = PathNode(kind, w, (src,), mult, layer=info.index, groups=groups)
            st.path_of[o] = _new(st, node_)
            continue
        (p0, a0) = chan_in[0]
        if name == "concatenate" and out.axis == node.params["dimension"] and a0.axis == out.axis:
            srcs = tuple(p for p, _ in chan_in)
            st.path_of[o] = _new(st, PathNode("concat", w, srcs))
            continue
        if name in ("slice", "split") and a0.axis == out.axis and out.segs != a0.segs:
            if name == "slice":
                start = node.params["start_indices"][a0.axis]
            else:
                start = int(sum(node.params["sizes"][: list(node.outs).index(o)]))
            st.path_of[o] = _new(st, PathNode("slice", w, (p0,), start=start))
            continue
        if name == "pad" and out.segs != a0.segs:
            lo, hi, _ = node.params["padding_config"][a0.axis]
            parts = [_new(st, PathNode("zero", lo))] if lo else []
            parts.append(p0)
            parts += [_new(st, PathNode("zero", hi))] if hi else []
            st.path_of[o] = _new(st, PathNode("concat", w, tuple(parts)))
            continue
        ids = [p for p, a in chan_in if a.axis is not None and a.channels == w]
        if not ids:
            continue
        # A product with a channel reduction (a norm's 1/std, softmax's 1/sum) rescales the
        # channels: not a nonlinearity site for path counting (norms are ignored, paper 004).
        norm = name in ("mul", "div") and any(isinstance(a, Act) and a.axis is None for a in ins)
        if sited and not norm:
            keep = [p for p in ids if not any(q != p and _reaches(st, p, q) for q in ids)]
            dropped = [p for p in ids if p not in keep and st.paths[p].kind == "scale"]
            params = tuple(dict.fromkeys(x for p in dropped for x in st.paths[p].params))
            base = _join(st, keep or ids, w)
            node_ = PathNode("site", w, (base,), segs=out.segs, pool=name in POOL, params=params)
            st.path_of[o] = _new(st, node_)
            continue
        leaves = _channel_leaves(ins, out) if name == "mul" and len(ids) == 1 else ()
        if leaves:
            st.path_of[o] = _new(st, PathNode("scale", w, (ids[0],), params=leaves))
        else:
            st.path_of[o] = _join(st, ids, w)


def _channel_leaves(ins, out: Act) -> tuple[str, ...]:
    """Parameter leaves of a per-channel factor (shape ``(..., C)`` aligned with ``out``)."""
    leaves: list[str] = []
    ax = out.axis
    if ax is None:
        return ()
    for a in ins:
        if isinstance(a, PVal) and len(a.shape) == len(out.shape) and a.shape[ax] > 1:
            leaves += sorted(leaf for leaf, _ in a.axes[ax])
    return tuple(dict.fromkeys(leaves))
