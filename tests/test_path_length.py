import time

import numpy as np
import pytest

import jaxprune as jp
from jaxprune.analysis import (
    Edge,
    LayerGraph,
    average_path_length,
    effective_width,
    graph_of,
    normalized_average_path_length,
    path_histogram,
    residual_graph,
)


def brute_force(graph, active, normalized):
    """Enumerates every unit-level path; returns (mean active count, number of paths)."""
    names = list(graph.widths)
    act = {n: np.asarray(active.get(n, np.ones(graph.widths[n], bool))) for n in graph.prelu}

    def paths(n, c):  # list of (weight, active PReLUs) of paths input -> unit (n, c)
        if n == names[0]:
            return [(1.0, 0)]
        edges = [
            e for e in graph.edges if e.dst == n and (e.kind == "dense" or c < graph.widths[e.src])
        ]
        own = int(n in act and act[n][c])
        out = []
        for e in edges:
            srcs = range(graph.widths[e.src]) if e.kind == "dense" else [c]
            for u in srcs:
                for w, k in paths(e.src, u):
                    if normalized:
                        out.append((w / len(edges) / len(srcs), k + own))
                    else:
                        out.append((w * e.multiplicity, k + own))
        return out

    last = names[-1]
    every = [p for c in range(graph.widths[last]) for p in paths(last, c)]
    w = np.array([p[0] for p in every])
    k = np.array([p[1] for p in every])
    return float(w @ k / w.sum()), float(w.sum())


def random_graph(rng):
    n = int(rng.integers(3, 6))
    names = ["in", *[f"h{i}" for i in range(n - 2)], "out"]
    widths = {m: int(rng.integers(1, 4)) for m in names}
    edges = [Edge(names[i], names[i + 1], "dense", int(rng.integers(1, 3))) for i in range(n - 1)]
    for a in range(n):
        for b in range(a + 2, n):
            if rng.random() < 0.5:
                kind = (
                    "identity"
                    if widths[names[a]] <= widths[names[b]] and rng.random() < 0.5
                    else "dense"
                )
                edges.append(Edge(names[a], names[b], kind, int(rng.integers(1, 3))))
    prelu = tuple(m for m in names[1:-1] if rng.random() < 0.8)
    active = {m: rng.random(widths[m]) < 0.6 for m in prelu}
    return LayerGraph(widths, tuple(edges), prelu), active


@pytest.mark.parametrize("seed", range(12))
def test_dp_matches_brute_force_on_random_graphs(seed):
    graph, active = random_graph(np.random.default_rng(seed))
    for normalized in (False, True):
        expected, n_paths = brute_force(graph, active, normalized)
        p, log_n = path_histogram(graph, active, normalized=normalized)
        assert p.sum() == pytest.approx(1.0)
        assert float(np.arange(p.size) @ p) == pytest.approx(expected, rel=1e-10, abs=1e-12)
        if not normalized:
            assert np.exp(log_n) == pytest.approx(n_paths, rel=1e-10)


def test_plain_chain_apl_equals_napl_and_counts_active_layers():
    model = jp.models.PReLUMLP(hidden=(3, 4, 2), out=2)
    graph = graph_of(model, 5)
    assert average_path_length(graph) == pytest.approx(3.0)
    active = {
        "prelu_0": [True, False, False],
        "prelu_1": [True, True, True, True],
        "prelu_2": [False, False],
    }
    # layer 0 contributes 1/3 on average, layer 1 always 1, layer 2 never
    assert average_path_length(graph, active) == pytest.approx(1 + 1 / 3)
    assert normalized_average_path_length(graph, active) == pytest.approx(1 + 1 / 3)


def test_residual_hand_computed_and_no_shortcut_is_depth():
    g = residual_graph(1, (2, 2), block_size=1, out=1)
    # 18 paths: 8 of length 3, 8 of length 2, 2 of length 1 (enumerated by hand)
    assert average_path_length(g) == pytest.approx((8 * 3 + 8 * 2 + 2) / 18)
    assert normalized_average_path_length(g) == pytest.approx(2.0)
    ns = residual_graph(1, (2, 2, 2), block_size=2, out=1, shortcut=False)
    assert average_path_length(ns) == pytest.approx(7.0)
    assert normalized_average_path_length(ns) == pytest.approx(7.0)


def test_napl_of_residual_net_is_half_its_blocks_plus_final():
    # each block of size 1: the shortcut and the main branch weigh 1/2 each, so every block adds
    # 1/2 on average, plus the final PReLU
    g = residual_graph(2, (3,) * 10, block_size=1, out=1)
    assert normalized_average_path_length(g) == pytest.approx(10 / 2 + 1)
    # unnormalized: per block the dense main branch has 3 paths per channel, the shortcut 1, so a
    # block adds 3/4 on average
    assert average_path_length(g) == pytest.approx(10 * 3 / 4 + 1)


def test_linearized_units_shorten_paths():
    g = graph_of(jp.models.PReLUResMLP(width=3, blocks=2, out=2), 4)
    full = average_path_length(g)
    active = {n: np.ones(g.widths[n], bool) for n in g.prelu}
    active["prelu_1_0"] = np.array([False, False, True])
    assert average_path_length(g, active) < full
    active = {n: np.zeros(g.widths[n], bool) for n in g.prelu}
    assert average_path_length(g, active) == 0.0
    assert normalized_average_path_length(g, active) == 0.0


def test_resnet56_graph_is_fast_and_finite():
    g = residual_graph(3, [16] * 9 + [32] * 9 + [64] * 9, block_size=2, out=10, multiplicity=9)
    start = time.perf_counter()
    apl = average_path_length(g)
    napl = normalized_average_path_length(g)
    assert time.perf_counter() - start < 1.0
    assert 0 < napl < apl <= len(g.prelu)
    # a deeper, wider graph has more paths than float64 can count (~(9 * 256) ** 108);
    # the log-scale DP still gives a finite APL
    deep = residual_graph(3, [256] * 54, block_size=2, out=10, multiplicity=9)
    p, log_n = path_histogram(deep)
    assert log_n > np.log(np.finfo(np.float64).max)
    assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0)


def test_effective_width():
    assert effective_width({"a": [True, True, True, False], "b": [True, False]}) == 2.0
    with pytest.raises(ValueError, match="active"):
        effective_width({})


def test_bad_inputs():
    g = residual_graph(1, (2,), block_size=1, out=1)
    with pytest.raises(ValueError, match="active: 'nope'"):
        average_path_length(g, {"nope": [True]})
    with pytest.raises(ValueError, match=r"active\['prelu_0_0'\]: expected shape"):
        average_path_length(g, {"prelu_0_0": [True]})
    bad = LayerGraph({"a": 1, "b": 1}, (Edge("b", "a"),), ())
    with pytest.raises(ValueError, match="backwards"):
        average_path_length(bad)
    with pytest.raises(TypeError, match="model"):
        graph_of(object(), 2)
