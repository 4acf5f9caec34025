"""FuseInit (paper 001): closed forms, exact linear cases, Corollary 1 vs empirical MSE."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.analysis import moments_init, moments_update
from jaxprune.models import CNN, ConvLayer, DenseLayer
from jaxprune.rewrites import FusionWarning, fusion_weights


def _init(net, x, seed=0):
    # rbg keys: XLA:CPU takes seconds to compile threefry, once per distinct model
    return jax.jit(net.init)(jax.random.key(seed, impl="rbg"), x[:1])["params"]


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _batches(x, size=64):
    return [x[i : i + size] for i in range(0, len(x), size)]


def _apply(model, params, x, **kwargs):
    """Jitted ``model.apply`` (eager Flax dispatch compiles every op separately)."""
    return jax.jit(lambda p, z: model.apply({"params": p}, z, **kwargs))(params, x)


def _empirical_mse(net, params, small, small_params, plan_stop, start, x):
    """Mean over examples of the summed squared error between the two pre-activations."""
    want = _apply(net, params, x, stop=plan_stop, pre_activation=True)
    got = _apply(small, small_params, x, stop=start + 1, pre_activation=True)
    assert got.shape == want.shape
    d = (got - want).reshape(len(x), -1)
    return float(jnp.mean(jnp.sum(d * d, axis=1)))


def test_linear_h1_dense_dense_is_exact():
    net = CNN((DenseLayer(6, "identity"), DenseLayer(4, "tanh"), DenseLayer(2, "identity")))
    x = _normal(1, (128, 5))
    p = _init(net, x)
    small, q, mse = jp.fuse(net, p, ("dense_0", "dense_1"), data=_batches(x))
    assert small.layers == (DenseLayer(4, "tanh"), DenseLayer(2, "identity"))
    assert list(q) == ["dense_0", "dense_1"]
    np.testing.assert_array_equal(q["dense_1"]["kernel"], p["dense_2"]["kernel"])
    assert abs(float(mse)) < 1e-4
    np.testing.assert_allclose(_apply(small, q, x), _apply(net, p, x), atol=1e-4, rtol=1e-4)
    # the fused kernel is the product K1 K2 and the bias b1 K2 + b2 (unique: C_a0 full rank)
    np.testing.assert_allclose(
        q["dense_0"]["kernel"], p["dense_0"]["kernel"] @ p["dense_1"]["kernel"], atol=1e-4
    )


def test_corollary_mse_equals_empirical_mse_and_naive_lstsq():
    net = CNN((DenseLayer(8, "relu"), DenseLayer(3, "sigmoid"), DenseLayer(2, "identity")))
    x = _normal(2, (256, 4)) * 2 + 1
    p = _init(net, x, seed=3)
    small, q, mse = jp.fuse(net, p, ("dense_0", "dense_1"), data=_batches(x))
    emp = _empirical_mse(net, p, small, q, 2, 0, x)
    assert emp > 1e-3  # a genuinely lossy fusion
    np.testing.assert_allclose(float(mse), emp, rtol=2e-3)
    # same answer as NumPy lstsq over all materialized samples, [x, 1] -> target
    t = np.asarray(_apply(net, p, x, stop=2, pre_activation=True), np.float64)
    a = np.c_[np.asarray(x, np.float64), np.ones(len(x))]
    sol = np.linalg.lstsq(a, t, rcond=None)[0]
    np.testing.assert_allclose(q["dense_0"]["kernel"], sol[:-1], atol=2e-4)
    np.testing.assert_allclose(q["dense_0"]["bias"], sol[-1], atol=2e-4)


def test_bussgang_gain_for_gaussian_input_and_relu():
    # a0 ~ N(0, I), H1 = relu: C_a1a0 = I/2 (Bussgang), so K~ = K2 / 2, b~ = b2 + 1 K2 / sqrt(2 pi),
    # and MSE = ||K2||_F^2 (Var relu(z) - 1/4) = ||K2||_F^2 (1/4 - 1/(2 pi)).
    d, n = 4, 20_000
    net = CNN((DenseLayer(d, "relu"), DenseLayer(3, "identity")))
    k2 = jnp.array(np.random.default_rng(0).normal(size=(d, 3)), jnp.float32)
    b2 = jnp.array([0.5, -1.0, 2.0])
    p = {
        "dense_0": {"kernel": jnp.eye(d), "bias": jnp.zeros(d)},
        "dense_1": {"kernel": k2, "bias": b2},
    }
    x = _normal(4, (n, d))
    small, q, mse = jp.fuse(net, p, ("dense_0", "dense_1"), data=_batches(x, 4096))
    np.testing.assert_allclose(q["dense_0"]["kernel"], k2 / 2, atol=0.03)
    np.testing.assert_allclose(
        q["dense_0"]["bias"], b2 + k2.sum(0) / math.sqrt(2 * math.pi), atol=0.03
    )
    analytic = float(jnp.sum(k2 * k2)) * (0.25 - 1 / (2 * math.pi))
    np.testing.assert_allclose(float(mse), analytic, rtol=0.05)
    # held-out samples: the empirical MSE of the fused layer matches Corollary 1 within sampling
    x_new = _normal(5, (n, d))
    np.testing.assert_allclose(_empirical_mse(net, p, small, q, 2, 0, x_new), float(mse), rtol=0.05)


def test_singular_covariance_uses_min_norm_lstsq_with_warning():
    net = CNN((DenseLayer(5, "tanh"), DenseLayer(2, "identity")))
    x = np.array(_normal(6, (256, 4)))
    x[:, 3] = x[:, 0] + x[:, 1]  # rank-3 covariance
    x = jnp.asarray(x)
    p = _init(net, x, seed=7)
    with pytest.warns(FusionWarning, match="singular or ill conditioned"):
        small, q, mse = jp.fuse(net, p, ("dense_0", "dense_1"), data=_batches(x))
    k = np.asarray(q["dense_0"]["kernel"])
    assert np.all(np.isfinite(k))
    # minimum norm: K~ is orthogonal to the null direction (1, 1, 0, -1) of C_a0
    null = np.array([1.0, 1.0, 0.0, -1.0]) / math.sqrt(3)
    np.testing.assert_allclose(null @ k, 0, atol=1e-4)
    xc = np.asarray(x, np.float64) - np.asarray(x).mean(0)
    t = np.asarray(_apply(net, p, x, stop=2, pre_activation=True), np.float64)
    sol = np.linalg.lstsq(xc, t - t.mean(0), rcond=1e-5)[0]  # min-norm, materialized rows
    np.testing.assert_allclose(k, sol, atol=5e-4)
    np.testing.assert_allclose(float(mse), _empirical_mse(net, p, small, q, 2, 0, x), rtol=2e-3)


def test_fewer_samples_than_dimensions_warns():
    x = _normal(8, (3, 5))
    m = moments_update(moments_init(5, 2), x, x[:, :2] ** 2)
    with pytest.warns(FusionWarning, match="3 samples for 5 input dimensions"):
        k, _, _ = fusion_weights(m)
    assert bool(jnp.all(jnp.isfinite(k)))


def test_cg_and_lstsq_match_cholesky():
    x = _normal(9, (512, 6)) @ jnp.diag(jnp.arange(1.0, 7.0))
    m = moments_update(moments_init(6, 3), x, jnp.sin(x[:, :3]) + x[:, 3:] ** 2)
    k_chol, b_chol, mse_chol = fusion_weights(m, method="cholesky")
    for method in ("cg", "lstsq", "auto"):
        k, b, mse = fusion_weights(m, method=method)
        np.testing.assert_allclose(k, k_chol, atol=1e-4, err_msg=method)
        np.testing.assert_allclose(b, b_chol, atol=1e-4, err_msg=method)
        np.testing.assert_allclose(mse, mse_chol, rtol=1e-4, err_msg=method)


def test_conv_dense_with_linear_conv_is_exact():
    net = CNN((ConvLayer(3, kernel=3, stride=2, activation="identity"), DenseLayer(2, "relu")))
    x = _normal(10, (128, 6, 6, 1))
    p = _init(net, x)
    small, q, mse = jp.fuse(net, p, ("conv_0", "dense_0"), data=_batches(x))
    assert small.layers == (DenseLayer(2, "relu"),) and q["dense_0"]["kernel"].shape == (36, 2)
    assert abs(float(mse)) < 1e-4
    np.testing.assert_allclose(_apply(small, q, x), _apply(net, p, x), atol=1e-4)


def test_conv_dense_with_relu_and_pool_matches_empirical_mse():
    net = CNN((ConvLayer(2, kernel=3), ConvLayer(3, kernel=3, pool=2), DenseLayer(4, "identity")))
    x = _normal(11, (192, 4, 4, 1))
    p = _init(net, x)
    small, q, mse = jp.fuse(net, p, ("conv_1", "dense_0"), data=_batches(x))
    assert small.layers == (ConvLayer(2, kernel=3), DenseLayer(4, "identity"))
    assert q["dense_0"]["kernel"].shape == (4 * 4 * 2, 4)
    np.testing.assert_array_equal(q["conv_0"]["kernel"], p["conv_0"]["kernel"])
    emp = _empirical_mse(net, p, small, q, 3, 1, x)
    assert emp > 1e-4
    np.testing.assert_allclose(float(mse), emp, rtol=2e-3)


def test_conv_conv_linear_valid_is_exact_with_stride():
    # k~ = k1 + (k2 - 1) s1 = 3 + 1 * 2 = 5, s~ = s1 s2 = 2: 9x9 -> 3x3 both ways.
    net = CNN(
        (
            ConvLayer(3, kernel=3, stride=2, padding="VALID", activation="identity"),
            ConvLayer(2, kernel=2, stride=1, padding="VALID", activation="relu"),
        )
    )
    x = _normal(12, (64, 9, 9, 2))
    p = _init(net, x)
    for estimator in ("joint",):
        small, q, mse = jp.fuse(net, p, ("conv_0", "conv_1"), data=_batches(x), estimator=estimator)
        assert small.layers == (ConvLayer(2, kernel=5, stride=2, padding="VALID"),)
        assert abs(float(mse)) < 1e-4
        np.testing.assert_allclose(_apply(small, q, x), _apply(net, p, x), atol=1e-4)


def test_conv_conv_same_nonlinear_both_estimators_match_empirical_mse():
    net = CNN((ConvLayer(3, kernel=3, pool=2), ConvLayer(2, kernel=3)))
    x = _normal(13, (64, 8, 8, 2))
    x = x + 0.8 * x[..., :1]  # correlated input channels
    p = _init(net, x)
    mses = {}
    for estimator in ("joint", "uncorrelated"):
        small, q, mse = jp.fuse(net, p, ("conv_0", "conv_1"), data=_batches(x), estimator=estimator)
        # k~ = 3 + (2 - 1) + (3 - 1) * 2 = 8, s~ = r1 = 2
        assert small.layers == (ConvLayer(2, kernel=8, stride=2),)
        np.testing.assert_allclose(
            float(mse), _empirical_mse(net, p, small, q, 2, 0, x), rtol=2e-3, err_msg=estimator
        )
        mses[estimator] = float(mse)
    assert mses["joint"] < mses["uncorrelated"]


def test_uncorrelated_estimator_approaches_joint_for_independent_channels():
    net = CNN((ConvLayer(2, kernel=3, activation="tanh"), ConvLayer(2, kernel=1)))
    x = _normal(14, (512, 6, 6, 2))  # white: channels independent
    p = _init(net, x)
    _, qj, mj = jp.fuse(net, p, ("conv_0", "conv_1"), data=_batches(x, 256))
    _, qu, mu = jp.fuse(
        net, p, ("conv_0", "conv_1"), data=_batches(x, 256), estimator="uncorrelated"
    )
    k = np.asarray(qj["conv_0"]["kernel"])
    np.testing.assert_allclose(qu["conv_0"]["kernel"], k, atol=0.05 * np.abs(k).max())
    np.testing.assert_allclose(float(mu), float(mj), rtol=0.05)


def test_fusion_candidates_ranks_every_pair_by_fuse_mse():
    net = CNN(
        (
            ConvLayer(2, kernel=3, padding="VALID", activation="identity"),
            ConvLayer(2, kernel=3, padding="VALID"),
            DenseLayer(3, "tanh"),
            DenseLayer(2, "identity"),
        )
    )
    x = _normal(15, (128, 6, 6, 1))
    p = _init(net, x)
    ranking = jp.analysis.fusion_candidates(net, p, _batches(x))
    pairs = [("conv_0", "conv_1"), ("conv_1", "dense_0"), ("dense_0", "dense_1")]
    assert sorted(c.layers for c in ranking) == pairs
    assert [c.mse for c in ranking] == sorted(c.mse for c in ranking)
    assert ranking[0].layers == ("conv_0", "conv_1") and ranking[0].kind == "conv"
    for c in ranking:
        with warnings.catch_warnings():  # conv_0's 2-channel linear output has rank 28 < 32
            warnings.simplefilter("ignore", FusionWarning)
            _, _, mse = jp.fuse(net, p, c.layers, data=_batches(x))
        np.testing.assert_allclose(c.mse, float(mse), rtol=1e-4, atol=1e-6)
        assert -1e-5 <= c.relative_mse <= 1 + 1e-5


def test_bad_input_raises_naming_the_layers():
    net = CNN((DenseLayer(4), DenseLayer(3), DenseLayer(2, "identity")))
    x = _normal(16, (32, 3))
    p = _init(net, x)
    with pytest.raises(ValueError, match="not consecutive neighbours"):
        jp.fuse(net, p, ("dense_0", "dense_2"), data=[x])
    with pytest.raises(ValueError, match=r"\['conv_0'\] not in this model"):
        jp.fuse(net, p, ("conv_0", "dense_0"), data=[x])
    with pytest.raises(ValueError, match="at least two neighbouring layers"):
        jp.fuse(net, p, ("dense_0",), data=[x])
    with pytest.raises(ValueError, match="conv-conv fusion only"):
        jp.fuse(net, p, ("dense_0", "dense_1"), data=[x], estimator="uncorrelated")
    with pytest.raises(ValueError, match="data: expected at least one batch"):
        jp.fuse(net, p, ("dense_0", "dense_1"), data=[])
    bad = {**p, "dense_1": {**p["dense_1"], "kernel": jnp.zeros((5, 3))}}
    with pytest.raises(ValueError, match=r"params\['dense_1'\]\['kernel'\]: expected shape"):
        jp.fuse(net, bad, ("dense_0", "dense_1"), data=[x])
    with pytest.raises(ValueError, match=r"layers \('dense_0', 'dense_1'\).*non-finite"):
        jp.fuse(net, p, ("dense_0", "dense_1"), data=[x.at[0, 0].set(jnp.nan)])
    with pytest.raises(TypeError, match="model: expected jaxprune.models.CNN"):
        jp.fuse(jp.models.MLP(), p, ("relu_0", "out"), data=[x])


def test_conv_conv_shape_mismatch_and_mixed_padding_raise():
    net = CNN((ConvLayer(2, kernel=3, pool=2), ConvLayer(2, kernel=3)))
    x = _normal(17, (8, 7, 7, 1))  # 7 -> pool 3; fused s~=2 gives 4
    p = _init(net, x)
    with pytest.raises(ValueError, match=r"layers \('conv_0', 'conv_1'\): the fused convolution"):
        jp.fuse(net, p, ("conv_0", "conv_1"), data=[x])
    mixed = CNN((ConvLayer(2, padding="VALID"), ConvLayer(2)))
    with pytest.raises(ValueError, match="mix paddings"):
        jp.rewrites.fusion_plan(mixed, ("conv_0", "conv_1"))
