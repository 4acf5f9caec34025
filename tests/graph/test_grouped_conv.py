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
    row = next(r for r in str(graph).splitlines() if r.startswith("Conv_1"))
    assert row.split()[1] == "grouped_conv" and "Conv_1 [9 = 3 x 3]" in row
    assert graph.units["Conv_0"].coupled == ()  # read by the grouped conv: see period
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


def test_prune_input_at_the_same_positions_in_every_group_equals_masked():
    """The grouped conv reads in-group position r of every group with kernel[..., r, :]: its
    input channels are pruned at the same positions in every group (period 2 here)."""
    model, v, x = _case()
    graph = jp.trace(model, v, x)
    assert graph.units["Conv_0"].period == 2 and graph.units["Conv_1"].period == 0
    keep = np.array([False, True] * 3)  # position 1 of each of the 3 groups
    res = jp.prune_units(model, v, {"Conv_0": keep}, x)
    p = res.variables["params"]
    assert p["Conv_0"]["kernel"].shape == (1, 1, 4, 3)
    assert p["Conv_1"]["kernel"].shape == (3, 3, 1, 9)  # in-group position 1 kept
    np.testing.assert_array_equal(p["Conv_1"]["kernel"], v["params"]["Conv_1"]["kernel"][:, :, 1:])
    want = graph.apply(v, x, masks={"Conv_0": keep})
    np.testing.assert_allclose(res.model.apply(res.variables, x), want, rtol=1e-5, atol=1e-5)
    # both sides at once: the grouped conv's input and its output (one per group)
    out_keep = np.array([True, False, True, True, True, False, False, True, True])
    both = {"Conv_0": keep, "Conv_1": out_keep}
    res = jp.prune_units(model, v, both, x)
    assert res.variables["params"]["Conv_1"]["kernel"].shape == (3, 3, 1, 6)
    np.testing.assert_allclose(
        res.model.apply(res.variables, x), graph.apply(v, x, masks=both), rtol=1e-5, atol=1e-5
    )


def test_prune_input_at_different_positions_per_group_is_an_error():
    model, v, x = _case()
    keep = np.array([True, False, False, True, True, False])  # one per group, not aligned
    with pytest.raises(GraphError, match=r"'Conv_0'.*\(period 2\).*same positions in every group"):
        jp.prune_units(model, v, {"Conv_0": keep}, x)


def test_keep_top_with_graph_keeps_the_same_positions_in_every_group():
    model, v, x = _case()
    graph = jp.trace(model, v, x)
    scores = {"Conv_0": np.array([1.0, 0.0, 0.0, 5.0, 2.0, 0.0]), "Conv_1": np.ones(9)}
    keep = jp.analysis.keep_top(scores, 0.5, graph=graph)
    assert keep["Conv_0"].tolist() == [False, True] * 3  # position sums: 1 + 0 + 2 < 0 + 5 + 0
    assert keep["Conv_1"].reshape(3, 3).sum(axis=1).tolist() == [2, 2, 2]


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


def test_reading_entries_of_the_grouped_kernel_belong_to_the_input_units():
    """Input channel c = 2 j + r is read by kernel[..., r, 3 j : 3 j + 3] only: those entries
    are its outgoing entries (freeze and reinit mark them), and its magnitude counts them."""
    model, v, x = _case()
    graph = jp.trace(model, v, x)
    ((leaf, axes, idx),) = graph.grouped_slices("Conv_0")
    assert (leaf, axes) == ("params/Conv_1/kernel", (2, 3))
    want = np.array([[2 * (o // 3) + r for o in range(9)] for r in range(2)])
    np.testing.assert_array_equal(idx, want)
    assert graph.grouped_slices("Conv_1") == []
    unit = np.zeros(6, bool)
    unit[3] = True  # group 1, in-group position 1
    mask = graph.unit_param_mask(v["params"], {"Conv_0": unit}, incoming=False)
    hand = np.zeros((3, 3, 2, 9), bool)
    hand[:, :, 1, 3:6] = True
    np.testing.assert_array_equal(mask["Conv_1"]["kernel"], hand)
    assert not mask["Conv_1"]["bias"].any()
    np.testing.assert_array_equal(mask["Conv_0"]["kernel"], np.zeros((1, 1, 4, 6), bool))
    # magnitude: the 1x1 conv's column and bias, BatchNorm's entries, the grouped kernel's part
    p = v["params"]
    scores = jp.analysis.importance(graph, v, x, "magnitude")["Conv_0"]
    for c in range(6):
        j, r = divmod(c, 2)
        entries = [
            p["Conv_0"]["kernel"][..., c],
            p["Conv_0"]["bias"][c],
            p["BatchNorm_0"]["scale"][c],
            p["BatchNorm_0"]["bias"][c],
            p["Conv_1"]["kernel"][:, :, r, 3 * j : 3 * j + 3],
        ]
        want = np.sqrt(sum(float(jnp.sum(jnp.square(e))) for e in entries))
        assert scores[c] == pytest.approx(want, rel=1e-6)


def test_prune_round_to_keeps_the_grouped_shapes():
    """round_to=6 on one kept per group (3 of 9) adds the best removed one in every group (the
    largest kernel-column-and-bias norm); on the grouped conv's input, whole positions."""
    model, v, x = _case()
    p = v["params"]
    out_keep = np.array([True, False, False] * 3)
    res = jp.prune_units(model, v, {"Conv_1": out_keep}, x, round_to=6)
    norm = np.sum(np.square(p["Conv_1"]["kernel"]), axis=(0, 1, 2)) + np.square(p["Conv_1"]["bias"])
    want = out_keep.copy()
    for j in range(G):
        want[3 * j + 1 + int(np.argmax(norm[3 * j + 1 : 3 * j + 3]))] = True
    got = np.asarray(res.variables["params"]["Conv_1"]["bias"])
    np.testing.assert_array_equal(got, p["Conv_1"]["bias"][want])
    in_keep = np.array([True, False] * 3)  # 3 of 6 kept; round_to=4 -> both positions (6)
    res = jp.prune_units(model, v, {"Conv_0": in_keep}, x, round_to=4)
    assert res.variables["params"]["Conv_1"]["kernel"].shape == (3, 3, 2, 9)
