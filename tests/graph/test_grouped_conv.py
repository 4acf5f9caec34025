"""Grouped convolutions (``feature_group_count`` > 1, not depthwise) through the layer graph:
checked against the same layer written by hand as one convolution per group."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.graph import GraphError

G = 3  # groups of the grouped convolution: 6 -> 9 channels, 2 in and 3 out per group


class ResNeXtish(nn.Module):
    """A user-style block: conv, BatchNorm, relu, a grouped conv, relu, a 1x1 conv, a head."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(6, (1, 1))(x)))
        h = nn.relu(nn.Conv(9, (3, 3), feature_group_count=G)(h))
        h = nn.relu(nn.Conv(4, (1, 1))(h))
        return nn.Dense(2)(h.mean(axis=(1, 2)))


def _case():
    x = jax.random.normal(jax.random.key(1), (2, 5, 5, 4))
    model = ResNeXtish()
    variables = model.init(jax.random.key(0), x)
    # non-trivial BatchNorm statistics
    stats = variables["batch_stats"]["BatchNorm_0"]
    stats = {"mean": stats["mean"] + 0.1, "var": stats["var"] * 1.5}
    return model, {**variables, "batch_stats": {"BatchNorm_0": stats}}, x


def _by_hand(p, bn, x, zero_out=()):
    """The same network with the grouped conv split into one conv per group (zeroed channels
    of the grouped conv's output in ``zero_out``)."""

    def conv(w, b, h):
        return (
            jax.lax.conv_general_dilated(
                h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            + b
        )

    h = conv(p["Conv_0"]["kernel"], p["Conv_0"]["bias"], x)
    h = (h - bn["mean"]) / jnp.sqrt(bn["var"] + 1e-5) * p["BatchNorm_0"]["scale"]
    h = nn.relu(h + p["BatchNorm_0"]["bias"])
    k, b = p["Conv_1"]["kernel"], p["Conv_1"]["bias"]  # (3, 3, 2, 9)
    parts = [
        conv(k[..., 3 * j : 3 * j + 3], b[3 * j : 3 * j + 3], h[..., 2 * j : 2 * j + 2])
        for j in range(G)
    ]
    h = nn.relu(jnp.concatenate(parts, axis=-1))
    h = h.at[..., list(zero_out)].set(0.0)
    h = nn.relu(conv(p["Conv_2"]["kernel"], p["Conv_2"]["bias"], h))
    return h.mean(axis=(1, 2)) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]


def test_graph_of_a_grouped_conv():
    model, v, x = _case()
    graph = jp.trace(model, v, x)
    assert graph.layers["Conv_1"].op == "grouped_conv"
    assert graph.units["Conv_1"].width == 9 and graph.units["Conv_1"].groups == G
    assert graph.units["Conv_2"].groups == 1
    # the grouped conv's input channels cannot be narrowed per channel: coupled, saying why
    assert any("grouped convolution" in why for why in graph.units["Conv_0"].coupled)
    # the grouped conv's output channels own its kernel's output axis and bias
    slices = {
        leaf: (axis, idx.tolist()) for leaf, axis, idx in graph.slices("Conv_1", outgoing=False)
    }
    assert slices == {
        "params/Conv_1/kernel": (3, list(range(9))),
        "params/Conv_1/bias": (0, list(range(9))),
    }


def test_evaluation_equals_model_and_hand_split():
    model, v, x = _case()
    graph = jp.trace(model, v, x)
    want = _by_hand(v["params"], v["batch_stats"]["BatchNorm_0"], x)
    np.testing.assert_allclose(model.apply(v, x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(graph.apply(v, x), model.apply(v, x))


def test_masking_equals_zeroed_channels():
    model, v, x = _case()
    graph = jp.trace(model, v, x)
    keep = np.ones(9, bool)
    keep[[0, 4, 5, 8]] = False
    got = graph.apply(v, x, masks={"Conv_1": keep})
    want = _by_hand(v["params"], v["batch_stats"]["BatchNorm_0"], x, zero_out=[0, 4, 5, 8])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_prune_equal_numbers_per_group_equals_masked():
    model, v, x = _case()
    graph = jp.trace(model, v, x)
    keep = np.array([True, False, True, True, True, False, False, True, True])  # one per group
    res = jp.prune_units(model, v, {"Conv_1": keep}, x)
    narrow, nv = res.model, res.variables
    assert nv["params"]["Conv_1"]["kernel"].shape == (3, 3, 2, 6)
    assert nv["params"]["Conv_2"]["kernel"].shape == (1, 1, 6, 4)
    np.testing.assert_allclose(
        narrow.apply(nv, x), graph.apply(v, x, masks={"Conv_1": keep}), rtol=1e-5, atol=1e-5
    )
    x2 = jnp.concatenate([x, x[:1]])  # another batch size
    np.testing.assert_allclose(
        narrow.apply(nv, x2),
        jp.trace(model, v, x2).apply(v, x2, masks={"Conv_1": keep}),
        rtol=1e-5,
        atol=1e-5,
    )


def test_prune_unequal_numbers_per_group_is_an_error():
    model, v, x = _case()
    keep = np.array([False, False, True, True, True, True, True, True, True])
    with pytest.raises(GraphError, match=r"equal numbers per group.*\[2, 0, 0\]"):
        jp.prune_units(model, v, {"Conv_1": keep}, x)


def test_prune_input_of_grouped_conv_is_an_error():
    model, v, x = _case()
    keep = np.array([True, False, True, True, True, True])
    with pytest.raises(
        GraphError, match=r"'Conv_0'.*grouped convolution \(feature_group_count=3, 6 -> 9"
    ):
        jp.prune_units(model, v, {"Conv_0": keep}, x)


def test_path_counts_sum_within_groups():
    """Paper 004's construction by hand: each output channel of the grouped 3x3 conv sums the
    9 x 2 paths of its own group's input channels only."""
    model, v, x = _case()
    graph = jp.trace(model, v, x)
    n = 16  # polynomial degree bound

    def act(p, mask):  # an active unit multiplies its channel's polynomial by z
        return np.where(np.asarray(mask)[:, None], np.roll(p, 1, axis=1), p)

    rng = np.random.default_rng(0)
    for _ in range(4):
        masks = {u: rng.random(w.width) < 0.6 for u, w in graph.units.items()}
        p = np.zeros((4, n))
        p[:, 0] = 1.0
        h = act(np.tile(p.sum(0), (6, 1)), masks["Conv_0"])  # 1x1 conv, BatchNorm ignored
        blocks = [np.tile(9 * h[2 * j : 2 * j + 2].sum(0), (3, 1)) for j in range(G)]
        h = act(np.concatenate(blocks), masks["Conv_1"])
        h = act(np.tile(h.sum(0), (4, 1)), masks["Conv_2"])
        out = np.tile(h.sum(0), (2, 1))
        _, log_n = jp.analysis.path_histogram(graph, masks)
        assert log_n == pytest.approx(np.log(out.sum()), rel=1e-12)
        apl = np.arange(n) @ out.sum(0) / out.sum()
        assert jp.analysis.average_path_length(graph, masks) == pytest.approx(apl, rel=1e-12)
