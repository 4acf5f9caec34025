"""Average path length (APL), normalized APL and effective width (paper 004, sec. 3.1).

The traced graph (:func:`jaxprune.trace`) records the network's data flow at *channel*
granularity: layers (every output channel sums every input channel, ``k * k`` times for a
``k x k`` conv), residual adds (both shortcut kinds: a zero-padded "A" shortcut feeds the first
channels of the sum, a 1x1 projection "B" is a layer), concatenation, flatten, and the
nonlinearity sites. A path's effective length is the number of *active* nonlinearities it
crosses; a unit whose mask entry is False is linear (a PReLU with slope 1), so crossing it
counts 0. Norms, pooling and scalings keep the channels (the paper ignores them); max-pooling is
a nonlinearity that is always active; nonlinearities on the model's input or output channels
(not units) are not counted.

The path histogram of each channel is computed by dynamic programming in one pass over the
recorded DAG (Proposition 3.1), so the cost is linear in its size. Counts grow like
``width ** depth``; each channel keeps ``(log number of paths, distribution over lengths)`` in
float64, so deep graphs neither overflow nor lose the relative weights of joined branches.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxprune._types import Params
from jaxprune.graph import Graph
from jaxprune.graph.extend import check_mask

__all__ = [
    "average_path_length",
    "effective_width",
    "linear_units",
    "normalized_average_path_length",
    "path_histogram",
    "units_from_param_masks",
]


def _lse(a: np.ndarray, axis: int = 0) -> np.ndarray:
    if a.shape[axis] == 0:
        return np.squeeze(np.full_like(a[:1] if axis == 0 else a[:, :1], -np.inf), axis)
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _site_activity(graph: Graph, node, masks) -> np.ndarray | None:
    """Per channel of a site: shift the histogram (True) or not; None if not a unit's site."""
    units, by_param = masks
    if node.pool:
        return np.ones(node.width, bool)
    for leaf in node.params:
        layer = _param_layer(graph, leaf)
        if layer in by_param:
            return by_param[layer]
    an = graph.analysis
    parts, any_unit = [], False
    for s, a, b in node.segs:
        root, start = an.locate(s)
        unit = graph._unit_of_root.get(root)
        if unit is None:
            parts.append(np.zeros(b - a, bool))
        else:
            any_unit = True
            parts.append(units[unit][start + a : start + b])
    return np.concatenate(parts) if any_unit else None


def _param_layer(graph: Graph, leaf: str) -> str:
    return graph.model.short(leaf).rpartition("/")[0]


def _masks(graph: Graph, active: Mapping | None):
    """``({unit: bool[width]}, {activation parameter layer: bool[width]})``."""
    if active is not None and not isinstance(active, Mapping):
        raise ValueError(
            f"active: expected a mapping {{unit: bool[width]}}, got {type(active).__name__}"
        )
    active = dict(active or {})
    sites = {}
    for n in graph.analysis.paths:
        if n.kind == "site":
            for leaf in n.params:
                sites[_param_layer(graph, leaf)] = n.width
    by_param = {}
    for name in [k for k in active if k in sites and k not in graph.units]:
        by_param[name] = np.asarray(check_mask("active", name, active.pop(name), (sites[name],)))
    unknown = sorted(set(active) - set(graph.units))
    if unknown:
        raise ValueError(
            f"active: unknown unit(s) {unknown}; the model's units are {list(graph.units)}"
            + (f" and its activations' parameter layers {sorted(sites)}" if sites else "")
        )
    given = graph.check_units(active, "active", fill=False)
    units = {
        name: np.asarray(given[name]) if name in given else np.ones(u.width, bool)
        for name, u in graph.units.items()
    }
    return units, by_param


def _reachable(graph: Graph) -> set[int]:
    paths = graph.analysis.paths
    stack = [p for p in graph.analysis.output_paths if p is not None]
    seen: set[int] = set()
    while stack:
        p = stack.pop()
        if p not in seen:
            seen.add(p)
            stack.extend(paths[p].srcs)
    return seen


def _layer_counts(ls, ps, w, k, mult, normalized):
    """Log path counts and histograms of ``w`` outputs each summing every input."""
    reach = np.isfinite(ls)
    if not reach.any():
        lc, row = np.full(w, -np.inf), np.zeros(k)
    elif normalized:
        lc, row = np.zeros(w), ps[reach].mean(axis=0)
    else:
        total = _lse(ls)
        lc, row = np.full(w, total + np.log(mult)), np.exp(ls - total) @ ps
    return lc, np.broadcast_to(row, (w, k))


