"""Redundancy: connected components, similarity hand cases, redundant_units by unit on any
model (a planted copy found in every zoo model), circular conv kernels, bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zoo import ZOO

import jaxprune as jp
from jaxprune.analysis import redundancy_groups, redundant_units, unit_similarity


def _components(adj: np.ndarray) -> list[int]:
    """Brute force: label = smallest index reachable by BFS."""
    n, labels = len(adj), [-1] * len(adj)
    for s in range(n):
        if labels[s] >= 0:
            continue
        stack = [s]
        while stack:
            i = stack.pop()
            if labels[i] < 0:
                labels[i] = s
                stack += [j for j in range(n) if adj[i, j] and labels[j] < 0]
    return labels


GROUPS = jax.jit(redundancy_groups)


@settings(max_examples=15)
@given(st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_groups_are_connected_components(n, seed):
    rng = np.random.default_rng(seed)
    sim = rng.uniform(-1, 1, (n, n))
    sim = np.where(rng.uniform(size=(n, n)) < 0.2, 0.995, sim)
    sim = np.triu(sim, 1) + np.triu(sim, 1).T + np.eye(n)
    got = np.asarray(GROUPS(jnp.asarray(sim, jnp.float32), 0.99)).tolist()
    assert got == _components(sim >= 0.99)


def test_chains_link_units_that_are_not_similar_themselves():
    # Unit 0 ~ unit 1 (>= 0.99) and 1 ~ 2, but 0 and 2 are only 0.98 similar: one group.
    a = np.deg2rad(0)
    b = np.arccos(0.9925)
    vecs = np.array([[np.cos(t), np.sin(t)] for t in (a, b, 2 * b)])
    sim = np.asarray(unit_similarity(jnp.asarray(vecs.T)))
    assert sim[0, 1] >= 0.99 and sim[1, 2] >= 0.99 and sim[0, 2] < 0.99
    assert redundancy_groups(sim).tolist() == [0, 0, 0]


def test_similarity_hand_cases_bias_included_and_zero_units():
    kernel = jnp.array([[1.0, 2.0, -1.0, 0.0, 1.0]])
    bias = jnp.array([1.0, 2.0, -1.0, 0.0, -1.0])
    sim = np.asarray(unit_similarity(kernel, bias))
    np.testing.assert_allclose(sim[0], [1, 1, -1, 0, 0], atol=1e-6)  # scaled, negated, zero, orth.
    assert sim[3, 3] == 0  # an all-zero unit is similar to nothing


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(4)(x))
        return nn.Dense(1)(h)


class Conv(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(3, (3, 3), padding="SAME")(x))
        return nn.Dense(1)(h.reshape((h.shape[0], -1)))


def test_kept_member_is_highest_score_then_lowest_index():
    p = {
        "Dense_0": {"kernel": jnp.array([[1.0, 2.0, 3.0, 0.0]]), "bias": jnp.array([1, 2, 3, 1.0])},
        "Dense_1": {"kernel": jnp.ones((4, 1)), "bias": jnp.zeros(1)},
    }
    v, x = {"params": p}, jnp.ones((2, 1))
    assert redundant_units(Net(), v, x)["Dense_0"].tolist() == [False, True, True, False]
    scores = {"Dense_0": jnp.array([1.0, 5.0, 5.0, 9.0])}
    got = redundant_units(Net(), v, x, scores=scores)["Dense_0"]
    assert got.tolist() == [True, False, True, False]
    jitted = jax.jit(lambda v, s: redundant_units(Net(), v, x, 0.99, scores=s))(v, scores)
    assert jitted["Dense_0"].tolist() == [True, False, True, False]


def test_circularly_permuted_kernels_are_redundant_only_with_circular():
    k = jax.random.normal(jax.random.key(0), (3, 3, 2, 1))
    kernel = jnp.concatenate(
        [k, jnp.roll(k, (1, 2), axis=(0, 1)), jax.random.normal(jax.random.key(1), (3, 3, 2, 1))],
        axis=-1,
    )
    bias = jnp.array([0.3, 0.3, 0.3])
    plain = np.asarray(unit_similarity(kernel, bias))
    circ = np.asarray(unit_similarity(kernel, bias, circular=True))
    assert plain[0, 1] < 0.9 and circ[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert circ[0, 2] < 0.9 and circ[1, 2] < 0.9
    np.testing.assert_allclose(circ, circ.T, atol=1e-6)
    params = {
        "Conv_0": {"kernel": kernel, "bias": bias},
        "Dense_0": {"kernel": jnp.ones((3 * 16, 1)), "bias": jnp.zeros(1)},
    }
    v, x = {"params": params}, jnp.ones((1, 4, 4, 2))
    assert redundant_units(Conv(), v, x)["Conv_0"].tolist() == [False, False, False]
    assert redundant_units(Conv(), v, x, circular=True)["Conv_0"].tolist() == [False, True, False]


def _with_copies(graph, variables):
    """In every unit group, unit 1 := 3 x unit 0 through every slice that writes it: layer
    kernels and biases x3; a BatchNorm's mean x3 and var + eps x9 (its scale and shift kept,
    so its output is unit 0's); a depthwise filter kept and its bias x3."""
    leaves = dict(graph.model.leaves(variables))
    depthwise = {layer.kernel for layer in graph.layers.values() if layer.op == "depthwise_conv"}
    norms = {leaf.rsplit("/", 1)[0].split("/", 1)[-1] for leaf in leaves if leaf.endswith("/var")}
    for unit in graph.units:
        for leaf, axis, idx in graph.slices(unit, incoming=True, outgoing=False):
            parent, last = leaf.rsplit("/", 1) if "/" in leaf else ("", leaf)
            a = jnp.moveaxis(leaves[leaf], axis, 0)
            i0, i1 = int(np.flatnonzero(idx == 0)[0]), int(np.flatnonzero(idx == 1)[0])
            if parent.split("/", 1)[-1] in norms:
                new = {"mean": 3 * a[i0], "var": 9 * (a[i0] + 1e-5) - 1e-5}.get(last, a[i0])
            elif leaf in depthwise:
                new = a[i0]
            else:
                new = 3 * a[i0]
            leaves[leaf] = jnp.moveaxis(a.at[i1].set(new), 0, axis)
    tree = jax.tree.structure(variables)
    return jax.tree.unflatten(tree, list(leaves.values()))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model_finds_a_planted_copy_by_unit(name):
    case = ZOO[name]()
    graph = jp.trace(case.model, case.variables, case.x, model_kwargs=case.kwargs)
    v = graph.model.variables
    plain = redundant_units(graph, v)
    assert {k: m.shape for k, m in plain.items()} == {k: (w,) for k, w in case.units.items()}
    assert not any(m.any() for m in plain.values())  # random init: no pair >= 0.99
    got = redundant_units(graph, _with_copies(graph, v))
    expected = {k: [False, True] + [False] * (w - 2) for k, w in case.units.items()}
    assert {k: m.tolist() for k, m in got.items()} == expected


def test_redundant_units_bad_input():
    v, x = {"params": Net().init(jax.random.key(0), jnp.ones((1, 1)))["params"]}, jnp.ones((1, 1))
    with pytest.raises(ValueError, match="threshold: expected a value in"):
        redundant_units(Net(), v, x, 0.0)
    with pytest.raises(ValueError, match=r"scores: unknown unit\(s\) \['relu_0'\]"):
        redundant_units(Net(), v, x, scores={"relu_0": jnp.ones(4)})
    with pytest.raises(ValueError, match=r"scores\['Dense_0'\]: expected shape \(4,\)"):
        redundant_units(Net(), v, x, scores={"Dense_0": jnp.ones(3)})
    with pytest.raises(ValueError, match="x: the model's example input"):
        redundant_units(Net(), v)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="threshold: expected a value in"):
        redundancy_groups(jnp.eye(2), 0.0)
    with pytest.raises(ValueError, match="similarity: expected a square"):
        redundancy_groups(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="circular: needs a conv kernel"):
        unit_similarity(jnp.ones((2, 3)), circular=True)
    with pytest.raises(ValueError, match=r"bias: expected shape \(3,\)"):
        unit_similarity(jnp.ones((2, 3)), jnp.ones(2))
