"""Importance scores over coupled groups against hand computations; keep_top's rules; pruning
with its masks equals the masked model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxprune as jp
from jaxprune.graph import GraphError


class SkipNet(nn.Module):
    """Dense, BatchNorm, relu; a second Dense added back onto it (a skip), relu; a head."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(4)(x)))
        r = nn.relu(nn.Dense(4)(h) + h)
        return nn.Dense(2)(r)


def _case():
    x = jax.random.normal(jax.random.key(1), (8, 3))
    y = jax.random.normal(jax.random.key(2), (8, 2))
    model = SkipNet()
    v = model.init(jax.random.key(0), x)
    stats = {"mean": jnp.array([0.1, -0.2, 0.0, 0.3]), "var": jnp.array([1.5, 0.5, 1.0, 2.0])}
    p = jax.tree.map(lambda a: a + 0.1, v["params"])  # non-zero biases and BatchNorm bias
    return model, {"params": p, "batch_stats": {"BatchNorm_0": stats}}, x, y


def _forward(p, stats, x):
    h = x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    h = (h - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5)
    h = nn.relu(h * p["BatchNorm_0"]["scale"] + p["BatchNorm_0"]["bias"])
    r = nn.relu(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"] + h)
    return h, r, r @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]


def _group_entries(p, i):
    """Every parameter entry of unit i of the group {Dense_0, BatchNorm_0, Dense_1}."""
    return [
        p["Dense_0"]["kernel"][:, i],  # kernel column
        p["Dense_0"]["bias"][i : i + 1],
        p["BatchNorm_0"]["scale"][i : i + 1],
        p["BatchNorm_0"]["bias"][i : i + 1],
        p["Dense_1"]["kernel"][:, i],  # the skip's partner writes channel i too
        p["Dense_1"]["bias"][i : i + 1],
        p["Dense_1"]["kernel"][i, :],  # read slices: the next kernels' rows
        p["Dense_2"]["kernel"][i, :],
    ]


def test_magnitude_is_the_norm_of_all_coupled_slices():
    model, v, x, _ = _case()
    scores = jp.analysis.importance(model, v, x, method="magnitude")
    assert list(scores) == ["Dense_0"]  # one group: the skip ties Dense_1 to Dense_0
    want = [
        np.sqrt(sum(float(jnp.sum(e**2)) for e in _group_entries(v["params"], i))) for i in range(4)
    ]
    np.testing.assert_allclose(scores["Dense_0"], want, rtol=1e-6)


def test_taylor_is_the_summed_weight_times_gradient():
    model, v, x, y = _case()
    scores = jp.analysis.importance(model, v, (x, y), method="taylor", loss="mse")

    def loss(p):
        return jnp.mean((_forward(p, v["batch_stats"]["BatchNorm_0"], x)[2] - y) ** 2)

    g = jax.grad(loss)(v["params"])
    want = []
    for i in range(4):
        ws, gs = _group_entries(v["params"], i), _group_entries(g, i)
        want.append(abs(sum(float(jnp.sum(w * d)) for w, d in zip(ws, gs, strict=True))))
    np.testing.assert_allclose(scores["Dense_0"], want, rtol=1e-4, atol=1e-7)
    # and under jit, on the traced graph
    graph = jp.trace(model, v, x)
    jitted = jax.jit(lambda v: jp.analysis.importance(graph, v, (x, y), method="taylor"))
    np.testing.assert_allclose(jitted(v)["Dense_0"], scores["Dense_0"], rtol=1e-5)


def test_activation_is_the_mean_absolute_value_where_read():
    model, v, x, _ = _case()
    scores = jp.analysis.importance(model, v, (x, None), method="activation")
    h, r, _ = _forward(v["params"], v["batch_stats"]["BatchNorm_0"], x)
    # the group is read by Dense_1 (h) and by the head (r): the mean over both reads
    want = (jnp.mean(jnp.abs(h), axis=0) + jnp.mean(jnp.abs(r), axis=0)) / 2
    np.testing.assert_allclose(scores["Dense_0"], want, rtol=1e-6)