def path_histogram(
    graph: Graph, active: Mapping | None = None, *, normalized: bool = False
) -> tuple[np.ndarray, float]:
    """Distribution of input-to-output paths over their number of active nonlinearities.

    ``normalized=True`` (NAPL): the histograms are normalized before they are summed, so each
    operand of a residual add weighs the same, and within a layer each reached input channel
    weighs the same: a backward random walk that picks one incoming edge uniformly at each
    node (App. A.1: "normalize the histograms before adding them inside a ResBlock"). On a
    plain feed-forward chain it equals the unnormalized histogram.

    Args:
      graph: the traced model (:func:`jaxprune.trace`).
      active: ``{unit: bool[width]}``; False marks a linear (inactive) unit. Missing units are
        all active (a ReLU network). A key may also name the parameter layer of one
        activation (a PReLU's ``"prelu_1"``, whose slope multiplies inside the activation):
        its mask then applies to that activation only, e.g. each block's PReLU on a residual
        stream, where the unit (the stream's channels) enters several PReLUs.
      normalized: equal weight per incoming edge (NAPL) instead of per path (APL).

    Returns:
      ``(p, log_paths)``: ``p[k]`` is the fraction (or, normalized, probability) of paths with
      ``k`` active nonlinearities; ``log_paths`` is the natural log of the number of paths
      (``nan`` when normalized).

    Raises:
      ValueError: ``active`` names an unknown unit or activation, or has a wrong shape or dtype.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxprune as jp
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(2)(x))
    ...         return nn.Dense(1)(h)
    >>> x = jnp.ones((1, 1)); g = jp.trace(Net(), Net().init(jax.random.key(0), x), x)
    >>> p, log_n = path_histogram(g, {"Dense_0": jnp.array([True, False])})
    >>> p.tolist(), round(float(np.exp(log_n)))
    ([0.5, 0.5], 2)

    References:
      Paper 004, sec. 3.1, Proposition 3.1, App. A.1 (normalized histograms).
    """
    masks = _masks(graph, active)
    paths = graph.analysis.paths
    k = 1 + sum(n.kind == "site" for n in paths)
    logc: list[np.ndarray] = []
    hist: list[np.ndarray] = []
    for n in paths:
        w = n.width
        src_l = [logc[s] for s in n.srcs]
        src_p = [hist[s] for s in n.srcs]
        if n.kind == "input":
            lc, p = np.zeros(w), np.zeros((w, k))
            p[:, 0] = 1.0
        elif n.kind == "zero":
            lc, p = np.full(w, -np.inf), np.zeros((w, k))
        elif n.kind == "layer":  # a grouped conv: block j of the outputs reads block j
            g = n.groups
            parts = [
                _layer_counts(ls, ps, w // g, k, n.mult, normalized)
                for ls, ps in zip(np.split(src_l[0], g), np.split(src_p[0], g, axis=0), strict=True)
            ]
            lc = np.concatenate([a for a, _ in parts])
            p = np.concatenate([b for _, b in parts])
        elif n.kind == "scale":
            lc, p = src_l[0], src_p[0]
        elif n.kind == "chan":
            lc = src_l[0] if normalized else src_l[0] + np.log(n.mult)
            p = src_p[0]
        elif n.kind == "sum":
            tl, tp = np.stack(src_l), np.stack(src_p)
            if normalized:
                reach = np.isfinite(tl).astype(float)
                cnt = reach.sum(0)
                p = np.einsum("ec,eck->ck", reach, tp) / np.maximum(cnt, 1)[:, None]
                lc = np.where(cnt > 0, 0.0, -np.inf)
            else:
                lc = _lse(tl)
                with np.errstate(invalid="ignore"):
                    wts = np.nan_to_num(np.exp(tl - lc))
                p = np.einsum("ec,eck->ck", wts, tp)
        elif n.kind == "site":
            lc, p = src_l[0], src_p[0]
            act = _site_activity(graph, n, masks)
            if act is not None:
                shifted = np.concatenate([np.zeros((w, 1)), p[:, :-1]], axis=1)
                p = np.where(act[:, None], shifted, p)
        elif n.kind == "concat":
            lc, p = np.concatenate(src_l), np.concatenate(src_p)
        elif n.kind == "slice":
            lc, p = src_l[0][n.start : n.start + w], src_p[0][n.start : n.start + w]
        else:  # pragma: no cover - every kind is handled above
            raise AssertionError(n.kind)
        logc.append(lc)
        hist.append(p)
    outs = [p for p in graph.analysis.output_paths if p is not None]
    if not outs:
        raise ValueError("graph: the model's outputs carry no channels; no paths to count")
    lo = np.concatenate([logc[p] for p in outs])
    ho = np.concatenate([hist[p] for p in outs])
    reach = np.isfinite(lo)
    if normalized:
        return ho[reach].mean(axis=0), float("nan")
    total = _lse(lo)
    return np.exp(lo[reach] - total) @ ho[reach], float(total)


def average_path_length(graph: Graph, active: Mapping | None = None) -> float:
    """APL: the mean number of active nonlinearities over all input-to-output paths.

    Args:
      graph: the traced model (:func:`jaxprune.trace`).
      active: ``{unit: bool[width]}`` (False: linear unit); missing units are all active.

    A ReLU MLP with two hidden layers: every path crosses two nonlinearities.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxprune as jp
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(3)(x))
    ...         h = nn.relu(nn.Dense(2)(h))
    ...         return nn.Dense(1)(h)
    >>> x = jnp.ones((1, 4)); g = jp.trace(Net(), Net().init(jax.random.key(0), x), x)
    >>> round(average_path_length(g), 6)
    2.0
    >>> round(average_path_length(g, {"Dense_1": jnp.array([True, False])}), 6)
    1.5

    References:
      Paper 004, sec. 3.1 (APL), Proposition 3.1.
    """
    p, _ = path_histogram(graph, active)
    return float(np.arange(p.size) @ p)


def normalized_average_path_length(graph: Graph, active: Mapping | None = None) -> float:
    """NAPL: mean active nonlinearities when the operands of every join weigh the same.

    Args:
      graph: the traced model (:func:`jaxprune.trace`).
      active: ``{unit: bool[width]}`` (False: linear unit); missing units are all active.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxprune as jp
    >>> class Res(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.Dense(2)(x)
    ...         h = h + nn.Dense(2)(nn.relu(h))
    ...         return nn.Dense(1)(h)
    >>> x = jnp.ones((1, 1)); g = jp.trace(Res(), Res().init(jax.random.key(0), x), x)
    >>> round(normalized_average_path_length(g), 6), round(average_path_length(g), 6)
    (0.5, 0.666667)

    References:
      Paper 004, sec. 3.1 (normalized average path length), App. A.1.
    """
    p, _ = path_histogram(graph, active, normalized=True)
    return float(np.arange(p.size) @ p)


def effective_width(graph: Graph, active: Mapping | None = None) -> float:
    """ENW: the number of active units per nonlinearity layer, averaged over those layers.

    Each nonlinearity site on the way to the output is one layer (a residual group's channels
    enter one ReLU per block); max-pooling is not counted.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxprune as jp
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(3)(x))
    ...         h = nn.relu(nn.Dense(2)(h))
    ...         return nn.Dense(1)(h)
    >>> x = jnp.ones((1, 4)); g = jp.trace(Net(), Net().init(jax.random.key(0), x), x)
    >>> effective_width(g, {"Dense_0": jnp.array([True, True, False])})
    2.0

    References:
      Paper 004, sec. 3.1 (effective network width).
    """
    masks = _masks(graph, active)
    paths = graph.analysis.paths
    counts = []
    for i in sorted(_reachable(graph)):
        n = paths[i]
        if n.kind == "site" and not n.pool:
            act = _site_activity(graph, n, masks)
            if act is not None:
                counts.append(int(act.sum()))
    if not counts:
        raise ValueError("graph: the model has no nonlinearity on its units")
    return float(np.mean(counts))


def units_from_param_masks(
    graph: Graph, masks: Mapping, leaf: str = "slope"
) -> dict[str, np.ndarray]:
    """Moves masks keyed by a per-channel parameter's layer onto the units it scales.

    Args:
      graph: the traced model.
      masks: ``{layer: bool[width]}`` over the entries of ``layer/leaf`` (``{"prelu_0": ...}``,
        as :class:`~jaxprune.transforms.SlopeSparsityState` keys them).
      leaf: the parameter's leaf name.

    Returns:
      ``{unit: bool[width]}`` for the units those parameters act on (unlisted units absent).

    Raises:
      ValueError: a layer whose ``leaf`` acts on no unit's channels.

    Where several such layers act on one unit (each block's PReLU on a residual stream), the
    last one wins; the path-length functions also take the layers' masks directly.
    """
    out: dict[str, np.ndarray] = {}
    found = set()
    for name in graph.units:
        for path, _, idx in graph.slices(name, outgoing=False):
            short = graph.model.short(path)
            layer, _, last = short.rpartition("/")
            if last != leaf or layer not in masks:
                continue
            m = np.asarray(masks[layer], bool)
            cur = out.setdefault(name, np.zeros(graph.units[name].width, bool))
            ok = idx >= 0
            cur[idx[ok]] = m[np.nonzero(ok)[0] % m.shape[0]]
            found.add(layer)
    missing = sorted(set(masks) - found)
    if missing:
        raise ValueError(f"masks: {missing} scale no unit's channels (leaf {leaf!r})")
    return out


def linear_units(
    graph: Graph, params: Params, threshold: float = 0.99, leaf: str = "slope"
) -> dict[str, np.ndarray]:
    """``{unit: bool[width]}``, True where the unit's PReLU slope is ``> threshold`` (linear).

    ``active=`` of the path-length functions is its negation.

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> net = jp.models.PReLUMLP(hidden=(3,), out=1); x = jnp.ones((1, 2))
    >>> v = net.init(jax.random.key(0), x)
    >>> v["params"]["prelu_0"]["slope"] = jnp.array([0.0, 1.0, 0.995])
    >>> g = jp.trace(net, v, x)
    >>> {k: m.tolist() for k, m in linear_units(g, v["params"]).items()}
    {'dense_0': [False, True, True]}

    References:
      Paper 004, sec. 4 ("inactive and frozen if their slope is higher than 0.99").
    """
    import jax

    masks = {}
    for path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        if len(keys) > 1 and keys[-1] == leaf:
            masks["/".join(keys[:-1])] = np.asarray(value) > threshold
    if not masks:
        raise ValueError(f"params: no leaf named {leaf!r}")
    return units_from_param_masks(graph, masks, leaf)
