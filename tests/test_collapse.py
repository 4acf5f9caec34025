import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxprune as jp
from jaxprune.models import MLP, ConvNet

widths = st.integers(1, 6)


@st.composite
def mlps(draw):
    hidden = tuple(draw(st.lists(widths, min_size=1, max_size=3)))
    linear = tuple(tuple(draw(st.lists(widths, max_size=3))) for _ in hidden)
    return MLP(hidden=hidden, out=draw(widths), out_activation="identity", linear_after=linear)


@given(model=mlps(), seed=st.integers(0, 2**16), d_in=widths)
def test_collapse_mlp_keeps_outputs(model, seed, d_in):
    k1, k2 = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(k1, (7, d_in))
    params = model.init(k2, x)["params"]
    small, small_params = jp.collapse(model, params)
    assert small.linear_after == ()
    assert set(small_params) == {f"relu_{i}" for i in range(len(model.hidden))} | {"out"}
    np.testing.assert_allclose(
        small.apply({"params": small_params}, x),
        model.apply({"params": params}, x),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("linear", [((9,),), ((3, 3, 3),)])
def test_paper_models_collapse_to_model_1(linear, key):
    model = MLP(hidden=(3,), linear_after=linear)
    x, _ = jp.data.paint("square", size=8)
    params = model.init(key, x)["params"]
    small, small_params = jp.collapse(model, params)
    assert small == MLP(hidden=(3,))
    assert jp.analysis.count_params(small_params) == 13
    np.testing.assert_allclose(
        small.apply({"params": small_params}, x), model.apply({"params": params}, x), atol=1e-6
    )


def test_collapse_hand_computed():
    model = MLP(hidden=(1,), out_activation="identity", linear_after=((2,),))
    params = {
        "relu_0": {"kernel": jnp.array([[1.0]]), "bias": jnp.array([0.0])},
        "linear_0_0": {"kernel": jnp.array([[2.0, 3.0]]), "bias": jnp.array([1.0, -1.0])},
        "out": {"kernel": jnp.array([[4.0], [5.0]]), "bias": jnp.array([0.5])},
    }
    _, p = jp.collapse(model, params)
    # A' = A3 A2 = 2*4 + 3*5 = 23 ; b' = A3 b2 + b3 = 4 - 5 + 0.5 = -0.5
    assert p["out"]["kernel"].tolist() == [[23.0]]
    assert p["out"]["bias"].tolist() == [-0.5]


def test_collapse_subset_renumbers_and_keeps_outputs(key):
    model = MLP(hidden=(3, 2), out_activation="identity", linear_after=((4, 5, 6), (2,)))
    x = jax.random.normal(key, (5, 2))
    params = model.init(key, x)["params"]
    small, p = jp.collapse(model, params, layers=["linear_0_1"])
    assert small.linear_after == ((4, 6), (2,))
    assert p["linear_0_1"]["kernel"].shape == (4, 6)
    np.testing.assert_allclose(
        small.apply({"params": p}, x), model.apply({"params": params}, x), rtol=1e-5, atol=1e-5
    )


def test_collapse_does_not_mutate_input(key):
    model = MLP(hidden=(3,), linear_after=((9,),))
    params = model.init(key, jnp.zeros((1, 2)))["params"]
    before = jax.tree.map(np.array, params)
    jp.collapse(model, params)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, params))
    assert "linear_0_0" in params


@st.composite
def convnets(draw):
    n = draw(st.integers(1, 3))
    feats = tuple(draw(st.lists(st.integers(1, 4), min_size=n, max_size=n)))
    linear = tuple(tuple(draw(st.lists(st.integers(1, 4), max_size=2))) for _ in feats)
    pool = tuple(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return ConvNet(
        features=feats,
        kernel_size=draw(st.sampled_from([1, 3])),
        linear_after=linear,
        pool=pool,
        out=draw(st.integers(1, 3)),
    )


@given(model=convnets(), seed=st.integers(0, 2**16))
def test_collapse_convnet_keeps_outputs(model, seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(k1, (2, 8, 8, 2))
    params = model.init(k2, x)["params"]
    small, sp = jp.collapse(model, params)
    assert small == dataclasses.replace(model, linear_after=())
    np.testing.assert_allclose(
        small.apply({"params": sp}, x), model.apply({"params": params}, x), rtol=1e-4, atol=1e-5
    )


def test_collapse_rejects_nonlinear_layer(key):
    model = MLP(hidden=(3,), linear_after=((9,),))
    params = model.init(key, jnp.zeros((1, 2)))["params"]
    with pytest.raises(ValueError, match="'relu_0' is a non-linear layer"):
        jp.collapse(model, params, layers=["relu_0"])
    with pytest.raises(ValueError, match="'nope' is not a layer"):
        jp.collapse(model, params, layers=["nope"])


def test_collapse_rejects_mismatched_params(key):
    model = MLP(hidden=(3,), linear_after=((9,),))
    params = model.init(key, jnp.zeros((1, 2)))["params"]
    with pytest.raises(ValueError, match=r"params\['linear_0_0'\]\['kernel'\]: expected shape"):
        jp.collapse(MLP(hidden=(3,), linear_after=((8,),)), params)
    with pytest.raises(ValueError, match=r"params\['linear_0_0'\]: layer not in MLP"):
        jp.collapse(MLP(hidden=(3,)), params)
    with pytest.raises(TypeError, match="model: expected"):
        jp.collapse(object(), params)
