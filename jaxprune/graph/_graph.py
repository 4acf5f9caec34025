"""The layer graph of a traced model: layers, units and their coupling groups."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._types import Model, Variables
from jaxprune.graph._adapters import (
    ModelAdapter,
    as_model,
    check_model_kwargs,
    path_str,
    takes_model,
)
from jaxprune.graph._analyze import Analysis, SliceInfo, analyze
from jaxprune.graph._errors import GraphError
from jaxprune.graph._evaluate import run_program
from jaxprune.graph._inline import inline
from jaxprune.graph._masks import check_mask, check_mask_names

__all__ = ["Graph", "Layer", "Unit", "trace"]


@dataclasses.dataclass(frozen=True)
class Layer:
    """A linear layer with a parameter kernel, as found in the trace.

    Attributes:
      name: the param path of the layer (the kernel's path without its leaf name and without
        linen's ``params/`` collection: ``"Dense_0"``, ``"block1/Conv_1"``).
      op: ``"dense"``, ``"conv"``, ``"depthwise_conv"``, ``"grouped_conv"`` or ``"embed"`` (an
        embedding lookup: its output channels are the table's columns; ``in_shape`` is the
        indices' shape).
      kernel: the kernel's full leaf path in the variables (``"params/Dense_0/kernel"``).
      in_shape, out_shape: shapes at the traced example arguments.
      unit: the unit group its output channels belong to (``None`` if they are not units).
      nonlinearity: what its output enters (``"relu"``, ``"gelu"``, ...; ``""`` if nothing).
      reads_linear: the layers whose output this layer reads with no nonlinearity in between
        (a linear chain, which :func:`jaxprune.collapse` folds).
      where: the user's source line.
    """

    name: str
    op: str
    kernel: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    unit: str | None
    nonlinearity: str
    reads_linear: tuple[str, ...]
    where: str


@dataclasses.dataclass(frozen=True)
class Unit:
    """A unit group: channels entering a nonlinearity, with everything coupled to them.

    Channel ``i`` of every layer in ``layers`` is one unit (tied by residual adds or a
    depthwise conv); its parameter entries are the ``write`` slices (kernel column, bias,
    norm entries, depthwise filter) and the ``read`` slices (kernel rows of every consumer,
    through skips, concatenation offsets and flatten tiling).

    Attributes:
      name: the name of the first layer producing these channels.
      width: the number of units.
      layers: every layer whose output channels are in the group.
      nonlinearity: the nonlinearities the channels enter.
      coupled: reasons the group cannot be pruned exactly (channel-mixing reductions such as
        LayerNorm, constants aligned with the channels); empty for an ordinary group.
      groups: the output channels of a grouped convolution (``feature_group_count=g``) are
        ``g`` equal contiguous blocks, one per convolution group: pruning removes the same
        number from every block (the group count stays); 1 for an ordinary group.
      kind: ``"channels"`` (each unit a channel), ``"heads"`` (each unit an attention head:
        its query, key and value columns and biases and its rows of the output projection),
        ``"kv_groups"`` (grouped-query attention: each unit a key/value head with the query
        heads that share it) or ``"embedding"`` (an embedding's columns: the residual stream
        of a transformer, coupled by its norms).
      period: the channels entering a grouped convolution are read at in-group positions
        (kernel entries ``[r, :]`` read position ``r`` of every convolution group): channels
        ``c`` and ``c + period`` are pruned together, at the same positions in every group;
        0 if no grouped convolution reads the group.
    """

    name: str
    width: int
    layers: tuple[str, ...]
    nonlinearity: tuple[str, ...]
    coupled: tuple[str, ...]
    root: int = dataclasses.field(repr=False, compare=False, default=-1)
    groups: int = 1
    kind: str = "channels"
    period: int = 0


def _conv_groups(an: Analysis, sids, width: int) -> tuple[int, tuple[str, ...]]:
    """The blocks of equal pruning of a unit group (the lcm of its grouped convolutions'
    group counts), and why it cannot be pruned if a grouped output is only part of it."""
    groups, why = 1, []
    for s in sids:
        g = an.spaces[s].groups
        if g == 1:
            continue
        if an.locate(s)[1] != 0 or an.spaces[s].width != width:
            why.append(
                f"a grouped convolution's output (feature_group_count={g}) is joined to a "
                "wider channel group, whose blocks of equal pruning are not defined"
            )
        groups = math.lcm(groups, g)
    return groups, tuple(why)


def _grouped_read_periods(an: Analysis, group_width) -> dict[int, tuple[int, tuple[str, ...]]]:
    """``{root: (period, reasons)}`` of the groups read by grouped convolutions.

    A grouped convolution reads in-group position ``r`` of every convolution group with the
    same kernel entries ``[r, :]``: its input channels ``c`` and ``c + n_in`` are narrowed
    together (period ``n_in``, the gcd over several such readers). That holds when its input
    is exactly one group's channels in order; otherwise the group cannot be pruned (reasons).
    """
    out: dict[int, tuple[int, tuple[str, ...]]] = {}
    for gr in an.grouped_reads:
        roots: list[int] = []
        chans: list[int] = []
        for s, a, b in gr.segs:
            root, start = an.locate(s)
            roots += [root] * (b - a)
            chans += range(start + a, start + b)
        root = roots[0]
        straight = set(roots) == {root} and chans == list(range(group_width[root]))
        for r in dict.fromkeys(roots):
            period, why = out.get(r, (0, ()))
            if straight:
                out[r] = (math.gcd(period, gr.n_in), why)
            else:
                out[r] = (
                    period,
                    (
                        *why,
                        f"read by a grouped convolution (feature_group_count={gr.groups}) whose "
                        "input is not exactly this group's channels in order (a concatenation or "
                        "a slice); keep these units",
                    ),
                )
    return out


def _layer_name(adapter: ModelAdapter, kernel: str) -> str:
    short = adapter.short(kernel)
    return short.rsplit("/", 1)[0] if "/" in short else short


class Graph:
    """The layer graph of one traced call of a model (see :func:`trace`).

    Attributes:
      model: the :class:`~jaxprune.graph.ModelAdapter` of the traced model.
      layers: ``{name: Layer}`` in forward order.
      units: ``{name: Unit}`` in forward order.
      args, kwargs: the example arguments and the call's keyword arguments.
    """

    def __init__(self, adapter: ModelAdapter, analysis: Analysis, args, kwargs, leaf_paths):
        self.model = adapter
        self.analysis = analysis
        self.args = args
        self.kwargs = dict(kwargs)
        self.leaf_paths = tuple(leaf_paths)
        self._out_tree: Any = None  # the output's treedef, set by trace
        self._build()

    # -- construction ------------------------------------------------------------------------
    def _build(self):
        an = self.analysis
        names, seen = [], {}
        for info in an.layers:
            base = _layer_name(self.model, info.kernel)
            k = seen.get(base, 0)
            seen[base] = k + 1
            names.append(base if k == 0 else f"{base}@{k}")
        self._layer_names = names
        roots: dict[int, list[int]] = {}
        for sid in an.spaces:
            roots.setdefault(an.find(sid)[0], []).append(sid)
        group_width = {r: w for r, (_, w) in an.groups().items()}
        periods = _grouped_read_periods(an, group_width)
        units: dict[str, Unit] = {}
        unit_of_root: dict[int, str] = {}
        for root, sids in sorted(roots.items(), key=lambda kv: self._first_layer(kv[1])):
            spaces = [an.spaces[s] for s in sids]
            embedded = any(s.layer is not None and an.layers[s.layer].op == "embed" for s in spaces)
            if not (embedded or any(s.sites for s in spaces)) or any(
                s.is_input or s.is_output for s in spaces
            ):
                continue  # an embedding's channels are units without a nonlinearity
            producers = sorted({s.layer for s in spaces if s.layer is not None})
            if not producers:
                continue
            name = names[producers[0]]
            sites = tuple(dict.fromkeys(x for s in spaces for x in s.sites))
            coupled = tuple(dict.fromkeys(x for s in spaces for x in (*s.mixing, *s.consts)))
            groups, misaligned = _conv_groups(an, sids, group_width[root])
            heads = {s.head for s in spaces if s.head}
            kind = "kv_groups" if "kv_groups" in heads else "heads" if heads else "channels"
            period, unaligned = periods.get(root, (0, ()))
            units[name] = Unit(
                name,
                group_width[root],
                tuple(names[p] for p in producers),
                sites,
                coupled + misaligned + unaligned,
                root,
                groups,
                kind="embedding" if embedded and kind == "channels" else kind,
                period=period,
            )
            unit_of_root[root] = name
        self.units = units
        self._unit_of_root = unit_of_root
        layers = {}
        for info, name in zip(an.layers, names, strict=True):
            if info.out_space is not None:
                root = an.find(info.out_space)[0]
                sites = an.spaces[info.out_space].sites
            else:  # depthwise: its channels are its input's
                roots_in = {an.find(s)[0] for s in info.in_act.spaces()}
                root = next(iter(roots_in)) if len(roots_in) == 1 else None
                sites = []
            layers[name] = Layer(
                name=name,
                op=info.op,
                kernel=info.kernel,
                in_shape=info.in_shape,
                out_shape=info.out_shape,
                unit=unit_of_root.get(root),
                nonlinearity=",".join(sites),
                reads_linear=tuple(names[j] for j in sorted(info.reads_from)),
                where=info.where,
            )
        self.layers = layers

    def _first_layer(self, sids):
        layers = [self.analysis.spaces[s].layer for s in sids]
        layers = [x for x in layers if x is not None]
        return min(layers) if layers else 10**9

    # -- units -------------------------------------------------------------------------------
    def check_units(self, units: Mapping | None, arg: str = "units", *, fill: bool = True):
        """Validates ``{unit: bool[width]}``; returns bool arrays (all units if ``fill``).

        Raises ``ValueError`` naming ``arg`` for a non-mapping, an unknown unit (listing the
        valid ones), or a mask that is not bool of shape ``(width,)``: a float 0.5 would
        silently count as True, integers could be indices rather than a mask. The message is
        ``arg['unit']: expected shape (w,) and dtype bool, got shape <s> and dtype <d>``.
        """
        units = check_mask_names(units, arg, self.units)
        out = {}
        for name, u in self.units.items():
            if name in units:
                out[name] = check_mask(arg, name, units[name], (u.width,))
            elif fill:
                out[name] = jnp.zeros(u.width, bool)
        return out

    def slices(self, unit: str, *, incoming: bool = True, outgoing: bool = True):
        """The parameter slices of a unit group: ``[(leaf path, axis, channel index)]``.

        ``channel index`` is an int array over the leaf's ``axis``: the unit each entry belongs
        to, or -1 for entries of other channels (a kernel row of a concatenated input).
        ``incoming`` selects the writing slices (kernel columns, biases, norm entries),
        ``outgoing`` the reading ones (kernel rows of every consumer).
        """
        u = self.units[unit]
        an = self.analysis
        out, seen = [], set()
        for sid, space in an.spaces.items():
            if an.find(sid)[0] != u.root:
                continue
            for sl in space.slices:
                if (sl.role == "write" and not incoming) or (sl.role == "read" and not outgoing):
                    continue
                key = (sl.leaf, sl.axis, sl.role, id(sl))
                if key in seen:
                    continue
                seen.add(key)
                out.append((sl.leaf, sl.axis, self._index(sl, u.root), sl.role))
        merged: dict[tuple[str, int], np.ndarray] = {}
        for leaf, axis, idx, _ in out:
            k = (leaf, axis)
            merged[k] = idx if k not in merged else np.where(idx >= 0, idx, merged[k])
        return [(leaf, axis, idx) for (leaf, axis), idx in merged.items()]

    def grouped_slices(self, unit: str):
        """The kernel entries of grouped convolutions that read a unit group:
        ``[(leaf path, (in_axis, out_axis), channel index)]``.

        A grouped convolution's kernel holds, along its input axis, positions within one
        convolution group, so which channel an entry reads depends on its output column too:
        ``channel index`` is an int array of shape ``(n_in, n_out)`` over the leaf's two axes,
        the unit each entry reads or -1. These entries are outgoing (reading) entries of the
        unit, beside :meth:`slices`, whose indices run along one axis.
        """
        u = self.units[unit]
        out = []
        for gr in self.analysis.grouped_reads:
            chan = self._index(SliceInfo(gr.leaf, gr.in_axis, gr.segs, 1, 1, "read"), u.root)
            if (chan < 0).all():
                continue
            r = np.arange(gr.n_in)[:, None]
            o = np.arange(gr.n_out)[None, :]
            idx = chan[(o // (gr.n_out // gr.groups)) * gr.n_in + r]
            out.append((gr.leaf, (gr.in_axis, gr.out_axis), idx))
        return out

    def _index(self, sl: SliceInfo, root: int) -> np.ndarray:
        an = self.analysis
        seq: list[int] = []
        for s, a, b in sl.segs:
            r, start = an.locate(s)
            if r == root:
                seq.extend(range(start + a, start + b))
            else:
                seq.extend([-1] * (b - a))
        chan = np.asarray(seq, np.int32)
        if sl.inner > 1:
            chan = np.repeat(chan, sl.inner)
        if sl.outer > 1:
            chan = np.tile(chan, sl.outer)
        return chan

    def unit_param_mask(self, tree, units: Mapping, *, incoming=True, outgoing=True):
        """Bool tree shaped like ``tree``: True on the entries of the units in ``units``.

        ``tree`` is the model's variables, or its trainable part (linen's ``params``, an
        optimizer's updates): leaves are matched by path. Works on traced masks.

        Args:
          tree: a pytree with (a subset of) the model's leaf paths.
          units: ``{unit: bool[width]}`` (unlisted units are all False).
          incoming: mark the writing entries (kernel columns, biases, norm entries).
          outgoing: mark the reading entries (kernel rows in every consumer, and the entries
            of grouped convolutions' kernels reading the units: :meth:`grouped_slices`).
        """
        units = self.check_units(units, "units", fill=False)
        per_leaf: dict[str, list] = {}
        for name, m in units.items():
            for leaf, axis, idx in self.slices(name, incoming=incoming, outgoing=outgoing):
                per_leaf.setdefault(leaf, []).append((axis, idx, m))
            for leaf, axes, idx in self.grouped_slices(name) if outgoing else ():
                per_leaf.setdefault(leaf, []).append((axes, idx, m))
        prefix = self.model.param_prefix

        def mark(path, x):
            p = path_str(path)
            entries = per_leaf.get(p) or per_leaf.get(f"{prefix}/{p}" if prefix else p) or []
            out = jnp.zeros(jnp.shape(x), bool)
            for axis, idx, m in entries:
                hit = jnp.where(idx >= 0, m[np.maximum(idx, 0)], False)
                shape = [1] * out.ndim
                if isinstance(axis, tuple):  # a grouped convolution's (in, out) entries
                    if axis[0] > axis[1]:
                        hit, axis = hit.T, axis[::-1]
                    shape[axis[0]], shape[axis[1]] = hit.shape
                else:
                    shape[axis] = idx.shape[0]
                out = out | jnp.broadcast_to(hit.reshape(shape), out.shape)
            return out

        return jax.tree_util.tree_map_with_path(mark, tree)

    # -- evaluation --------------------------------------------------------------------------
    def apply(self, variables, *args, masks: Mapping | None = None):
        """Evaluates the traced call on ``variables`` and ``args`` (same shapes as traced).

        Args:
          variables: the model's variables (same structure as at tracing).
          *args: the call's arguments.
          masks: ``{unit: multiplier[width]}``, bool or real, multiplied onto each unit's
            channels where they are read (``False``/0 removes a unit, ``True``/1 keeps it,
            other values scale it). May be traced (``vmap`` over masks).

        Returns:
          The model's output.

        Raises:
          ValueError: naming ``masks`` for a non-mapping or an unknown unit (listing the
            model's units), ``masks['unit']`` for a mask whose shape is not ``(width,)`` or
            whose dtype is not bool, integer or float.
        """
        flat = jax.tree.leaves(variables) + jax.tree.leaves(args)
        root_masks = {}
        for name, m in check_mask_names(masks, "masks", self.units).items():
            width = self.units[name].width
            root_masks[self.units[name].root] = check_mask(
                "masks", name, m, (width,), multiplier=True
            )
        outs = run_program(self.analysis, flat, root_masks)
        return jax.tree.unflatten(self._out_tree, outs)

    # -- display -----------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"Graph({self.model.kind}, {len(self.layers)} layers, units={list(self.units)})"

    def __str__(self) -> str:
        rows = [("layer", "op", "in -> out", "unit group", "nonlinearity", "linear chain")]
        for layer in self.layers.values():
            shapes = f"{layer.in_shape} -> {layer.out_shape}"
            group = layer.unit or "-"
            if layer.unit is not None:
                u = self.units[layer.unit]
                what = {"heads": " heads", "kv_groups": " kv groups"}.get(u.kind, "")
                blocks = f" = {u.groups} x {u.width // u.groups}" if u.groups > 1 else ""
                group += f" [{u.width}{what}{blocks}]"
            chain = ("after " + ", ".join(layer.reads_linear)) if layer.reads_linear else ""
            rows.append((layer.name, layer.op, shapes, group, layer.nonlinearity or "-", chain))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _full_tracebacks():
    """Keep whole tracebacks in equations' source info, so errors can name the user's line."""
    try:
        from jax._src import config

        return config.traceback_in_locations_limit(1000)
    except (ImportError, AttributeError):  # pragma: no cover - older/newer JAX
        import contextlib

        return contextlib.nullcontext()


def _state_outputs(adapter, kwargs, out_tree, leaf_paths) -> dict[int, str]:
    """``{output index: leaf path}`` of the outputs that are updated variables.

    A linen call with ``mutable=...`` returns ``(out, updates)``; ``updates`` has the
    variables' own paths (``batch_stats/BatchNorm_0/mean``).
    """
    if adapter.kind != "linen" or not kwargs.get("mutable"):
        return {}
    dummy = jax.tree.unflatten(out_tree, list(range(out_tree.num_leaves)))
    if not isinstance(dummy, tuple) or len(dummy) != 2:
        return {}
    out = {}
    for p, i in jax.tree_util.tree_flatten_with_path(dummy)[0]:
        if p and p[0] == jax.tree_util.SequenceKey(1) and path_str(p[1:]) in leaf_paths:
            out[i] = path_str(p[1:])
    return out


@takes_model
def trace(
    model: Model,
    variables: Variables = None,
    *args: Any,
    model_kwargs: Mapping[str, Any] | None = None,
) -> Graph:
    """Traces a model into its layer graph.

    Args:
      model: a ``flax.linen`` Module, a ``flax.nnx`` Module, an ``equinox`` Module, or a
        function ``f(params, *args)`` (see :func:`~jaxprune.graph.as_model` for how each kind is
        passed).
      variables: the linen variables (every collection) or the function's params;
        omitted for NNX and equinox modules, which hold their state (``trace(module, x)``).
      *args: example arguments (shapes matter; the graph is for these shapes).
      model_kwargs: keyword arguments of the model's own call (``{"train": False}``).

    Returns:
      A :class:`Graph`.

    Raises:
      GraphError: for an operation on a channel path the graph does not understand (naming the
        primitive and the user's source line) or data-dependent control flow.
      ValueError: for an NNX module left in training mode (call ``model.eval()``), linen
        variables lacking a collection the model reads, a linen call updating an immutable
        collection (``train=True``), or a batch given to a per-example equinox module.

    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(3)(x))
    ...         return nn.Dense(2)(h)
    >>> x = jnp.ones((4, 5)); net = Net(); variables = net.init(jax.random.key(0), x)
    >>> g = trace(net, variables, x)
    >>> {name: u.width for name, u in g.units.items()}
    {'Dense_0': 3}
    >>> print(g)  # doctest: +NORMALIZE_WHITESPACE
    layer    op     in -> out         unit group   nonlinearity  linear chain
    -------  -----  ----------------  -----------  ------------  ------------
    Dense_0  dense  (4, 5) -> (4, 3)  Dense_0 [3]  relu
    Dense_1  dense  (4, 3) -> (4, 2)  -            -
    """
    kwargs = check_model_kwargs(model_kwargs)
    adapter = as_model(model, variables)
    if not isinstance(model, ModelAdapter):  # a user's model (rewrites re-trace their own)
        adapter.check_eval_mode()
    flat, treedef = jax.tree_util.tree_flatten_with_path(adapter.variables)
    paths = [path_str(p) for p, _ in flat]
    leaves = [v for _, v in flat]
    arg_leaves, arg_tree = jax.tree.flatten(args)

    out_tree = []

    def f(leaves, arg_leaves):
        v = jax.tree.unflatten(treedef, leaves)
        a = jax.tree.unflatten(arg_tree, arg_leaves)
        out = adapter.apply(v, *a, **kwargs)
        flat_out, tree = jax.tree.flatten(out)
        out_tree.append(tree)
        return flat_out

    try:
        with _full_tracebacks():
            closed = jax.make_jaxpr(f)(leaves, arg_leaves)
    except jax.errors.ConcretizationTypeError as e:
        raise GraphError(
            "the model branches in Python on the values of its inputs or parameters "
            "(data-dependent control flow); jaxprune needs a model that traces with jax.jit"
        ) from e
    program = inline(closed)
    n = len(leaves)
    leaf_of_var = dict(zip(program.invars[:n], paths, strict=True))
    state_outs = _state_outputs(adapter, kwargs, out_tree[0], set(paths))
    analysis = analyze(program, leaf_of_var, program.invars[n:], state_outs=state_outs)
    graph = Graph(adapter, analysis, args, kwargs, paths)
    graph._out_tree = out_tree[0]
    return graph
