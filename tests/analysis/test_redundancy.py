import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_kept_member_is_highest_score_then_lowest_index():
    p = {
        "relu_0": {"kernel": jnp.array([[1.0, 2.0, 3.0, 0.0]]), "bias": jnp.array([1, 2, 3, 1.0])},
        "out": {"kernel": jnp.ones((4, 1)), "bias": jnp.zeros(1)},
    }
    assert redundant_units(p)["relu_0"].tolist() == [False, True, True, False]
    scores = {"relu_0": jnp.array([1.0, 5.0, 5.0, 9.0])}
    assert redundant_units(p, scores=scores)["relu_0"].tolist() == [True, False, True, False]
    jitted = jax.jit(lambda p, s: redundant_units(p, 0.99, scores=s))(p, scores)
    assert jitted["relu_0"].tolist() == [True, False, True, False]


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
        "conv_0": {"kernel": kernel, "bias": bias},
        "out": {"kernel": jnp.ones((3 * 16, 1)), "bias": jnp.zeros(1)},
    }
    assert redundant_units(params)["conv_0"].tolist() == [False, False, False]
    assert redundant_units(params, circular=True)["conv_0"].tolist() == [False, True, False]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="threshold: expected a value in"):
        redundancy_groups(jnp.eye(2), 0.0)
    with pytest.raises(ValueError, match="similarity: expected a square"):
        redundancy_groups(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="circular: needs a conv kernel"):
        unit_similarity(jnp.ones((2, 3)), circular=True)
    with pytest.raises(ValueError, match=r"bias: expected shape \(3,\)"):
        unit_similarity(jnp.ones((2, 3)), jnp.ones(2))
