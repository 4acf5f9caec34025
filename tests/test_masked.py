"""Masked layers and networks of paper 003, their initializers and the Scored wrapper."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.models import (
    MaskedConv,
    MaskedDense,
    Scored,
    conv2,
    conv6,
    effective_params,
    get_initializer,
    lenet_300_100,
    signed_he_constant,
)


def _numpy_params(model, x, seed=0, negative=0.4):
    """Params of ``model`` drawn with numpy (no PRNG compiles): Signed He Constant weights and
    scores of which about ``negative`` are below zero, so masks and flips do something."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]

    def draw(path, s):
        if "scores" in jax.tree_util.keystr(path):
            return jnp.asarray(
                rng.uniform(-0.1 * negative / (1 - negative), 0.1, s.shape), jnp.float32
            )
        sign = np.where(rng.random(s.shape) < 0.5, 1.0, -1.0)
        return jnp.asarray(sign * np.sqrt(2 / np.prod(s.shape[:-1])), jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_signed_he_constant_values_and_sign_probability(key, p):
    shape = (3, 3, 20, 50)  # fan_in 180, 9000 weights
    w = np.asarray(signed_he_constant(p)(key, shape))
    np.testing.assert_allclose(np.abs(w), np.sqrt(2 / 180), rtol=1e-6)
    frac = (w > 0).mean()
    sigma = np.sqrt(p * (1 - p) / w.size)
    assert abs(frac - p) <= 4 * sigma + 1e-12


def test_normal_initializer_variances(key):
    he = np.asarray(get_initializer("he_normal")(key, (400, 300)))
    glorot = np.asarray(get_initializer("glorot_normal")(key, (400, 300)))
    assert he.var() == pytest.approx(2 / 400, rel=0.03)
    assert glorot.var() == pytest.approx(2 / 700, rel=0.03)


@pytest.mark.parametrize("bad", [-0.1, 1.5, "half", None])
def test_bad_sign_probability_raises(bad):
    with pytest.raises(ValueError, match="p: expected a probability"):
        signed_he_constant(bad)
    with pytest.raises(ValueError, match="p: expected a probability"):
        MaskedDense(3, p=bad)


def test_bad_kind_and_initializer_raise():
    with pytest.raises(ValueError, match="kind"):
        MaskedConv(3, kind="sign")
    with pytest.raises(ValueError, match="kind"):
        lenet_300_100(kind="prune")
    with pytest.raises(ValueError, match="init: unknown"):
        get_initializer("lecun")


@pytest.mark.parametrize("kind", ["mask", "flip"])
def test_masked_dense_and_conv_match_hand_computation(key, kind):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 5, 3)), jnp.float32)
    conv = MaskedConv(4, kind=kind)
    params = _numpy_params(conv, x, 1)
    w, t = params["weights"], params["scores"]
    g = (t > 0) if kind == "mask" else jnp.where(t >= 0, 1.0, -1.0)
    ref = nn.Conv(4, (3, 3), padding="SAME", use_bias=False).apply({"params": {"kernel": w * g}}, x)
    np.testing.assert_allclose(conv.apply({"params": params}, x), ref, rtol=1e-5, atol=1e-5)

    dense = MaskedDense(4, kind=kind, weight_init="signed_he_constant")
    xd = x.reshape(2, -1)
    fresh = dense.init(key, xd)["params"]  # the real initializers: scores in (0, 0.1]
    assert float(fresh["scores"].min()) > 0 and float(fresh["scores"].max()) <= 0.1
    np.testing.assert_allclose(np.abs(fresh["weights"]), np.sqrt(2 / 75), rtol=1e-6)
    params = _numpy_params(dense, xd, 2)
    w, t = params["weights"], params["scores"]
    g = (t > 0) if kind == "mask" else jnp.where(t >= 0, 1.0, -1.0)
    np.testing.assert_allclose(
        dense.apply({"params": params}, xd), xd @ (w * g), rtol=1e-5, atol=1e-5
    )


def test_paper_architectures_weight_counts(key):
    shapes = lambda m, x: jax.eval_shape(m.init, key, x)["params"]  # noqa: E731
    count = lambda tree: sum(  # noqa: E731
        int(np.prod(v["weights"].shape)) for v in tree.values()
    )
    lenet = shapes(lenet_300_100(), jnp.zeros((1, 28, 28, 1)))
    assert count(lenet) == 784 * 300 + 300 * 100 + 100 * 10  # 266,200, as in the paper
    c2 = shapes(conv2(), jnp.zeros((1, 32, 32, 3)))
    assert count(c2) == 27 * 64 + 576 * 64 + 16 * 16 * 64 * 256 + 256 * 256 + 2560
    c6 = shapes(conv6(kind=None), jnp.zeros((1, 32, 32, 3)))
    assert sorted(c6["conv_5"]) == ["weights"]  # kind=None: no scores, plain weights
    assert c6["dense_0"]["weights"].shape == (4 * 4 * 256, 256)


@pytest.mark.parametrize("kind", ["mask", "flip"])
def test_effective_weights_reproduce_the_masked_network(key, kind):
    model = jp.models.MaskedConvNet(
        blocks=((4,), (6,)), hidden=(8,), out=3, kind=kind, weight_init="signed_he_constant"
    )
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 8, 8, 2)), jnp.float32)
    params = _numpy_params(model, x, 3)
    plain = model.clone(kind=None)
    eff = jp.analysis.effective_weights(params, kind)
    assert jax.tree.structure(eff) == jax.tree.structure(
        jax.eval_shape(plain.init, key, x)["params"]
    )
    np.testing.assert_allclose(
        jax.jit(model.apply)({"params": params}, x),
        jax.jit(plain.apply)({"params": eff}, x),
        rtol=1e-5,
        atol=1e-6,
    )


def test_scored_wraps_any_flax_model(key):
    inner = nn.Sequential([nn.Dense(5, use_bias=False), nn.relu, nn.Dense(2, use_bias=False)])
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
    net = Scored(inner, kind="flip")
    params = _numpy_params(net, x, 4)
    assert jax.tree.structure(params["weights"]) == jax.tree.structure(params["scores"])
    eff = effective_params(params["weights"], params["scores"], "flip")
    np.testing.assert_allclose(
        net.apply({"params": params}, x), inner.apply({"params": eff}, x), rtol=1e-6
    )
    # Straight-through through the wrapper: d/dt = d/dw_eff * w.
    g_t = jax.grad(lambda p: net.apply({"params": p}, x).sum())(params)["scores"]
    g_eff = jax.grad(lambda e: inner.apply({"params": e}, x).sum())(eff)
    for a, b, w in zip(
        jax.tree.leaves(g_t),
        jax.tree.leaves(g_eff),
        jax.tree.leaves(params["weights"]),
        strict=True,
    ):
        np.testing.assert_allclose(a, b * w, rtol=1e-5, atol=1e-6)
