"""Average path length (APL), normalized APL and effective width (paper 004, sec. 3.1).

The network is seen at *channel* granularity as a DAG of layer nodes: each node has ``width``
channels, some nodes carry a channel-wise PReLU, and edges are ``"dense"`` (every source channel
feeds every destination channel: a dense layer, or a convolution with ``multiplicity = k * k``)
or ``"identity"`` (channel ``c`` feeds channel ``c``: a shortcut, or an activation applied to a
sum). The path histogram of a node counts the input-to-node paths by their number of *active*
(nonlinear) PReLUs; Proposition 3.1 computes it by dynamic programming, node by node, so the cost
is linear in the number of edges (no path enumeration).

Counts grow like ``width ** depth``; each channel keeps ``(log number of paths, distribution
over lengths)`` in float64, so deep graphs neither overflow nor lose the relative weights that
matter where a residual branch joins the main branch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import numpy as np

from jaxprune._types import Params, UnitMask

__all__ = [
    "Edge",
    "LayerGraph",
    "average_path_length",
    "effective_width",
    "graph_of",
    "linear_units",
    "normalized_average_path_length",
    "path_histogram",
    "residual_graph",
]


class Edge(NamedTuple):
    """A connection between two layer nodes.

    Attributes:
      src: source node name.
      dst: destination node name.
      kind: ``"dense"`` (all-to-all) or ``"identity"`` (channel ``c`` to ``c``; a narrower source
        feeds the first channels only, as the zero-padding shortcut "A").
      multiplicity: parallel connections per channel pair (``k * k`` for a ``k x k`` conv).
    """

    src: str
    dst: str
    kind: str = "dense"
    multiplicity: int = 1


class LayerGraph(NamedTuple):
    """A network's computation graph at channel granularity.

    Attributes:
      widths: ``{node: channels}`` in topological order; the first node is the input, the last
        the output.
      edges: the connections.
      prelu: names of the nodes whose channels pass through a (channel-wise) PReLU.
    """

    widths: dict[str, int]
    edges: tuple[Edge, ...]
    prelu: tuple[str, ...]


def _validate(graph: LayerGraph, active: Mapping[str, object] | None) -> dict[str, np.ndarray]:
    names = list(graph.widths)
    if len(names) < 2:
        raise ValueError("graph: needs at least an input and an output node")
    order = {n: i for i, n in enumerate(names)}
    for e in graph.edges:
        if e.src not in order or e.dst not in order:
            raise ValueError(f"graph: edge {e} names an unknown node; nodes are {names}")
        if order[e.src] >= order[e.dst]:
            raise ValueError(f"graph: edge {e} goes backwards; widths must be in topological order")
        if e.kind not in ("dense", "identity"):
            raise ValueError(f"graph: edge kind {e.kind!r}; expected 'dense' or 'identity'")
        if e.kind == "identity" and graph.widths[e.src] > graph.widths[e.dst]:
            raise ValueError(f"graph: identity edge {e} from a wider node")
        if int(e.multiplicity) < 1:
            raise ValueError(f"graph: edge {e} has multiplicity < 1")
    for n in names[1:]:
        if not any(e.dst == n for e in graph.edges):
            raise ValueError(f"graph: node {n!r} has no incoming edge")
    bad = set(graph.prelu) - set(names[1:-1])
    if bad:
        raise ValueError(f"graph: prelu nodes {sorted(bad)} must be hidden nodes of {names}")
    active = dict(active or {})
    unknown = sorted(set(active) - set(graph.prelu))
    if unknown:
        raise ValueError(f"active: {unknown[0]!r} is not a PReLU node; expected {graph.prelu}")
    out = {}
    for n in graph.prelu:
        a = np.asarray(active.get(n, np.ones(graph.widths[n], bool)), bool)
        if a.shape != (graph.widths[n],):
            raise ValueError(f"active[{n!r}]: expected shape ({graph.widths[n]},), got {a.shape}")
        out[n] = a
    return out


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def path_histogram(
    graph: LayerGraph, active: Mapping[str, object] | None = None, *, normalized: bool = False
) -> tuple[np.ndarray, float]:
    """Distribution of input-to-output paths over their number of active PReLUs (Prop. 3.1).

    For each node in order, a channel's histogram is the sum of its incoming channels'
    histograms (times the edge multiplicity), shifted by one where the channel's PReLU is active.

    ``normalized=True`` (NAPL): every incoming histogram is normalized before summing, so each
    incoming edge of a node (e.g. the main branch and the shortcut of a residual block) weighs
    the same, and within a dense edge each source channel weighs the same. This is a backward
    random walk that picks one incoming edge, then one source channel, uniformly at each node;
    the paper says "follow a random outgoing edge" but implements "normalize the histograms
    before adding them inside a ResBlock", which is what this does. On a plain feed-forward
    chain it equals the unnormalized histogram.

    Args:
      graph: the network's :class:`LayerGraph`.
      active: ``{prelu_node: bool[width]}``; missing nodes are all active (a ReLU network).
      normalized: equal weight per incoming edge (NAPL) instead of per path (APL).

    Returns:
      ``(p, log_paths)``: ``p[k]`` is the fraction (or, normalized, probability) of paths with
      ``k`` active PReLUs, ``k = 0 .. len(graph.prelu)``; ``log_paths`` is the natural log of
      the number of paths (``nan`` when normalized).

    Raises:
      ValueError: a malformed graph, or ``active`` names an unknown node or has a wrong shape.

    A 2-2-1 chain with input width 1, one of two units active: half the paths cross one PReLU.

    >>> g = LayerGraph({"in": 1, "h": 2, "out": 1},
    ...                (Edge("in", "h"), Edge("h", "out")), prelu=("h",))
    >>> p, log_n = path_histogram(g, {"h": [True, False]})
    >>> p.tolist(), round(float(np.exp(log_n)))
    ([0.5, 0.5], 2)

    References:
      Paper 004, sec. 3.1, Proposition 3.1, App. A.1 (normalized histograms).
    """
    act = _validate(graph, active)
    names = list(graph.widths)
    k = len(graph.prelu) + 1
    logc: dict[str, np.ndarray] = {}
    hist: dict[str, np.ndarray] = {}
    w0 = graph.widths[names[0]]
    logc[names[0]] = np.zeros(w0)
    hist[names[0]] = np.zeros((w0, k))
    hist[names[0]][:, 0] = 1.0
    for n in names[1:]:
        c = graph.widths[n]
        terms_log, terms_p = [], []
        for e in graph.edges:
            if e.dst != n:
                continue
            src_l, src_p = logc[e.src], hist[e.src]
            lm = np.log(float(e.multiplicity))
            l_e = np.full(c, -np.inf)
            p_e = np.zeros((c, k))
            if e.kind == "dense":
                if normalized:
                    l_e[:], p_e[:] = 0.0, src_p.mean(axis=0)
                else:
                    total = _logsumexp(src_l, 0)
                    l_e[:] = total + lm
                    p_e[:] = np.exp(src_l - total) @ src_p
            else:
                s = src_p.shape[0]
                l_e[:s] = 0.0 if normalized else src_l + lm
                p_e[:s] = src_p
            terms_log.append(l_e)
            terms_p.append(p_e)
        tl, tp = np.stack(terms_log), np.stack(terms_p)  # (edges, c), (edges, c, k)
        if normalized:
            reach = np.isfinite(tl).astype(float)
            p = np.einsum("ec,eck->ck", reach, tp) / reach.sum(0)[:, None]
            lc = np.zeros(c)
        else:
            lc = _logsumexp(tl, 0)
            p = np.einsum("ec,eck->ck", np.exp(tl - lc), tp)
        if n in act:
            shifted = np.concatenate([np.zeros((c, 1)), p[:, :-1]], axis=1)
            p = np.where(act[n][:, None], shifted, p)
        logc[n], hist[n] = lc, p
    last = names[-1]
    if normalized:
        return hist[last].mean(axis=0), float("nan")
    total = _logsumexp(logc[last], 0)
    return np.exp(logc[last] - total) @ hist[last], float(total)


def average_path_length(graph: LayerGraph, active: Mapping[str, object] | None = None) -> float:
    """APL: the mean number of active PReLUs over all input-to-output paths.

    >>> g = residual_graph(1, (2, 2), block_size=1, out=1)
    >>> round(average_path_length(g), 4)  # 18 paths: 8 cross 3 PReLUs, 8 cross 2, 2 cross 1
    2.3333

    References:
      Paper 004, sec. 3.1 (APL), Proposition 3.1.
    """
    p, _ = path_histogram(graph, active)
    return float(np.arange(p.size) @ p)


def normalized_average_path_length(
    graph: LayerGraph, active: Mapping[str, object] | None = None
) -> float:
    """NAPL: mean active PReLUs when main branch and shortcut weigh the same at every join.

    >>> g = residual_graph(1, (2, 2), block_size=1, out=1)
    >>> round(normalized_average_path_length(g), 4)
    2.0

    References:
      Paper 004, sec. 3.1 (normalized average path length), App. A.1.
    """
    p, _ = path_histogram(graph, active, normalized=True)
    return float(np.arange(p.size) @ p)


def effective_width(active: Mapping[str, object]) -> float:
    """ENW: the number of active PReLUs per layer, averaged over the PReLU layers.

    >>> effective_width({"prelu_0": [True, True, False], "prelu_1": [False, True, False]})
    1.5

    References:
      Paper 004, sec. 3.1 (effective network width).
    """
    if not active:
        raise ValueError("active: expected at least one PReLU layer")
    return float(np.mean([np.sum(np.asarray(a, bool)) for a in active.values()]))


def linear_units(params: Params, threshold: float = 0.99, slope_key: str = "slope") -> UnitMask:
    """``{layer: bool[width]}``, True where a PReLU slope is ``> threshold`` (inactive, linear).

    >>> import jax.numpy as jnp
    >>> linear_units({"prelu_0": {"slope": jnp.array([0.0, 1.0, 0.995])}})["prelu_0"].tolist()
    [False, True, True]

    References:
      Paper 004, sec. 4 ("inactive and frozen if their slope is higher than 0.99").
    """
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        if len(keys) > 1 and keys[-1] == slope_key:
            out["/".join(keys[:-1])] = np.asarray(leaf) > threshold
    if not out:
        raise ValueError(f"params: no leaf named {slope_key!r}")
    return out


def residual_graph(
    in_features: int,
    widths: Sequence[int],
    *,
    block_size: int = 2,
    out: int = 10,
    shortcut: bool = True,
    multiplicity: int = 1,
) -> LayerGraph:
    """The graph of a pre-activation residual network; node names match :class:`PReLUResMLP`.

    ``input -> stem`` (dense, no PReLU); block ``b`` of width ``widths[b]``:
    ``prelu_{b}_0`` (identity edge from the block input: the PReLU acts on the running sum),
    ``prelu_{b}_{j}`` (dense from ``prelu_{b}_{j-1}``), then ``add_{b}`` (dense from the last
    PReLU, plus an identity shortcut from the block input when ``shortcut``; a narrower input
    feeds the first channels, the zero-padding shortcut "A"); ``prelu_final`` (identity) and
    ``out`` (dense). ``multiplicity`` is applied to the block layers (9 for 3x3 convolutions).

    ``widths = [16] * 9 + [32] * 9 + [64] * 9`` with ``block_size=2`` is ResNet56's graph.

    >>> g = residual_graph(3, (4, 4), out=2)
    >>> len(g.prelu), len(g.edges)
    (5, 11)

    References:
      Paper 004, sec. 4, App. A (Fig. 12/13), App. C.1 (BasicBlock v2, shortcut option "A").
    """
    if not widths or any(int(w) < 1 for w in widths):
        raise ValueError(f"widths: expected positive block widths, got {widths}")
    if int(block_size) < 1:
        raise ValueError(f"block_size: must be >= 1, got {block_size}")
    nodes = {"input": int(in_features), "stem": int(widths[0])}
    edges = [Edge("input", "stem")]
    prelus = []
    prev = "stem"
    for b, w in enumerate(widths):
        for j in range(block_size):
            name = f"prelu_{b}_{j}"
            nodes[name] = int(nodes[prev]) if j == 0 else int(w)
            edges.append(
                Edge(
                    prev if j == 0 else f"prelu_{b}_{j - 1}",
                    name,
                    "identity" if j == 0 else "dense",
                    1 if j == 0 else multiplicity,
                )
            )
            prelus.append(name)
        nodes[f"add_{b}"] = int(w)
        edges.append(Edge(f"prelu_{b}_{block_size - 1}", f"add_{b}", "dense", multiplicity))
        if shortcut:
            if nodes[prev] > w:
                raise ValueError(
                    f"widths: block {b} is narrower than its input ({w} < "
                    f"{nodes[prev]}); shortcut 'A' needs non-decreasing widths"
                )
            edges.append(Edge(prev, f"add_{b}", "identity"))
        prev = f"add_{b}"
    nodes["prelu_final"] = nodes[prev]
    edges.append(Edge(prev, "prelu_final", "identity"))
    nodes["output"] = int(out)
    edges.append(Edge("prelu_final", "output"))
    return LayerGraph(nodes, tuple(edges), (*prelus, "prelu_final"))


def graph_of(model, in_features: int) -> LayerGraph:
    """The :class:`LayerGraph` of a ``PReLUMLP`` (skips included), ``PReLUResMLP`` or ``MLP``.

    PReLU node names are the slope layer names (``prelu_{i}``; for an ``MLP`` its ReLU layers
    ``relu_{i}``, all active), so masks from :func:`linear_units` or
    :class:`~jaxprune.transforms.SlopeSparsityState` plug in directly (negated).

    >>> import jaxprune as jp
    >>> g = graph_of(jp.models.PReLUMLP(hidden=(4, 4), skips=((0, 2),)), 3)
    >>> list(g.widths), g.prelu
    (['input', 'prelu_0', 'prelu_1', 'output'], ('prelu_0', 'prelu_1'))

    References:
      Paper 004, sec. 3.1.
    """
    from jaxprune.models.mlp import MLP
    from jaxprune.models.prelu import PReLUMLP, PReLUResMLP

    if isinstance(model, PReLUResMLP):
        return residual_graph(
            in_features,
            (model.width,) * model.blocks,
            block_size=model.block_size,
            out=model.out,
            shortcut=model.shortcut,
        )
    if isinstance(model, PReLUMLP | MLP):
        is_mlp = isinstance(model, MLP)
        if is_mlp and model.linear_after and any(model.linear_after):
            raise ValueError("model: collapse its linear layers first (jaxprune.collapse)")
        prefix = "relu" if is_mlp else "prelu"
        hidden = [f"{prefix}_{i}" for i in range(len(model.hidden))]
        names = ["input", *hidden, "output"]
        widths = [int(in_features), *map(int, model.hidden), int(model.out)]
        edges = [Edge(names[i], names[i + 1]) for i in range(len(names) - 1)]
        edges += [Edge(names[a], names[b]) for a, b in getattr(model, "skips", ())]
        return LayerGraph(dict(zip(names, widths, strict=True)), tuple(edges), tuple(hidden))
    raise TypeError(f"model: expected MLP, PReLUMLP or PReLUResMLP, got {type(model).__name__}")
