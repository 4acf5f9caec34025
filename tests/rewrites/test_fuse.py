"""jp.fuse and jp.analysis.fusion_candidates on user models (paper 001): Theorem 1 and
Corollary 1 against float64 NumPy, conv-act-conv, exact linear fusion, ranking, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from zoo import ZOO, make_mlp

import jaxprune as jp


class DenseNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(6)(x))
        return nn.Dense(3)(h)  # the pair's target y is the model output


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


def test_dense_relu_dense_matches_theorem_1_and_corollary_1_in_float64():
    x = jax.random.normal(jax.random.key(0), (300, 4))
    net = DenseNet()
    v = net.init(jax.random.key(1), x)
    result = jp.fuse(net, v, ("Dense_0", "Dense_1"), data=[x[:128], x[128:]])
    fused, fv = result.model, result.variables
    mse = result.report.mse[("Dense_0", "Dense_1")]
    assert _shapes(fv) == {"params": {"Dense_0": {"kernel": (4, 3), "bias": (3,)}}}

    # Theorem 1 / Corollary 1 in float64 NumPy: a0 = x, y = W2 relu(W1 a0 + b1) + b2
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"])
    a0 = np.asarray(x, np.float64)
    y = np.maximum(a0 @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
    y = y @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    ma, my = a0.mean(0), y.mean(0)
    c_a = (a0 - ma).T @ (a0 - ma) / len(a0)
    c_ay = (a0 - ma).T @ (y - my) / len(a0)
    c_y = (y - my).T @ (y - my) / len(a0)
    k = np.linalg.solve(c_a, c_ay)  # W~^T = C_a0^{-1} C_a0y
    b = my - ma @ k
    mse_ref = np.trace(c_y) - np.trace(c_ay.T @ np.linalg.solve(c_a, c_ay))  # Eq. 8
    np.testing.assert_allclose(fv["params"]["Dense_0"]["kernel"], k, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(fv["params"]["Dense_0"]["bias"], b, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(float(mse), mse_ref, rtol=1e-3)
    # the fused model's output is the fused layer's (the second layer had no activation after)
    emp = np.mean(np.sum((np.asarray(fused.apply(fv, x), np.float64) - y) ** 2, -1))
    np.testing.assert_allclose(emp, mse_ref, rtol=1e-3)


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3), padding="VALID")(x))
        h = nn.Conv(5, (3, 3), padding="VALID")(h)  # target y: the model output
        return h


def test_conv_relu_conv_fuses_to_receptive_field_conv_with_corollary_mse():
    x = jax.random.normal(jax.random.key(0), (40, 9, 9, 2))
    net = ConvNet()
    v = net.init(jax.random.key(1), x)
    result = jp.fuse(net, v, ("Conv_0", "Conv_1"), data=[x[:20], x[20:]])
    fused, fv = result.model, result.variables
    mse = result.report.mse[("Conv_0", "Conv_1")]
    assert _shapes(fv) == {"params": {"Conv_0": {"kernel": (5, 5, 2, 5), "bias": (5,)}}}
    y, got = net.apply(v, x), fused.apply(fv, x)
    assert got.shape == y.shape == (40, 5, 5, 5)
    emp = float(jnp.mean(jnp.sum((got - y) ** 2, axis=(1, 2, 3))))  # per example
    np.testing.assert_allclose(float(mse), emp, rtol=2e-3)
    var = float(jnp.mean(jnp.sum((y - y.mean((0, 1, 2))) ** 2, axis=(1, 2, 3))))
    assert 0 < float(mse) < var  # better than the mean, not exact (relu)


def test_linear_conv_pair_fuses_exactly_and_uncorrelated_estimator_runs():
    class Lin(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.relu(
                nn.Conv(3, (3, 3), padding="VALID")(nn.Conv(4, (2, 2), padding="VALID")(x))
            )

    # Flax names modules in construction order: the outer Conv(3) is Conv_0, applied second
    x = jax.random.normal(jax.random.key(0), (30, 8, 8, 2))
    net = Lin()
    v = net.init(jax.random.key(1), x)
    result = jp.fuse(net, v, ("Conv_1", "Conv_0"), data=[x])
    fused, fv = result.model, result.variables
    mse = result.report.mse[("Conv_1", "Conv_0")]
    assert fv["params"]["Conv_1"]["kernel"].shape == (4, 4, 2, 3)
    assert float(mse) < 1e-4
    np.testing.assert_allclose(fused.apply(fv, x), net.apply(v, x), atol=1e-4)
    result = jp.fuse(net, v, ("Conv_1", "Conv_0"), data=[x], estimator="uncorrelated")
    mse_u = result.report.mse[("Conv_1", "Conv_0")]
    assert float(mse_u) >= float(mse) - 1e-5  # the joint estimator is the optimum


class SeqNet(nn.Module):
    """A 1-D convolutional sequence model ``(batch, length, channels)``; with ``height`` the
    same model on ``(batch, 1, length, channels)`` images (kernels ``(1, k)``)."""

    act: bool = True
    pool: bool = False
    padding: str = "SAME"
    stride: int = 1
    height: bool = False

    @nn.compact
    def __call__(self, x):
        win = (lambda n: (1, n)) if self.height else (lambda n: (n,))
        h = nn.Conv(4, win(3), padding=self.padding)(x)
        h = nn.relu(h) if self.act else h
        if self.pool:
            h = nn.max_pool(h, win(2), strides=win(2))
        return nn.Conv(3, win(3), strides=win(self.stride), padding=self.padding)(h)  # y


def test_linear_1d_conv_pair_fuses_exactly_to_the_composed_kernel():
    """Without an activation between them, two VALID 1-D convs (the second with stride 2) are
    one conv: kernel ``K[t] = sum_{i + j = t} W1[i] W2[j]`` of size ``3 + 3 - 1 = 5``, stride
    2, bias ``b1 sum_j W2[j] + b2``. The fit recovers it and the outputs."""
    x = jax.random.normal(jax.random.key(0), (40, 17, 2))
    net = SeqNet(act=False, padding="VALID", stride=2)
    v = net.init(jax.random.key(1), x)
    result = jp.fuse(net, v, ("Conv_0", "Conv_1"), data=[x[:20], x[20:]])
    fused, fv = result.model, result.variables
    mse = result.report.mse[("Conv_0", "Conv_1")]
    assert _shapes(fv) == {"params": {"Conv_0": {"kernel": (5, 2, 3), "bias": (3,)}}}
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"])
    w1, b1, w2, b2 = (p[n][k] for n in ("Conv_0", "Conv_1") for k in ("kernel", "bias"))
    k = np.zeros((5, 2, 3))
    for i in range(3):
        for j in range(3):
            k[i + j] += w1[i] @ w2[j]
    np.testing.assert_allclose(fv["params"]["Conv_0"]["kernel"], k, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        fv["params"]["Conv_0"]["bias"], b1 @ w2.sum(0) + b2, rtol=1e-4, atol=1e-5
    )
    assert float(mse) < 1e-5
    y = net.apply(v, x)
    assert y.shape == (40, 7, 3)
    np.testing.assert_allclose(fused.apply(fv, x), y, rtol=1e-4, atol=1e-5)


def test_1d_conv_fusion_is_the_2d_fusion_with_a_height_one_axis():
    """Conv-ReLU-maxpool-conv on sequences equals the same model on height-1 images: the
    fused kernel (receptive field ``3 + 1 + 2 * 2 = 8`` along the length, 1 along the height;
    stride 2 along the length only), bias, MSE and outputs agree up to the reshape."""
    x = jax.random.normal(jax.random.key(0), (48, 12, 2))
    net1, net2 = SeqNet(pool=True), SeqNet(pool=True, height=True)
    v1 = net1.init(jax.random.key(1), x)
    v2 = jax.tree.map(lambda a: a[None] if a.ndim == 3 else a, v1)  # (k, i, o) -> (1, k, i, o)
    np.testing.assert_array_equal(net2.apply(v2, x[:, None]), net1.apply(v1, x)[:, None])
    result = jp.fuse(net1, v1, ("Conv_0", "Conv_1"), data=[x[:24], x[24:]])
    f1, fv1 = result.model, result.variables
    mse1 = result.report.mse[("Conv_0", "Conv_1")]
    result = jp.fuse(net2, v2, ("Conv_0", "Conv_1"), data=[x[:24, None], x[24:, None]])
    f2, fv2 = result.model, result.variables
    mse2 = result.report.mse[("Conv_0", "Conv_1")]
    k1, k2 = fv1["params"]["Conv_0"]["kernel"], fv2["params"]["Conv_0"]["kernel"]
    assert k1.shape == (8, 2, 3) and k2.shape == (1, 8, 2, 3)
    np.testing.assert_allclose(k2[0], k1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        fv2["params"]["Conv_0"]["bias"], fv1["params"]["Conv_0"]["bias"], rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(float(mse2), float(mse1), rtol=1e-4)
    y, got = net1.apply(v1, x), f1.apply(fv1, x)
    assert got.shape == y.shape == (48, 6, 3)
    np.testing.assert_allclose(f2.apply(fv2, x[:, None])[:, 0], got, rtol=1e-4, atol=1e-5)
    emp = float(jnp.mean(jnp.sum((got - y) ** 2, axis=(1, 2))))  # per example
    np.testing.assert_allclose(float(mse1), emp, rtol=2e-3)
    assert 0 < float(mse1) < float(jnp.mean(jnp.sum((y - y.mean((0, 1))) ** 2, axis=(1, 2))))
    # Theorem 2's uncorrelated-channel estimator: the same on both, and no better than joint
    u = dict(estimator="uncorrelated")
    result = jp.fuse(net1, v1, ("Conv_0", "Conv_1"), data=[x], **u)
    uv1 = result.variables
    mse_u1 = result.report.mse[("Conv_0", "Conv_1")]
    result = jp.fuse(net2, v2, ("Conv_0", "Conv_1"), data=[x[:, None]], **u)
    uv2 = result.variables
    mse_u2 = result.report.mse[("Conv_0", "Conv_1")]
    np.testing.assert_allclose(
        uv2["params"]["Conv_0"]["kernel"][0],
        uv1["params"]["Conv_0"]["kernel"],
        rtol=1e-4,
        atol=1e-5,
    )
    np.testing.assert_allclose(float(mse_u2), float(mse_u1), rtol=1e-4)
    assert float(mse_u1) >= float(mse1) * (1 - 1e-5)


def test_conv_act_dense_of_zoo_cnn_and_any_batch_size():
    case = ZOO["cnn"]()
    x = jax.random.normal(jax.random.key(3), (300, 8, 8, 2))
    result = jp.fuse(case.model, case.variables, ("Conv_2", "Dense_0"), data=[x])
    fused, fv = result.model, result.variables
    mse = result.report.mse[("Conv_2", "Dense_0")]
    assert fv["params"]["Conv_2"]["kernel"].shape == (8 * 8 * 4, 3)  # on Conv_1's output
    assert "Dense_0" not in fv["params"]
    y, got = case.model.apply(case.variables, x), fused.apply(fv, x)
    emp = float(jnp.mean(jnp.sum((got - y) ** 2, -1)))
    np.testing.assert_allclose(float(mse), emp, rtol=2e-3, atol=1e-6)
    exp = jax.export.export(jax.jit(fused.apply))(fv, x[:7])
    np.testing.assert_allclose(exp.call(fv, x[:7]), got[:7], rtol=1e-5, atol=1e-5)


def test_fusion_candidates_rank_every_pair_of_the_graph():
    case = make_mlp()
    x = jax.random.normal(jax.random.key(4), (256, 5))
    ranking = jp.analysis.fusion_candidates(case.model, case.variables, [x[:100], x[100:]])
    assert sorted(c.layers for c in ranking) == [("Dense_0", "Dense_1"), ("Dense_1", "Dense_2")]
    assert [c.mse for c in ranking] == sorted(c.mse for c in ranking)
    for c in ranking:
        result = jp.fuse(case.model, case.variables, c.layers, data=[x[:100], x[100:]])
        mse = result.report.mse[c.layers]
        np.testing.assert_allclose(c.mse, float(mse), rtol=1e-5)
        assert c.kind == "dense"
    assert {c.layers: c.n_params for c in ranking} == {
        ("Dense_0", "Dense_1"): 5 * 6 + 6,
        ("Dense_1", "Dense_2"): 8 * 3 + 3,
    }


@pytest.mark.parametrize(
    ("name", "pairs"),
    [
        ("resnet_v1_b", {("ResBlockV1_0/Conv_0", "ResBlockV1_0/Conv_1"),
                         ("ResBlockV1_1/Conv_0", "ResBlockV1_1/Conv_1")}),
        ("transformer_mlp", {("Dense_0", "Dense_1")}),
        ("function", {("w1", "w2")}),
        ("depthwise", set()),
    ],
)  # fmt: skip
def test_fusion_candidates_on_the_zoo(name, pairs):
    case = ZOO[name]()
    got = jp.analysis.fusion_candidates(
        case.model, case.variables, [case.x], model_kwargs=case.kwargs
    )
    assert {c.layers for c in got} == pairs


def test_not_a_fusable_pair_names_both_layers_and_why():
    case = make_mlp()
    with pytest.raises(ValueError, match=r"\('Dense_0', 'Dense_2'\): not a fusable pair \(not con"):
        jp.fuse(case.model, case.variables, ("Dense_0", "Dense_2"), data=[case.x])
    with pytest.raises(ValueError, match=r"not in this model"):
        jp.fuse(case.model, case.variables, ("Dense_0", "nope"), data=[case.x])
    with pytest.raises(ValueError, match="conv-conv fusion only"):
        jp.fuse(
            case.model, case.variables, ("Dense_0", "Dense_1"), [case.x], estimator="uncorrelated"
        )
    with pytest.raises(ValueError, match="expected at least two neighbouring layers"):
        jp.fuse(case.model, case.variables, ("Dense_0",), data=[case.x])
    with pytest.raises(ValueError, match="data: expected at least one batch"):
        jp.fuse(case.model, case.variables, ("Dense_0", "Dense_1"), data=[])
    res = ZOO["resnet_v1_b"]()  # the stem's output is also read by the residual add
    with pytest.raises(ValueError, match="not a fusable pair"):
        jp.fuse(
            res.model,
            res.variables,
            ("Conv_0", "ResBlockV1_0/Conv_0"),
            [res.x],
            model_kwargs={"train": False},
        )