def test_activation_of_a_conv_unit_averages_over_positions():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Conv(3, (3, 3))(x))
            return nn.Dense(2)(h.reshape(h.shape[0], -1))  # flatten: channels inner

    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 2))
    net = Net()
    v = net.init(jax.random.key(0), x)
    h = nn.relu(nn.Conv(3, (3, 3)).apply({"params": v["params"]["Conv_0"]}, x))
    got = jp.analysis.importance(net, v, x, method="activation")["Conv_0"]
    np.testing.assert_allclose(got, jnp.mean(jnp.abs(h), axis=(0, 1, 2)), rtol=1e-6)


def test_keep_top_keeps_exactly_the_top_half():
    s = {"a": np.array([0.3, 0.9, 0.1, 0.7, 0.5, 0.2]), "b": np.array([5.0, 1.0, 3.0, 4.0])}
    keep = jp.analysis.keep_top(s, ratio=0.5)
    assert keep["a"].tolist() == [False, True, False, True, True, False]
    assert keep["b"].tolist() == [True, False, False, True]
    # globally, "b"'s larger scores win: 5 of 10 kept, 4 of them in "b"
    keep = jp.analysis.keep_top(s, ratio=0.5, per_layer=False)
    assert keep["a"].tolist() == [False, True, False, False, False, False]
    assert keep["b"].tolist() == [True, True, True, True]
    # never a group emptied: "a" keeps its best even when all of "b" outranks it
    keep = jp.analysis.keep_top(
        {"a": np.array([0.1, 0.2]), "b": np.full(8, 9.0)}, 0.25, per_layer=False
    )
    assert keep["a"].tolist() == [False, True] and keep["b"].sum() == 3  # ceil(0.25 * 10)


def test_keep_top_round_to_rounds_each_count_up():
    s = {"a": np.arange(64.0), "b": np.arange(10.0)}
    keep = jp.analysis.keep_top(s, ratio=0.3, round_to=8)
    assert keep["a"].sum() == 24  # ceil(19.2) = 20 -> 24
    assert keep["a"][-24:].all()  # the extra ones are the next best
    assert keep["b"].sum() == 8  # ceil(3) = 3 -> 8
    keep = jp.analysis.keep_top({"c": np.arange(5.0)}, ratio=0.2, round_to=8)
    assert keep["c"].all()  # capped at the width, never zero


def test_keep_top_bad_input():
    s = {"a": np.ones(3)}
    for bad in (0, 1.5, -0.1, True):
        with pytest.raises(ValueError, match=r"ratio: expected a fraction"):
            jp.analysis.keep_top(s, ratio=bad)
    for bad in (0, 2.5, -8):
        with pytest.raises(ValueError, match=r"round_to: expected a positive int"):
            jp.analysis.keep_top(s, ratio=0.5, round_to=bad)
    with pytest.raises(ValueError, match=r"scores\['a'\]: expected a non-empty finite"):
        jp.analysis.keep_top({"a": np.array([1.0, np.nan])}, ratio=0.5)


def test_importance_bad_input():
    model, v, x, y = _case()
    with pytest.raises(ValueError, match=r"method: expected one of \['magnitude', 'taylor'"):
        jp.analysis.importance(model, v, (x, y), method="l1")
    with pytest.raises(ValueError, match=r"data: method 'taylor' needs \(x, y\)"):
        jp.analysis.importance(model, v, method="taylor")
    with pytest.raises(ValueError, match=r"data"):
        jp.analysis.importance(model, v, x, method="taylor")


def test_prune_with_keep_top_equals_masked_model():
    model, v, x, y = _case()
    graph = jp.trace(model, v, x)
    keep = jp.analysis.keep_top(jp.analysis.importance(graph, v, (x, y), "taylor"), 0.5)
    assert keep["Dense_0"].sum() == 2
    res = jp.prune_units(model, v, keep, x)
    assert res.variables["params"]["Dense_1"]["kernel"].shape == (2, 2)
    np.testing.assert_allclose(
        res.model.apply(res.variables, x), graph.apply(v, x, masks=keep), rtol=1e-5, atol=1e-6
    )


