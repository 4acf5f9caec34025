import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxprune as jp
from jaxprune.rewrites import prune_units

MLP = jp.models.MLP(hidden=(5, 4), linear_after=((3, 3), ()), out=2, out_activation="identity")
MLP_PARAMS = jax.jit(MLP.init)(jax.random.key(0), jnp.zeros((1, 2)))["params"]
X = jax.random.normal(jax.random.key(1), (16, 2))
APPLY = jax.jit(
    lambda model, p, x, m: jp.trace(model, {"params": p}, x).apply({"params": p}, x, masks=m),
    static_argnums=0,
)


def _count(p):
    return sum(a.size for a in jax.tree.leaves(p))


@settings(max_examples=6)
@given(
    st.lists(st.booleans(), min_size=5, max_size=5).filter(any),
    st.lists(st.booleans(), min_size=4, max_size=4).filter(any),
)
def test_mlp_outputs_equal_the_masked_network(k0, k1):
    keep = {"relu_0": np.array(k0), "relu_1": np.array(k1)}
    narrow, q = prune_units(MLP, MLP_PARAMS, keep)
    assert narrow.hidden == (sum(k0), sum(k1)) and narrow.linear_after == MLP.linear_after
    masked = APPLY(MLP, MLP_PARAMS, X, {k: v.astype(np.float32) for k, v in keep.items()})
    np.testing.assert_allclose(APPLY(narrow, q, X, {}), masked, rtol=1e-5, atol=1e-6)
    # relu_0: 3 params per removed unit (2 in + bias) + 3 outgoing; relu_1: 4 + 2 outgoing.
    removed = (5 - sum(k0)) * (3 + 3) + (4 - sum(k1)) * (4 + 2)
    assert _count(MLP_PARAMS) - _count(q) == removed


def test_convnet_with_pool_linear_convs_and_head():
    model = jp.models.ConvNet(features=(4, 3), linear_after=((2,), ()), pool=(True, False), out=3)
    x = jax.random.normal(jax.random.key(2), (2, 6, 6, 1))
    p = jax.jit(model.init)(jax.random.key(0), x)["params"]
    keep = {"conv_0": np.array([True, False, True, True]), "conv_1": np.array([False, True, True])}
    narrow, q = prune_units(model, p, keep)
    assert narrow.features == (3, 2)
    assert q["conv_0"]["kernel"].shape == (3, 3, 1, 3) and q["linear_0_0"]["kernel"].shape[2] == 3
    assert q["out"]["kernel"].shape == (3 * 3 * 2, 3)
    masked = APPLY(model, p, x, {k: v.astype(np.float32) for k, v in keep.items()})
    np.testing.assert_allclose(APPLY(narrow, q, x, {}), masked, rtol=1e-5, atol=1e-6)
    jp.models._check.check_params(narrow, q)


def test_missing_layers_are_kept_and_input_is_not_mutated():
    before = jax.tree.map(np.asarray, MLP_PARAMS)
    narrow, q = prune_units(MLP, MLP_PARAMS, {"relu_1": np.array([True, False, True, True])})
    assert narrow.hidden == (5, 3)
    jax.tree.map(np.testing.assert_array_equal, MLP_PARAMS, before)


def test_refuses_to_remove_every_unit_and_other_bad_masks():
    with pytest.raises(ValueError, match=r"keep\['relu_0'\]: would remove all 5 units"):
        prune_units(MLP, MLP_PARAMS, {"relu_0": np.zeros(5, bool)})
    with pytest.raises(ValueError, match=r"keep\['relu_0'\]: expected a bool array of shape"):
        prune_units(MLP, MLP_PARAMS, {"relu_0": np.ones(4, bool)})
    with pytest.raises(ValueError, match="keep: unknown layer"):
        prune_units(MLP, MLP_PARAMS, {"relu_7": np.ones(4, bool)})
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda m: prune_units(MLP, MLP_PARAMS, {"relu_0": m})[1])(jnp.ones(5, bool))
    with pytest.raises(TypeError, match="model: expected"):
        prune_units(object(), MLP_PARAMS, {})


def test_consecutive_relu_layers_keep_both_prunings():
    # relu_0 feeds relu_1 directly: relu_1's kernel loses rows (relu_0) and columns (relu_1)
    model = jp.models.MLP(hidden=(3, 2), out=1, out_activation="identity")
    p = model.init(jax.random.key(0), jnp.zeros((1, 2)))["params"]
    keep = {"relu_0": np.array([True, False, True]), "relu_1": np.array([False, True])}
    narrow, q = prune_units(model, p, keep)
    k1 = np.asarray(p["relu_1"]["kernel"])
    np.testing.assert_array_equal(q["relu_1"]["kernel"], k1[[0, 2]][:, [1]])
    np.testing.assert_array_equal(q["out"]["kernel"], np.asarray(p["out"]["kernel"])[[1]])
    masked = APPLY(model, p, X, {k: v.astype(np.float32) for k, v in keep.items()})
    np.testing.assert_allclose(APPLY(narrow, q, X, {}), masked, rtol=1e-5, atol=1e-6)
