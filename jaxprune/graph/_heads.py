"""Attention in the channel dataflow: heads split off a channel axis, products of activations.

* A reshape that splits a channel axis keeps it as one axis when the channels lie along one of
  the new axes (``(N, H*D)`` laid out with ``inner = D`` split into ``(N, H, D)``: the channels
  are along ``H``). When they do not (a dense layer's ``H*D`` fresh output channels split into
  ``H`` heads of ``D``), the layer's output space is *coarsened*: its units become blocks of
  ``D`` channels, one per head, written as the same layout with ``inner = D``; everything
  recorded about that space so far (its layer's kernel columns and bias, the values carrying
  it) is rewritten to the coarse layout. Only a space not yet coupled to any other (no residual
  join, no nonlinearity, no channel-mixing reduction) is coarsened; otherwise the split is a
  :class:`GraphError`.
* ``dot_general`` between two activations (``q @ k.T`` batching over heads and contracting
  head_dim, ``weights @ v``): channel axes that are batch dimensions at the same place, or
  contracted against each other, are the same channels (their groups are joined: a head of q is
  the head of k it is multiplied with). ``q @ k.T`` is the attention's one nonlinearity site
  (``"attention"``); the softmax's primitives on the scores are labelled ``"softmax"`` but are
  no further site, and ``weights @ v`` is linear in ``v``. So in path counting (paper 004's
  DAG view, :mod:`jaxprune.analysis`) a path through a query or key projection crosses one
  nonlinearity in an attention, a path through the value projection none. A channel axis
  multiplied by a value without channel structure (attention weights of a single head) passes
  through, as with a kernel that mixes tokens. Query heads batched against fewer key/value
  heads (grouped-query attention, the key/value heads repeated) make a unit of each key/value
  head with its query heads. Any other pairing of channel axes is a :class:`GraphError`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxprune.graph._layout import Act

__all__ = ["coarsen_space", "rule_dot_acts", "split_channel_axis"]


def _span(old, new, axis):
    """The new axes ``[k0, k1)`` that together hold old axis ``axis`` (row-major), or None."""
    pre = math.prod(old[:axis])
    post = pre * old[axis]
    acc, k0 = 1, None
    for k, size in enumerate(new):
        if acc == pre and k0 is None and (size != 1 or old[axis] == 1):
            k0 = k
        acc *= size
        if k0 is not None and acc == post:
            return k0, k + 1
    return None


def _layout_along(x: Act, sizes) -> tuple[int, int, int] | None:
    """``(k, outer, inner)``: the axis among ``sizes`` (a split of ``x``'s channel axis) that
    holds all of its channel structure, and the layout along it; None if none does."""
    n = math.prod(sizes)
    chan = (np.arange(n) // x.inner) % x.channels
    grid = chan.reshape(sizes)
    for k, size in enumerate(sizes):
        line = np.moveaxis(grid, k, 0).reshape(size, -1)
        if not (line == line[:, :1]).all():
            continue
        pattern = line[:, 0]
        runs = np.flatnonzero(np.diff(pattern) != 0)
        inner = int(runs[0] + 1) if runs.size else size
        if size % (inner * x.channels):
            continue
        outer = size // (inner * x.channels)
        if (pattern == (np.arange(size) // inner) % x.channels).all():
            return k, outer, inner
    return None


def split_channel_axis(st, x: Act, shape) -> Act:
    """The layout after a reshape of ``x`` to ``shape`` that splits its channel axis."""
    old = tuple(x.shape)
    span = _span(old, tuple(shape), x.axis)
    what = f"reshape {old} -> {tuple(shape)}"
    if span is None:
        raise st.error(f"{what} mixes the channel axis with other axes")
    k0, k1 = span
    sizes = tuple(shape[k0:k1])
    found = _layout_along(x, sizes)
    if found is None:
        heads = next(i for i, s in enumerate(sizes) if s != 1)
        block = math.prod(sizes[heads + 1 :])
        x = coarsen_space(st, x, block, what)
        found = _layout_along(x, sizes)
        if found is None:
            raise st.error(f"{what} splits the channel axis across several axes")
    k, outer, inner = found
    return x.moved(shape, k0 + k, outer=outer, inner=inner)


def _coarse_segs(segs, sid, block):
    """``segs`` in units of ``block`` channels of ``sid``; None if they do not involve ``sid``;
    raises ValueError if they mix it with other spaces or cut a block."""
    if not any(s == sid for s, _, _ in segs):
        return None
    if any(s != sid or a % block or b % block for s, a, b in segs):
        raise ValueError
    return tuple((s, a // block, b // block) for s, a, b in segs)


def coarsen_space(st, x: Act, block: int, what: str) -> Act:
    """Makes blocks of ``block`` channels of ``x``'s one space its units (see the module
    docstring); returns ``x`` in the coarse layout."""
    sids = x.spaces()
    refuse = f"{what} splits the channel axis into heads of {block}, "
    if len(sids) != 1 or x.outer != 1 or x.inner != 1:
        raise st.error(refuse + "but the axis holds several layers' channels or a flattening")
    (sid,) = sids
    space = st.spaces[sid]
    coupled = [s for s in st.spaces if s != sid and st.find(s)[0] == st.find(sid)[0]]
    if space.is_input or space.width % block or coupled or space.sites or space.mixing:
        raise st.error(
            refuse + "but its channels are already a model input, a residual stream, the input "
            "of a nonlinearity or of a reduction (only a layer's fresh output can be split "
            "into heads)"
        )
    try:
        for sl in space.slices:
            sl.segs = _coarse_segs(sl.segs, sid, block)
            sl.inner *= block
        for var, a in list(st.ann.items()):
            if isinstance(a, Act) and a.axis is not None:
                segs = _coarse_segs(a.segs, sid, block)
                if segs is not None:
                    st.ann[var] = dataclasses.replace(a, segs=segs, inner=a.inner * block)
        for i, (node_i, operand, a) in enumerate(st.mask_points):
            segs = _coarse_segs(a.segs, sid, block)
            if segs is not None:
                a = dataclasses.replace(a, segs=segs, inner=a.inner * block)
                st.mask_points[i] = (node_i, operand, a)
    except ValueError:
        raise st.error(refuse + "but other values carry parts of its heads") from None
    space.width //= block
    return dataclasses.replace(x, segs=((sid, 0, space.width),), inner=block)


def _position(dims, i, n_batch, free_offset, free):
    """Output position of operand axis ``i`` of a dot_general, None if contracted."""
    if i in dims[1]:
        return list(dims[1]).index(i)
    if i in free:
        return n_batch + free_offset + free.index(i)
    return None


def _join(st, a: Act, b: Act) -> tuple[Act, Act]:
    """Ties the channels of ``a`` and ``b`` (the same heads); a side with ``r`` times more
    channels whose other side repeats each of its own ``r`` times (grouped-query attention's
    key/value heads, repeated over the query heads sharing them) is coarsened to blocks of
    ``r``: a unit is then a key/value head with its query heads."""
    for x, y in ((a, b), (b, a)):
        r = y.inner // x.inner if x.inner and y.inner % x.inner == 0 else 0
        if r > 1 and x.channels == y.channels * r and x.outer == y.outer:
            what = "a product of grouped-query heads"
            coarse = coarsen_space(st, x, r, what) if x.inner == 1 else None
            if coarse is None:
                break
            a, b = (coarse, b) if x is a else (a, coarse)
            for s in coarse.spaces():
                st.spaces[s].head = "kv_groups"
            break
    if (a.channels, a.outer, a.inner) != (b.channels, b.outer, b.inner):
        raise st.error(
            f"a product of activations pairs {a.channels} channels with {b.channels} (or "
            "differently laid out ones): the layer graph does not know which heads it couples"
        )
    st.tie(a.segs, b.segs)
    return a, b


def _one_head(st, x: Act, axis: int) -> Act:
    """``x`` (one key/value head: its channels are head_dim, batched against query heads along
    ``axis``, a repeat) as one unit laid out along ``axis``; a GraphError if ``x`` is not a
    layer's fresh output."""
    x = coarsen_space(st, x, x.channels, "a product batching query heads against one head")
    for s in x.spaces():
        st.spaces[s].head = "kv_groups"
    return dataclasses.replace(x, shape=x.shape, axis=axis, outer=1, inner=x.shape[axis])