def test_keep_top_with_graph_prunes_grouped_conv_equally_per_group():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Conv(4, (1, 1))(x))
            h = nn.relu(nn.Conv(8, (3, 3), feature_group_count=2)(h))
            return nn.Dense(2)(h.mean(axis=(1, 2)))

    x = jax.random.normal(jax.random.key(1), (2, 5, 5, 3))
    net = Net()
    v = net.init(jax.random.key(0), x)
    graph = jp.trace(net, v, x)
    scores = {"Conv_0": np.ones(4), "Conv_1": np.array([8.0, 7, 6, 5, 4, 3, 2, 1])}
    assert jp.analysis.keep_top(scores, 0.5)["Conv_1"].tolist() == [True] * 4 + [False] * 4
    keep = jp.analysis.keep_top(scores, 0.5, graph=graph)
    assert keep["Conv_1"].tolist() == [True, True, False, False] * 2  # two best of each group
    assert keep["Conv_0"].tolist() == [True, False] * 2  # read by it: same position per group
    with pytest.raises(GraphError, match=r"equal numbers per group"):
        jp.prune_units(net, v, {"Conv_1": jp.analysis.keep_top(scores, 0.5)["Conv_1"]}, x)
    res = jp.prune_units(net, v, {"Conv_1": keep["Conv_1"]}, x)
    np.testing.assert_allclose(
        res.model.apply(res.variables, x),
        graph.apply(v, x, masks={"Conv_1": keep["Conv_1"]}),
        rtol=1e-5,
        atol=1e-6,
    )


def test_keep_top_round_to_with_conv_groups_rounds_the_total():
    """A grouped unit (12 channels, 3 groups) keeps equal numbers per group; round_to applies
    to the total: ratio 0.25 -> 1 per group -> 3, rounded up to 6 -> 2 per group."""

    class FakeGraph:
        units = {"g": jp.graph.Unit("g", 12, ("g",), ("relu",), (), groups=3)}

    s = {"g": np.array([9.0, 1, 2, 3, 8, 7, 1, 1, 1, 1, 5, 6])}
    keep = jp.analysis.keep_top(s, 0.25, graph=FakeGraph(), round_to=6)["g"]
    assert keep.reshape(3, 4).sum(axis=1).tolist() == [2, 2, 2]
    assert np.flatnonzero(keep).tolist() == [0, 3, 4, 5, 10, 11]  # the two best per group


@settings(max_examples=40, deadline=None)
@given(
    widths=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    ratio=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**16),
)
def test_keep_top_keeps_the_best_at_the_ratio(widths, ratio, seed):
    rng = np.random.default_rng(seed)
    scores = {f"u{i}": rng.permutation(100)[:w] + rng.random() for i, w in enumerate(widths)}
    keep = jp.analysis.keep_top(scores, ratio)
    for k, s in scores.items():
        assert keep[k].sum() == max(1, int(np.ceil(ratio * s.size)))
        if not keep[k].all():
            assert s[keep[k]].min() > s[~keep[k]].max()
    keep = jp.analysis.keep_top(scores, ratio, per_layer=False)
    allv = np.concatenate(list(scores.values()))
    kept = np.concatenate([keep[k] for k in scores])
    n = int(np.ceil(ratio * allv.size))
    top = np.zeros(allv.size, bool)
    top[np.argsort(-allv)[:n]] = True
    forced = [k for k in scores if not top[_span(scores, k)].any()]  # their best, kept anyway
    for k in forced:
        top[_span(scores, k).start + int(np.argmax(scores[k]))] = True
    np.testing.assert_array_equal(kept, top)


def _span(scores, name):
    start = 0
    for k, s in scores.items():
        if k == name:
            return slice(start, start + s.size)
        start += s.size
    raise KeyError(name)


def test_magnitude_of_an_nnx_model_counts_its_params_not_batch_stats():
    from zoo import make_nnx_mlp

    case = make_nnx_mlp()
    m = case.model
    m.bn.mean[...] = m.bn.mean[...] + 3.0  # running statistics: not parameters
    scores = jp.analysis.importance(m, None, case.x, "magnitude")
    entries = [
        m.fc1.kernel[...],
        m.fc1.bias[...][None],
        m.bn.scale[...][None],
        m.bn.bias[...][None],
        m.fc2.kernel[...].T,
    ]
    want = np.sqrt(sum(np.sum(np.square(e), axis=0) for e in entries))
    np.testing.assert_allclose(scores["fc1"], want, rtol=1e-6)
