"""Channel dataflow over a flat program: layers, spaces, slices, nonlinearities, coupling.

One pass over the equations in order, with a rule per primitive (see :mod:`._layout` for the
annotations). Unknown primitives that touch an activation raise :class:`GraphError`; nothing
is guessed to be elementwise.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxprune.graph._errors import GraphError, user_line
from jaxprune.graph._heads import rule_dot_acts, split_channel_axis
from jaxprune.graph._inline import Literal, Node, Program
from jaxprune.graph._layout import Act, PVal, Seg, reshape_axis_map
from jaxprune.graph._paths import PathNode, record_paths
from jaxprune.graph._primitives import (
    BINARY,
    CALLS,
    LINEAR_UNARY,
    NONLINEAR_LABEL,
    NONLINEAR_UNARY,
    REDUCE,
    REDUCE_WINDOW,
    SHAPE_ONLY,
    STREAM_JOIN,
)

__all__ = ["Analysis", "GroupedRead", "LayerInfo", "SliceInfo", "SpaceInfo", "analyze"]

# Elementwise primitives, by how they treat an activation operand (see :mod:`._primitives`).
_LINEAR_UNARY = LINEAR_UNARY
_NONLINEAR_UNARY = NONLINEAR_UNARY
_BINARY = BINARY
_REDUCE = REDUCE
_REDUCE_WINDOW = REDUCE_WINDOW
_SHAPE_ONLY = SHAPE_ONLY
_NONLINEAR_LABEL = NONLINEAR_LABEL


@dataclasses.dataclass
class SliceInfo:
    """Entries of one leaf tied to channels: along ``axis`` of ``leaf``, index ``r`` holds
    channel ``(r // inner) % C`` of the concatenated ``segs``. ``role`` is ``"write"`` (produces
    or scales the channel: kernel column, bias, norm entries) or ``"read"`` (kernel rows that
    read it); ``layer`` indexes :attr:`Analysis.layers` for kernels."""

    leaf: str
    axis: int
    segs: tuple[Seg, ...]
    outer: int
    inner: int
    role: str
    layer: int | None = None


@dataclasses.dataclass(frozen=True)
class GroupedRead:
    """A grouped convolution's kernel reading channels: entry ``[r, o]`` (along ``in_axis``,
    ``out_axis`` of ``leaf``) reads input position ``(o // (n_out / groups)) * n_in + r`` of
    ``segs`` (the convolution's input channels), for ``n_in``, ``n_out`` the two axes' sizes."""

    leaf: str
    in_axis: int
    out_axis: int
    groups: int
    n_in: int
    n_out: int
    segs: tuple[Seg, ...]
    layer: int


@dataclasses.dataclass
class SpaceInfo:
    """The output channels of one layer (or of one model input)."""

    id: int
    width: int
    layer: int | None
    is_input: bool = False
    sites: list[str] = dataclasses.field(default_factory=list)
    slices: list[SliceInfo] = dataclasses.field(default_factory=list)
    consts: list[str] = dataclasses.field(default_factory=list)
    mixing: list[str] = dataclasses.field(default_factory=list)
    is_output: bool = False
    is_pad: bool = False
    head: str = ""  # "heads": its channels are attention heads; "kv_groups": grouped-query
    groups: int = 1  # a grouped convolution's output: pruned in equal numbers per group


@dataclasses.dataclass
class LayerInfo:
    """A linear op with a parameter kernel (``dot_general`` or ``conv_general_dilated``)."""

    index: int
    node: int
    op: str
    kernel: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    in_act: Act
    out_space: int | None
    kernel_in_axis: int | None
    kernel_out_axis: int | None
    where: str
    reads_from: frozenset[int] = frozenset()  # layers the input is affine in (linear chains)


@dataclasses.dataclass
class Analysis:
    program: Program
    leaf_of_var: dict[int, str]
    arg_vars: tuple[int, ...]
    annotations: dict
    layers: list[LayerInfo]
    spaces: dict[int, SpaceInfo]
    parent: dict[int, int]
    offset: dict[int, int]
    mask_points: list[tuple[int, int, Act]]  # (node index, operand index, layout to mask)
    output_layouts: list
    paths: list[PathNode] = dataclasses.field(default_factory=list)  # channel data-flow DAG
    output_paths: tuple[int | None, ...] = ()  # the outputs' nodes in ``paths``
    grouped_reads: list[GroupedRead] = dataclasses.field(default_factory=list)

    def find(self, s: int) -> tuple[int, int]:
        """``(root, offset)``: channel ``j`` of space ``s`` is channel ``j + offset`` of the
        root's numbering (offsets may be negative; see :meth:`locate`)."""
        return _find(self.parent, self.offset, s)

    def groups(self) -> dict[int, tuple[int, int]]:
        """``{root: (lowest offset, width)}`` of every coupling group."""
        cached: dict[int, tuple[int, int]] | None = getattr(self, "_groups", None)
        if cached is not None:
            return cached
        out: dict[int, tuple[int, int]] = {}
        for sid, sp in self.spaces.items():
            r, o = self.find(sid)
            lo, hi = out.get(r, (o, o + sp.width))
            out[r] = (min(lo, o), max(hi, o + sp.width))
        groups = {r: (lo, hi - lo) for r, (lo, hi) in out.items()}
        self._groups = groups
        return groups

    def locate(self, s: int) -> tuple[int, int]:
        """``(root, start)``: channel ``j`` of space ``s`` is unit ``start + j`` of its group."""
        r, o = self.find(s)
        return r, o - self.groups()[r][0]


def _find(parent, offset, s):
    """Root of ``s`` and the offset of ``s``'s channel 0 in the root's channel numbering."""
    total, path = 0, []
    while parent[s] != s:
        path.append(s)
        total += offset[s]
        s = parent[s]
    # Path compression, keeping offsets relative to the root.
    acc = total
    for p in path:
        step = offset[p]
        parent[p], offset[p] = s, acc
        acc -= step
    return s, total


class _State:
    def __init__(self, program: Program):
        self.program = program
        self.ann: dict[int, Act | PVal] = {}
        self.spaces: dict[int, SpaceInfo] = {}
        self.parent: dict[int, int] = {}
        self.offset: dict[int, int] = {}
        self.layers: list[LayerInfo] = []
        self.mask_points: list[tuple[int, int, Act]] = []
        self.node_index = 0
        self.node: Node | None = None
        self.paths: list[PathNode] = []
        self.grouped_reads: list[GroupedRead] = []
        self.path_of: dict = {}  # variable -> index in paths
        self.sited = False

    # -- helpers -----------------------------------------------------------------------------
    def where(self) -> str:
        if self.node is None:
            return "<input>"
        return user_line(self.node.source_info, self.node.call_sites)

    def error(self, msg: str) -> GraphError:
        return GraphError(msg, self.node.name if self.node else None, self.where())

    def new_space(self, width: int, layer: int | None, is_input=False, is_pad=False) -> int:
        sid = len(self.spaces)
        self.spaces[sid] = SpaceInfo(sid, int(width), layer, is_input, is_pad=is_pad)
        self.parent[sid] = sid
        self.offset[sid] = 0
        return sid

    def find(self, s: int) -> tuple[int, int]:
        return _find(self.parent, self.offset, s)

    def union(self, a: int, b: int, d: int = 0) -> None:
        """Ties channel ``i`` of space ``a`` to channel ``i + d`` of space ``b``."""
        ra, oa = self.find(a)
        rb, ob = self.find(b)
        shift = d + ob - oa  # root ra's channel k == root rb's channel k + shift
        if ra == rb:
            if shift != 0:
                raise self.error("a residual join ties the same channels at two different offsets")
            return
        if ra < rb:  # keep the earlier space as the root
            ra, rb, shift = rb, ra, -shift
        self.parent[ra] = rb
        self.offset[ra] = shift

    def tie(self, x_segs, y_segs) -> None:
        """Ties the channels of two equally long segment lists, position by position."""
        if x_segs != y_segs:
            for (sa, a0), (sb, b0), _ in _pieces(x_segs, y_segs):
                self.union(sa, sb, b0 - a0)

    def get(self, v):
        if isinstance(v, Literal):
            shape = np.shape(v.value)
            value = float(np.asarray(v.value)) if shape == () else None
            return PVal.const(shape, value)
        return self.ann[v]

    def label(self) -> str:
        node = self.node
        if node is None:
            return "<input>"
        for name in reversed(node.context):
            if name not in CALLS:
                return name
        return _NONLINEAR_LABEL.get(node.name, node.name)

    def mark_sites(self, acts, label: str | None = None) -> None:
        acts = list(acts)
        spaces = {s for a in acts for s in a.spaces()}
        if label is None and spaces and all(self.spaces[s].head for s in spaces):
            label = "softmax"  # on attention scores: part of the attention (one site, paths)
        else:
            self.sited = True
        lab = label or self.label()
        for a in acts:
            for s in a.spaces():
                if lab not in self.spaces[s].sites:
                    self.spaces[s].sites.append(lab)

    def add_slices(self, act: Act, pval: PVal, axis_in_pval: int, role: str, layer=None):
        """Records the leaves aligned with ``act``'s channel axis as channel slices."""
        for leaf, leaf_axis in sorted(pval.axes[axis_in_pval]):
            sl = SliceInfo(leaf, leaf_axis, act.segs, act.outer, act.inner, role, layer)
            for s in act.spaces():
                self.spaces[s].slices.append(sl)
        if (
            not pval.axes[axis_in_pval]
            and pval.shape[axis_in_pval] > 1
            and axis_in_pval not in pval.uniform
        ):
            what = (
                "a constant" if not pval.leaves else f"a value computed from {sorted(pval.leaves)}"
            )
            if any("/rngs/" in leaf for leaf in pval.leaves):
                what += " (an NNX RNG stream: dropout in training mode; call model.eval() first)"
            for s in act.spaces():
                self.spaces[s].consts.append(f"{what} aligned with the channels at {self.where()}")

    def unify(self, acts: list[Act]) -> Act:
        """Elementwise combination of activations with the same layout (residual adds)."""
        chan = [a for a in acts if a.axis is not None]
        if not chan:
            return acts[0]
        base = chan[0]
        for a in chan[1:]:
            if (a.axis, a.outer, a.inner, a.channels) != (
                base.axis,
                base.outer,
                base.inner,
                base.channels,
            ):
                raise self.error(
                    f"an elementwise op joins activations whose channels are laid out "
                    f"differently (axis {base.axis} vs {a.axis}, {base.channels} vs {a.channels}"
                    " channels)"
                )
            self.tie(a.segs, base.segs)
        return dataclasses.replace(base, affine=_join_affine(acts))


def _pieces(x, y):
    """Aligned pieces of two segment lists: ``((space_x, start_x), (space_y, start_y), n)``."""
    out, i, j, pi, pj = [], 0, 0, 0, 0
    while i < len(x) and j < len(y):
        sx, ax, bx = x[i]
        sy, ay, by = y[j]
        n = min(bx - ax - pi, by - ay - pj)
        out.append(((sx, ax + pi), (sy, ay + pj), n))
        pi += n
        pj += n
        if pi == bx - ax:
            i, pi = i + 1, 0
        if pj == by - ay:
            j, pj = j + 1, 0
    return out


def _join_affine(acts) -> frozenset[int] | None:
    """Affine in the union of the layers, or None (nonlinear) if any operand is."""
    if any(a.affine is None for a in acts):
        return None
    return frozenset().union(*(a.affine for a in acts))


def _operand_axis(act: Act, pval: PVal) -> int | None:
    """Axis of ``pval`` aligned with ``act``'s channel axis (same rank), or None (scalar)."""
    if act.axis is None or len(pval.shape) == 0:
        return None
    if len(pval.shape) != len(act.shape):
        return None
    return act.axis if pval.shape[act.axis] != 1 else None


def _pval_elementwise(vals: list[PVal], shape) -> PVal:
    rank = len(shape)
    axes, uniform = [], set()
    for i in range(rank):
        acc: frozenset = frozenset()
        for v in vals:
            if len(v.shape) == rank and v.shape[i] == shape[i]:
                acc |= v.axes[i]
        axes.append(acc)
        if all(not v.shape or (len(v.shape) == rank and i in v.uniform) for v in vals):
            uniform.add(i)
    leaves = frozenset().union(*(v.leaves for v in vals))
    return PVal(tuple(shape), tuple(axes), leaves, uniform=frozenset(uniform))


def _rule_elementwise(st: _State, node: Node, ins, shape):
    name = node.name
    acts = [a for a in ins if isinstance(a, Act)]
    pvals = [a for a in ins if isinstance(a, PVal)]
    if not acts:
        pv = _pval_elementwise(pvals, shape)
        if name in ("convert_element_type", "copy") and pvals[0].value is not None:
            pv = dataclasses.replace(pv, value=pvals[0].value)
        return pv
    if all(a.axis is None for a in acts):  # per-example values, maybe times parameters
        carried = [PVal(a.shape, a.carried) for a in acts if a.carried]
        axes = _pval_elementwise(pvals + carried, shape).axes if pvals or carried else ()
        return Act(tuple(shape), None, affine=None, carried=axes if any(axes) else ())
    out = st.unify(acts)
    out = out.moved(shape, out.axis)
    carried = [PVal(a.shape, a.carried) for a in acts if a.axis is None and a.carried]
    for p in pvals + carried:
        ax = _operand_axis(out, p)
        if ax is not None and (p.axes[ax] or p in pvals):
            st.add_slices(out, p, ax, "write")
    if name in _LINEAR_UNARY or name in _SHAPE_ONLY:
        return out
    linear = False
    if name in STREAM_JOIN:
        linear = True
    elif name == "mul" and len(acts) == 1:
        linear = True
    elif name == "div" and isinstance(ins[0], Act) and len(acts) == 1:
        linear = True
    if linear:
        return out
    st.mark_sites(a for a in acts if a.axis is not None)
    return dataclasses.replace(out, affine=None)


def _dot_pval(node, a: PVal, b: PVal, shape) -> PVal:
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    lfree = [i for i in range(len(a.shape)) if i not in lc and i not in lb]
    rfree = [i for i in range(len(b.shape)) if i not in rc and i not in rb]
    axes = [a.axes[i] | b.axes[j] for i, j in zip(lb, rb, strict=True)]
    axes += [a.axes[i] for i in lfree] + [b.axes[j] for j in rfree]
    return PVal(tuple(shape), tuple(axes), a.leaves | b.leaves)


def _rule_dot(st: _State, node: Node, ins, shape):
    a, b = ins
    if isinstance(a, PVal) and isinstance(b, PVal):
        return _dot_pval(node, a, b, shape)
    if isinstance(a, Act) and isinstance(b, Act):
        return rule_dot_acts(st, node, a, b, shape)
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    act_is_lhs = isinstance(a, Act)
    act, ker = (a, b) if act_is_lhs else (b, a)
    ac, kc = (lc, rc) if act_is_lhs else (rc, lc)
    ab, kb = (lb, rb) if act_is_lhs else (rb, lb)
    if kb:
        raise st.error("dot_general with batch dimensions on a parameter kernel")
    afree = [i for i in range(len(act.shape)) if i not in ac and i not in ab]
    kfree = [i for i in range(len(ker.shape)) if i not in kc]
    # Output axes: batch dims, then lhs free, then rhs free.
    nb = len(lb)
    act_free_pos = (
        [nb + k for k in range(len(afree))]
        if act_is_lhs
        else [nb + len(kfree) + k for k in range(len(afree))]
    )
    ker_free_pos = (
        [nb + len(afree) + k for k in range(len(kfree))]
        if act_is_lhs
        else [nb + k for k in range(len(kfree))]
    )
    if act.axis is None:
        raise st.error("a parameter kernel reads a value without channel structure")
    if act.axis in ab:
        raise st.error("dot_general batches over the channel axis")
    if act.axis not in ac:
        # The kernel mixes other axes (tokens, space); the channels pass through unchanged.
        pos = act_free_pos[afree.index(act.axis)]
        return act.moved(shape, pos)
    k_in = kc[list(ac).index(act.axis)]
    # A kernel with several output axes (DenseGeneral to (heads, head_dim)): its channels are
    # along the first, each one a block of the others' entries (a head).
    big = [k for k in kfree if ker.shape[k] != 1]
    if not ker.leaves:
        raise st.error("dot_general with a constant kernel reads the channels")
    k_out = big[0] if big else (kfree[0] if kfree else None)
    kernel_leaf = _kernel_leaf(st, ker, k_in)
    li = len(st.layers)
    out_axis = ker_free_pos[kfree.index(k_out)] if k_out is not None else None
    if out_axis is None:
        out = Act(tuple(shape), None, affine=None)
        sid = None
    else:
        sid = st.new_space(shape[out_axis], li)
        out = Act(tuple(shape), out_axis, ((sid, 0, shape[out_axis]),), affine=frozenset({li}))
    st.layers.append(
        LayerInfo(
            li,
            st.node_index,
            "dense",
            kernel_leaf,
            tuple(act.shape),
            tuple(shape),
            act,
            sid,
            _leaf_axis(ker, k_in, kernel_leaf),
            _leaf_axis(ker, k_out, kernel_leaf) if k_out is not None else None,
            st.where(),
            act.affine or frozenset(),
        )
    )
    st.add_slices(act, ker, k_in, "read", li)
    if sid is not None:
        assert k_out is not None  # an output space comes from a kernel output axis
        st.add_slices(out, ker, k_out, "write", li)
    st.mask_points.append((st.node_index, 0 if act_is_lhs else 1, act))
    return out


def _kernel_leaf(st, ker: PVal, axis: int) -> str:
    leaves = sorted({leaf for leaf, _ in ker.axes[axis]})
    if len(leaves) != 1:
        raise st.error(
            f"the kernel's input axis comes from {leaves or 'no parameter'}; expected exactly one "
            "parameter leaf (a kernel computed from several parameters is not supported)"
        )
    return leaves[0]


def _leaf_axis(ker: PVal, axis: int, leaf: str) -> int | None:
    for lf, ax in ker.axes[axis]:
        if lf == leaf:
            return ax
    return None


def _rule_conv(st: _State, node: Node, ins, shape):
    x, k = ins
    if isinstance(x, PVal) and isinstance(k, PVal):
        return PVal.const(shape) if not (x.leaves | k.leaves) else x.opaque(shape)
    if not isinstance(x, Act) or not isinstance(k, PVal):
        raise st.error("a convolution whose kernel is an activation")
    dn = node.params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    if x.axis != lhs_spec[1] or x.outer != 1 or x.inner != 1:
        raise st.error(
            f"a convolution's feature axis ({lhs_spec[1]}) is not the input's channel axis "
            f"({x.axis})"
        )
    if node.params.get("batch_group_count", 1) != 1:
        raise st.error("batch_group_count != 1")
    groups = node.params.get("feature_group_count", 1)
    cin = x.shape[lhs_spec[1]]
    cout = k.shape[rhs_spec[0]]
    k_in, k_out = rhs_spec[1], rhs_spec[0]
    li = len(st.layers)
    if groups == 1:
        leaf = _kernel_leaf(st, k, k_in)
        sid = st.new_space(cout, li)
        out = Act(tuple(shape), out_spec[1], ((sid, 0, cout),), affine=frozenset({li}))
        st.add_slices(x, k, k_in, "read", li)
        st.add_slices(out, k, k_out, "write", li)
        op = "conv"
    elif groups == cin and cout == cin:
        # Depthwise: output channel c reads input channel c only; the channels pass through
        # (a per-channel op, like a norm) and the kernel's output axis belongs to them.
        leaf = _kernel_leaf(st, k, k_out)
        sid = None
        out = x.moved(shape, out_spec[1], affine=frozenset({li}))
        st.add_slices(out, k, k_out, "write", li)
        op = "depthwise_conv"
    else:
        # Grouped: output channel o reads only the input channels of its group o // (cout/g).
        # The output channels are a new space pruned in equal numbers per group (the group
        # count stays); the kernel's input axis holds in-group positions, not channels, so the
        # input channels are narrowed at the same positions in every group (the Graph's
        # ``Unit.period``, from the grouped reads).
        leaf = _kernel_leaf(st, k, k_out)
        sid = st.new_space(cout, li)
        st.spaces[sid].groups = groups
        out = Act(tuple(shape), out_spec[1], ((sid, 0, cout),), affine=frozenset({li}))
        st.add_slices(out, k, k_out, "write", li)
        in_axis, out_axis = _leaf_axis(k, k_in, leaf), _leaf_axis(k, k_out, leaf)
        if in_axis is None or out_axis is None:
            raise st.error(
                f"a grouped convolution (feature_group_count={groups}) whose kernel's input and "
                f"output axes are not axes of one parameter leaf ({leaf})"
            )
        read = GroupedRead(leaf, in_axis, out_axis, groups, cin // groups, cout, x.segs, li)
        st.grouped_reads.append(read)
        op = "grouped_conv"
    st.layers.append(
        LayerInfo(
            li,
            st.node_index,
            op,
            leaf,
            tuple(x.shape),
            tuple(shape),
            x,
            sid,
            _leaf_axis(k, k_in, leaf),
            _leaf_axis(k, k_out, leaf),
            st.where(),
            x.affine or frozenset(),
        )
    )
    st.mask_points.append((st.node_index, 0, x))
    return out


def _rule_gather(st: _State, node: Node, ins, shape):
    """An embedding lookup (rows of a parameter table picked by indices that are not computed
    from parameters) is a layer whose output channels are the table's columns; any other
    gather from parameters or constants is a parameter value; a gather from an activation is
    not understood."""
    table, idx = ins
    if isinstance(table, PVal) and isinstance(idx, PVal):
        dn = node.params["dimension_numbers"]
        lookup = (
            len(table.shape) == 2
            and table.leaves
            and not idx.leaves
            and tuple(dn.collapsed_slice_dims) == (0,)
            and tuple(dn.start_index_map) == (0,)
            and tuple(dn.offset_dims) == (len(shape) - 1,)
            and not dn.operand_batching_dims
            and tuple(node.params["slice_sizes"]) == (1, table.shape[1])
            and len(table.axes[1]) == 1
        )
        if not lookup:
            return PVal(tuple(shape), tuple(frozenset() for _ in shape), table.leaves | idx.leaves)
        ((leaf, leaf_axis),) = table.axes[1]
        li = len(st.layers)
        width = shape[-1]
        sid = st.new_space(width, li)
        out = Act(tuple(shape), len(shape) - 1, ((sid, 0, width),))
        st.layers.append(
            LayerInfo(
                li,
                st.node_index,
                "embed",
                leaf,
                tuple(idx.shape),
                tuple(shape),
                Act(tuple(idx.shape), None, affine=None),
                sid,
                None,
                leaf_axis,
                st.where(),
            )
        )
        st.add_slices(out, table, 1, "write", li)
        return out
    if isinstance(table, Act) and table.axis is None:
        return Act(tuple(shape), None, affine=None)
    raise st.error("a gather from an activation (indexing with computed indices)")


def _rule_reduce(st: _State, node: Node, ins, shape):
    (x,) = ins[:1]
    axes = tuple(node.params["axes"])
    if isinstance(x, PVal):
        keep = [i for i in range(len(x.shape)) if i not in axes]
        return PVal(tuple(shape), tuple(x.axes[i] for i in keep), x.leaves)
    if x.axis is None:
        return Act(tuple(shape), None, affine=None)
    if x.axis in axes:
        for s in x.spaces():
            st.spaces[s].mixing.append(f"{node.name} over the channels at {st.where()}")
        st.mask_points.append((st.node_index, 0, x))
        return Act(tuple(shape), None, affine=None)
    new_axis = x.axis - sum(1 for a in axes if a < x.axis)
    out = x.moved(shape, new_axis)
    if node.name == "reduce_sum":
        return out
    st.mark_sites([x])
    return dataclasses.replace(out, affine=None)


def _rule_reduce_window(st: _State, node: Node, ins, shape):
    (x,) = ins
    if isinstance(x, PVal):
        return x.opaque(shape)
    if x.axis is None:
        return Act(tuple(shape), None, affine=None)
    win = node.params["window_dimensions"]
    strides = node.params["window_strides"]
    pad = node.params["padding"]
    if win[x.axis] != 1 or strides[x.axis] != 1 or tuple(pad[x.axis]) != (0, 0):
        raise st.error("a pooling window spans the channel axis")
    out = x.moved(shape, x.axis)
    if node.name == "reduce_window_sum":
        return out
    st.mark_sites([x])
    return dataclasses.replace(out, affine=None)


def _rule_reshape(st: _State, node: Node, ins, shape):
    x = ins[0]
    if node.params.get("dimensions") not in (None, ()):
        raise st.error("reshape with a dimensions permutation")
    if isinstance(x, PVal):
        big_old = [i for i, n in enumerate(x.shape) if n != 1]
        big_new = [i for i, n in enumerate(shape) if n != 1]
        if [x.shape[i] for i in big_old] == [shape[i] for i in big_new]:
            axes: list[frozenset] = [frozenset() for _ in shape]
            for i, j in zip(big_old, big_new, strict=True):
                axes[j] = x.axes[i]
            return PVal(tuple(shape), tuple(axes), x.leaves)
        return x.opaque(shape)
    if x.axis is None:
        return Act(tuple(shape), None, affine=None)
    m = reshape_axis_map(tuple(x.shape), tuple(shape), x.axis)
    if m is None:
        return split_channel_axis(st, x, shape)
    new_axis, outer, inner = m
    return x.moved(shape, new_axis, outer=x.outer * outer, inner=x.inner * inner)


def _rule_transpose(st, node, ins, shape):
    x = ins[0]
    perm = tuple(node.params["permutation"])
    if isinstance(x, PVal):
        return PVal(tuple(shape), tuple(x.axes[p] for p in perm), x.leaves)
    if x.axis is None:
        return Act(tuple(shape), None, affine=None)
    return x.moved(shape, perm.index(x.axis))


def _rule_broadcast(st, node, ins, shape):
    x = ins[0]
    dims = tuple(node.params["broadcast_dimensions"])
    if isinstance(x, PVal):
        axes = [frozenset() for _ in shape]
        uniform = set(range(len(shape)))
        for i, d in enumerate(dims):
            if x.shape[i] == shape[d]:
                axes[d] = x.axes[i]
                if i not in x.uniform:
                    uniform.discard(d)
        return PVal(tuple(shape), tuple(axes), x.leaves, uniform=frozenset(uniform))
    if x.axis is None:
        return Act(tuple(shape), None, affine=None)
    d = dims[x.axis]
    if shape[d] != x.shape[x.axis]:
        raise st.error("broadcast along the channel axis")
    return x.moved(shape, d)


def _rule_squeeze(st, node, ins, shape):
    x = ins[0]
    dims = tuple(d % len(x.shape) for d in node.params["dimensions"])
    keep = [i for i in range(len(x.shape)) if i not in dims]
    if isinstance(x, PVal):
        return PVal(tuple(shape), tuple(x.axes[i] for i in keep), x.leaves)
    if x.axis is None:
        return Act(tuple(shape), None, affine=None)
    return x.moved(shape, keep.index(x.axis))


def _rule_concatenate(st, node, ins, shape):
    d = node.params["dimension"]
    acts = [a for a in ins if isinstance(a, Act)]
    if not acts:
        return _pval_concat(ins, d, shape)
    if any(a.axis is None for a in acts):
        return Act(tuple(shape), None, affine=None)
    if all(a.axis == d for a in acts):
        if any(isinstance(a, PVal) for a in ins):
            raise st.error("a constant or parameter is concatenated onto the channels")
        if any(a.outer != 1 or a.inner != 1 for a in acts):
            raise st.error("concatenation of flattened channel axes")
        segs = tuple(s for a in acts for s in a.segs)
        return Act(tuple(shape), d, segs, affine=_join_affine(acts))
    if any(a.axis == d for a in acts):
        raise st.error("concatenation mixes the channel axis with another axis")
    out = st.unify(acts)
    return out.moved(shape, out.axis)


def _pval_concat(ins, d, shape):
    vals = [v for v in ins if isinstance(v, PVal)]
    axes = []
    for i in range(len(shape)):
        axes.append(frozenset() if i == d else frozenset().union(*(v.axes[i] for v in vals)))
    return PVal(tuple(shape), tuple(axes), frozenset().union(*(v.leaves for v in vals)))


def _sub_segs(segs, start, stop):
    out, pos = [], 0
    for s, a, b in segs:
        n = b - a
        lo, hi = max(start, pos), min(stop, pos + n)
        if lo < hi:
            out.append((s, a + lo - pos, a + hi - pos))
        pos += n
    return tuple(out)


def _rule_slice(st, node, ins, shape):
    x = ins[0]
    if isinstance(x, PVal):
        return x.opaque(shape) if x.leaves else PVal.const(shape)
    if x.axis is None:
        return Act(tuple(shape), None, affine=None)
    start = node.params["start_indices"][x.axis]
    stop = node.params["limit_indices"][x.axis]
    strides = node.params.get("strides") or (1,) * len(x.shape)
    if (start, stop) == (0, x.shape[x.axis]):
        return x.moved(shape, x.axis)
    if strides[x.axis] != 1 or x.outer != 1 or x.inner != 1:
        raise st.error("a strided or flattened slice of the channel axis")
    return dataclasses.replace(x.moved(shape, x.axis), segs=_sub_segs(x.segs, start, stop))


def _rule_split(st, node, ins, shapes):
    x = ins[0]
    axis = node.params["axis"]
    sizes = node.params["sizes"]
    if isinstance(x, PVal):
        return [x.opaque(s) for s in shapes]
    if x.axis is None or x.axis != axis:
        if x.axis is None:
            return [Act(tuple(s), None, affine=None) for s in shapes]
        return [x.moved(s, x.axis) for s in shapes]
    if x.outer != 1 or x.inner != 1:
        raise st.error("a split of a flattened channel axis")
    outs, pos = [], 0
    for n, s in zip(sizes, shapes, strict=True):
        outs.append(dataclasses.replace(x.moved(s, x.axis), segs=_sub_segs(x.segs, pos, pos + n)))
        pos += n
    return outs


def _rule_pad(st, node, ins, shape):
    x, value = ins
    if isinstance(x, PVal):
        return x.opaque(shape)
    if x.axis is None:
        return Act(tuple(shape), None, affine=None)
    lo, hi, interior = node.params["padding_config"][x.axis]
    if (lo, hi, interior) == (0, 0, 0):
        return x.moved(shape, x.axis)
    zero = isinstance(value, PVal) and value.value == 0.0
    if interior or lo < 0 or hi < 0 or not zero or x.outer != 1 or x.inner != 1:
        raise st.error("padding along the channel axis other than appending zero channels")
    segs = list(x.segs)
    if lo:
        segs.insert(0, (st.new_space(lo, None, is_pad=True), 0, lo))
    if hi:
        segs.append((st.new_space(hi, None, is_pad=True), 0, hi))
    return x.moved(shape, x.axis, segs=tuple(segs))


_RULES = {
    "dot_general": _rule_dot,
    "conv_general_dilated": _rule_conv,
    "reshape": _rule_reshape,
    "transpose": _rule_transpose,
    "broadcast_in_dim": _rule_broadcast,
    "squeeze": _rule_squeeze,
    "concatenate": _rule_concatenate,
    "slice": _rule_slice,
    "pad": _rule_pad,
    "gather": _rule_gather,
}


def analyze(
    program: Program, leaf_of_var: dict[int, str], arg_vars, out_names=None, state_outs=None
) -> Analysis:
    """Runs the channel dataflow over ``program``.

    Args:
      program: the flat program.
      leaf_of_var: ``{input variable: leaf path}`` for the model's variables.
      arg_vars: the input variables holding the model's arguments (activations).
      state_outs: ``{output index: leaf path}`` for outputs that are the new values of
        variables (linen's ``mutable`` updates: BatchNorm running statistics in train mode).
        One of the leaf's shape whose channels lie along one axis is a "write" slice of its
        channels (it holds per-channel statistics of the group, narrowed with it), not a model
        output that would pin the channels.
    """
    state_outs = state_outs or {}
    st = _State(program)
    for v in program.invars:
        aval = program.avals[v]
        shape = tuple(aval.shape)
        if v in leaf_of_var:
            st.ann[v] = PVal.leaf(leaf_of_var[v], shape)
        elif v in arg_vars and len(shape) >= 1 and np.issubdtype(aval.dtype, np.inexact):
            sid = st.new_space(shape[-1], None, is_input=True)
            st.ann[v] = Act(shape, len(shape) - 1, ((sid, 0, shape[-1]),))
            st.path_of[v] = len(st.paths)
            st.paths.append(PathNode("input", shape[-1]))
        else:
            st.ann[v] = PVal.const(shape)
    for i, node in enumerate(program.nodes):
        st.node_index, st.node = i, node
        ins = [st.get(v) for v in node.ins]
        shapes = [tuple(program.avals[o].shape) for o in node.outs]
        name = node.name
        has_act = any(isinstance(a, Act) for a in ins)
        n_layers, st.sited = len(st.layers), False
        if name == "split":
            outs = _rule_split(st, node, ins, shapes)
        elif name in _RULES:
            outs = [_RULES[name](st, node, ins, shapes[0])]
        elif name in _LINEAR_UNARY | _NONLINEAR_UNARY | _BINARY | _SHAPE_ONLY:
            outs = [_rule_elementwise(st, node, ins, shapes[0])]
        elif name in _REDUCE:
            outs = [_rule_reduce(st, node, ins, shapes[0])]
        elif name in _REDUCE_WINDOW:
            outs = [_rule_reduce_window(st, node, ins, shapes[0])]
        elif not has_act:
            leaves = frozenset().union(*(a.leaves for a in ins if isinstance(a, PVal)))
            outs = [PVal(s, tuple(frozenset() for _ in s), leaves) for s in shapes]
        else:
            acts = [a for a in ins if isinstance(a, Act)]
            if all(a.axis is None for a in acts):
                outs = [Act(s, None, affine=None) for s in shapes]
            else:
                raise st.error(
                    "this operation on an activation is not understood by jaxprune's layer "
                    "graph (it may mix channels)"
                )
        for o, a in zip(node.outs, outs, strict=True):
            st.ann[o] = a
        if has_act:
            record_paths(st, node, ins, outs, n_layers, st.sited)
        elif len(st.layers) > n_layers:  # an embedding lookup: its output starts paths
            st.path_of[node.outs[0]] = len(st.paths)
            st.paths.append(PathNode("input", st.layers[-1].out_shape[-1]))
    st.node = None
    out_layouts = []
    leaf_shapes = {path: tuple(program.avals[v].shape) for v, path in leaf_of_var.items()}
    for i, v in enumerate(program.outvars):
        a = st.get(v)
        out_layouts.append(a)
        if not isinstance(a, Act):
            continue
        leaf = state_outs.get(i)
        if leaf is not None and a.axis is not None and leaf_shapes.get(leaf) == a.shape:
            # the variable's new value: its entries along the channel axis belong to the
            # channels, as the old value's do (the running mean it updates)
            st.add_slices(a, PVal.leaf(leaf, a.shape), a.axis, "write")
            continue
        for s in a.spaces():
            st.spaces[s].is_output = True
    return Analysis(
        program=program,
        leaf_of_var=leaf_of_var,
        arg_vars=tuple(arg_vars),
        annotations=st.ann,
        layers=st.layers,
        spaces=st.spaces,
        parent=st.parent,
        offset=st.offset,
        mask_points=st.mask_points,
        output_layouts=out_layouts,
        paths=st.paths,
        output_paths=tuple(
            None if isinstance(v, Literal) else st.path_of.get(v) for v in program.outvars
        ),
        grouped_reads=st.grouped_reads,
    )