def rule_dot_acts(st, node, a: Act, b: Act, shape) -> Act:
    """``dot_general`` of two activations (see the module docstring)."""
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    nb = len(lb)
    lfree = [i for i in range(len(a.shape)) if i not in lc and i not in lb]
    rfree = [i for i in range(len(b.shape)) if i not in rc and i not in rb]
    if a.axis is None and b.axis is None:
        return Act(tuple(shape), None, affine=None)
    if a.axis is None or b.axis is None:
        x, dims, off, free = (
            (b, (rc, rb), len(lfree), rfree) if a.axis is None else (a, (lc, lb), 0, lfree)
        )
        pos = _position(dims, x.axis, nb, off, free)
        if pos is None:
            raise st.error(
                "a product of activations contracts the channels against a value without "
                "channel structure"
            )
        return x.moved(shape, pos, affine=None)
    if a.axis in lb and (b.axis not in rb or list(rb).index(b.axis) != list(lb).index(a.axis)):
        b = _one_head(st, b, rb[list(lb).index(a.axis)])
    elif b.axis in rb and (a.axis not in lb or list(lb).index(a.axis) != list(rb).index(b.axis)):
        a = _one_head(st, a, lb[list(rb).index(b.axis)])
    pa = _position((lc, lb), a.axis, nb, 0, lfree)
    pb = _position((rc, rb), b.axis, nb, len(lfree), rfree)
    if a.axis in lb and b.axis in rb and pa == pb:
        a, b = _join(st, a, b)
        weights_times_v = any(st.spaces[s].head for s in a.spaces() | b.spaces())
        for s in a.spaces() | b.spaces():
            st.spaces[s].head = st.spaces[s].head or "heads"
        if not weights_times_v:  # q @ k.T: the attention's one nonlinearity (see module doc)
            st.mark_sites([a, b], label="attention")
        return Act(tuple(shape), pa, a.segs, a.outer, a.inner, affine=None)
    if a.axis in lc and b.axis in rc and list(lc).index(a.axis) == list(rc).index(b.axis):
        a, b = _join(st, a, b)
        st.mark_sites([a, b], label="attention")
        st.mask_points.append((st.node_index, 0, a))
        return Act(tuple(shape), None, affine=None)
    raise st.error(
        "a product of activations whose channel axes are neither batched together (heads) nor "
        "contracted together (head_dim): the layer graph does not know which channels it couples"
    )
