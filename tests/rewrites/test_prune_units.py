"""jp.prune_units on the zoo: the narrow model equals the masked network at any batch size,
parameter counts by hand, residual groups, round_to, errors, jit and jax.export."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zoo import ZOO, make_cnn, make_mlp, make_resnet_v1

import jaxprune as jp
from jaxprune.graph import GraphError

LINEN_OR_FUNCTION = [n for n in sorted(ZOO) if not n.startswith(("nnx", "equinox"))]
TOL = dict(rtol=1e-5, atol=1e-5)  # float32: the narrow sums skip exact zeros


def _random_keep(graph, seed):
    rng = np.random.default_rng(seed)
    keep = {}
    for name, unit in graph.units.items():
        m = rng.random(unit.width) < 0.5
        m[rng.integers(unit.width)] = True
        keep[name] = m
    return keep


def _call(narrow, nv, x, **kw):
    return narrow.apply(nv, x, **kw) if isinstance(narrow, nn.Module) else narrow(nv, x, **kw)


def _path(keys):
    return "/".join(str(k.key) for k in keys)


def _size(tree):
    return sum(int(np.size(a)) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", LINEN_OR_FUNCTION)
@pytest.mark.parametrize("seed", [0, 1])
def test_prune_equals_masked_network(name, seed):
    case = ZOO[name]()
    graph = jp.trace(case.model, case.variables, case.x, model_kwargs=case.kwargs)
    keep = _random_keep(graph, seed)
    result = jp.prune_units(case.model, case.variables, keep, case.x, model_kwargs=case.kwargs)
    narrow, nv = result.model, result.variables
    assert jax.tree.structure(nv) == jax.tree.structure(case.variables)
    masked = graph.apply(case.variables, case.x, masks=keep)
    np.testing.assert_allclose(_call(narrow, nv, case.x, **case.kwargs), masked, **TOL)
    # another batch size: the narrow model re-traces the original at the new shape
    x2 = jnp.concatenate([case.x, case.x[:1]])
    g2 = jp.trace(case.model, case.variables, x2, model_kwargs=case.kwargs)
    np.testing.assert_allclose(
        _call(narrow, nv, x2, **case.kwargs), g2.apply(case.variables, x2, masks=keep), **TOL
    )


def test_mlp_parameter_count_by_hand():
    case = make_mlp()  # Dense 5->8, relu, Dense 8->6, relu, Dense 6->3
    keep = {"Dense_0": np.arange(8) < 3, "Dense_1": np.arange(6) % 2 == 0}
    result = jp.prune_units(case.model, case.variables, keep, case.x)
    nv = result.variables
    assert _size(nv) == (5 * 3 + 3) + (3 * 3 + 3) + (3 * 3 + 3)
    assert nv["params"]["Dense_1"]["kernel"].shape == (3, 3)
    np.testing.assert_array_equal(
        nv["params"]["Dense_1"]["kernel"],
        case.variables["params"]["Dense_1"]["kernel"][:3][:, [0, 2, 4]],
    )


def test_cnn_parameter_count_by_hand():
    case = make_cnn()  # conv3x3 2->6, relu, conv1x1 6->4, conv3x3 4->5, relu, pool, 4*4*5 -> 3
    keep = {"Conv_0": np.arange(6) < 2, "Conv_2": np.arange(5) < 3}
    result = jp.prune_units(case.model, case.variables, keep, case.x)
    narrow, nv = result.model, result.variables
    assert _size(nv) == (9 * 2 * 2 + 2) + (2 * 4 + 4) + (9 * 4 * 3 + 3) + (16 * 3 * 3 + 3)
    assert nv["params"]["Dense_0"]["kernel"].shape == (48, 3)
    graph = jp.trace(case.model, case.variables, case.x)
    np.testing.assert_allclose(
        narrow.apply(nv, case.x), graph.apply(case.variables, case.x, masks=keep), **TOL
    )


def test_residual_group_dead_channel_removed_with_unchanged_outputs():
    case = make_resnet_v1("B")
    v = jax.tree.map(lambda a: a, case.variables)
    # channel 5 of block 2's output group: zero it where it is written (conv column in the
    # block and in the projection shortcut, and their BatchNorm scale/bias), so it is dead
    dead = 5
    p, s = v["params"]["ResBlockV1_1"], v["batch_stats"]["ResBlockV1_1"]
    p["Conv_1"]["kernel"] = p["Conv_1"]["kernel"].at[..., dead].set(0.0)
    p["Conv_2"]["kernel"] = p["Conv_2"]["kernel"].at[..., dead].set(0.0)
    for bn in ("BatchNorm_1", "BatchNorm_2"):
        p[bn]["scale"] = p[bn]["scale"].at[dead].set(0.0)
        p[bn]["bias"] = p[bn]["bias"].at[dead].set(0.0)
    del s
    keep = {"ResBlockV1_1/Conv_1": np.arange(8) != dead}
    result = jp.prune_units(case.model, v, keep, case.x, model_kwargs={"train": False})
    narrow, nv = result.model, result.variables
    for conv in ("Conv_1", "Conv_2"):
        assert nv["params"]["ResBlockV1_1"][conv]["kernel"].shape[-1] == 7
    assert nv["params"]["Dense_0"]["kernel"].shape == (7, 3)
    assert nv["batch_stats"]["ResBlockV1_1"]["BatchNorm_2"]["mean"].shape == (7,)
    np.testing.assert_allclose(
        narrow.apply(nv, case.x, train=False), case.model.apply(v, case.x, train=False), **TOL
    )


def test_round_to_keeps_largest_incoming_units():
    case = make_mlp()
    keep = {"Dense_0": np.arange(8) == 0}
    kernel = case.variables["params"]["Dense_0"]["kernel"]
    bias = case.variables["params"]["Dense_0"]["bias"]
    norms = (kernel**2).sum(0) + bias**2
    result = jp.prune_units(case.model, case.variables, keep, case.x, round_to=4)
    nv = result.variables
    assert nv["params"]["Dense_0"]["kernel"].shape == (5, 4)
    extra = np.argsort(-np.asarray(norms[1:]), kind="stable")[:3] + 1
    expect = np.sort(np.concatenate([[0], extra]))
    np.testing.assert_array_equal(nv["params"]["Dense_0"]["kernel"], kernel[:, expect])
    nv8 = jp.prune_units(case.model, case.variables, keep, case.x, round_to=128).variables
    assert nv8["params"]["Dense_0"]["kernel"].shape == (5, 8)  # capped at the full width


def test_bad_masks_raise():
    case = make_mlp()
    m, v, x = case.model, case.variables, case.x
    with pytest.raises(ValueError, match=r"keep\['Dense_0'\]: would remove all 8 units"):
        jp.prune_units(m, v, {"Dense_0": np.zeros(8, bool)}, x)
    with pytest.raises(ValueError, match=r"keep\['Dense_0'\]: expected shape \(8,\)"):
        jp.prune_units(m, v, {"Dense_0": np.ones(9, bool)}, x)
    with pytest.raises(ValueError, match=r"keep\['Dense_0'\]: .* and dtype bool, got .* float32"):
        jp.prune_units(m, v, {"Dense_0": np.ones(8, np.float32)}, x)
    with pytest.raises(ValueError, match=r"keep: unknown unit\(s\) \['nope'\]"):
        jp.prune_units(m, v, {"nope": np.ones(8, bool)}, x)
    with pytest.raises(ValueError, match="keep: expected a mapping"):
        jp.prune_units(m, v, [np.ones(8, bool)], x)
    result = jp.prune_units(m, v, {"Dense_0": np.arange(8) < 4}, x)
    narrow = result.model
    with pytest.raises(flax.errors.ScopeParamShapeError, match="expected to generate shape"):
        narrow.apply(v, x)  # the full-width variables on the narrow model


def test_under_jit_raises_clear_error():
    case = make_mlp()

    @jax.jit
    def f(m):
        return jp.prune_units(case.model, case.variables, {"Dense_0": m}, case.x).variables

    with pytest.raises(ValueError, match="cannot run under jax.jit"):
        f(np.ones(8, bool))


class _NormNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.relu(nn.LayerNorm()(nn.Dense(4)(x))))


def test_coupled_group_raises_graph_error():
    x = jnp.ones((2, 3))
    net = _NormNet()
    v = net.init(jax.random.key(0), x)
    (name,) = jp.trace(net, v, x).units  # the 4 channels normalized by the LayerNorm
    with pytest.raises(GraphError, match=rf"unit group '{name}' cannot be pruned exactly: .*over"):
        jp.prune_units(net, v, {name: np.arange(4) < 2}, x)


def test_jit_vmap_grad_and_export_round_trip_of_pruned_resnet():
    case = make_resnet_v1("B")
    graph = jp.trace(case.model, case.variables, case.x, model_kwargs={"train": False})
    keep = _random_keep(graph, 3)
    result = jp.prune_units(case.model, case.variables, keep, case.x, model_kwargs={"train": False})
    narrow, nv = result.model, result.variables
    ref = graph.apply(case.variables, case.x, masks=keep)
    fwd = jax.jit(lambda v, x: narrow.apply(v, x, train=False))
    np.testing.assert_allclose(fwd(nv, case.x), ref, **TOL)
    per_example = jax.vmap(lambda x: narrow.apply(nv, x[None], train=False)[0])(case.x)
    np.testing.assert_allclose(per_example, ref, **TOL)
    g = jax.grad(lambda v: narrow.apply(v, case.x, train=False).sum())(nv)
    assert jax.tree.structure(g) == jax.tree.structure(nv)
    exported = jax.export.export(fwd)(nv, case.x)
    np.testing.assert_allclose(exported.call(nv, case.x), ref, **TOL)
    pytest.importorskip("flatbuffers")  # jax.export's serialization needs it
    restored = jax.export.deserialize(exported.serialize())
    np.testing.assert_allclose(restored.call(nv, case.x), ref, **TOL)


def test_pruned_resnet_trains_with_mutable_batch_stats():
    """A ResNet pruned in eval mode, called in train mode with mutable batch statistics.

    Expectation, built without jaxprune: the original model with the pruned channels'
    outgoing weights zeroed (the kernel rows that read them). In train mode its output equals
    the narrow model's: a removed channel then contributes nothing downstream, and BatchNorm
    normalizes each channel with its own batch statistics, so the kept channels are
    unaffected. Its updated running statistics are comparable channel by channel: the kept
    channels' entries of the pruned groups' BatchNorms (their inputs do not depend on the
    zeroed rows), and every entry of the other BatchNorms.
    """
    case = make_resnet_v1("B")
    gone0 = np.array([1])  # block 1's inner channels (read by its second conv)
    gone1 = np.array([0, 3, 6])  # block 2's output group (read by the head after pooling)
    keep = {
        "ResBlockV1_0/Conv_0": ~np.isin(np.arange(4), gone0),
        "ResBlockV1_1/Conv_1": ~np.isin(np.arange(8), gone1),
    }
    train = dict(train=True, mutable=["batch_stats"])
    graph = jp.trace(case.model, case.variables, case.x, model_kwargs=train)
    assert {n: u.width for n, u in graph.units.items()} == ZOO["resnet_v1_b"]().units
    result = jp.prune_units(case.model, case.variables, keep, case.x, model_kwargs={"train": False})
    narrow, nv = result.model, result.variables
    y, updates = narrow.apply(nv, case.x, **train)

    zeroed = jax.tree.map(lambda a: a, case.variables)
    p = zeroed["params"]
    k = p["ResBlockV1_0"]["Conv_1"]["kernel"]
    p["ResBlockV1_0"]["Conv_1"]["kernel"] = k.at[:, :, gone0, :].set(0.0)
    p["Dense_0"]["kernel"] = p["Dense_0"]["kernel"].at[gone1].set(0.0)
    y_ref, ref = case.model.apply(zeroed, case.x, **train)
    np.testing.assert_allclose(y, y_ref, **TOL)
    kept_in = {
        "ResBlockV1_0/BatchNorm_0": np.flatnonzero(keep["ResBlockV1_0/Conv_0"]),
        "ResBlockV1_1/BatchNorm_1": np.flatnonzero(keep["ResBlockV1_1/Conv_1"]),
        "ResBlockV1_1/BatchNorm_2": np.flatnonzero(keep["ResBlockV1_1/Conv_1"]),
    }
    flat_ref = {_path(q): a for q, a in jax.tree_util.tree_flatten_with_path(ref)[0]}
    flat_new = jax.tree_util.tree_flatten_with_path(updates)[0]
    assert len(flat_new) == len(flat_ref) == 2 * 6  # mean and var of 6 BatchNorms
    for q, a in flat_new:
        path = _path(q)
        expect = flat_ref[path]
        bn = path.split("/", 1)[1].rsplit("/", 1)[0]
        if bn in kept_in:
            expect = expect[kept_in[bn]]
        assert a.shape == expect.shape, path
        np.testing.assert_allclose(a, expect, err_msg=path, **TOL)
    # the updates have the narrow shapes: they go back into the narrow variables
    assert jax.tree.map(np.shape, updates["batch_stats"]) == jax.tree.map(
        np.shape, nv["batch_stats"]
    )
    # and the masked network agrees (the same call through the traced graph)
    y_masked, _ = graph.apply(case.variables, case.x, masks=keep)
    np.testing.assert_allclose(y, y_masked, **TOL)

    # a jitted training step on the narrow model keeps the narrow shapes
    @jax.jit
    def step(v, x):
        def loss(params):
            out, upd = narrow.apply({**v, "params": params}, x, **train)
            return (out**2).mean(), upd

        (value, upd), g = jax.value_and_grad(loss, has_aux=True)(v["params"])
        params = jax.tree.map(lambda a, b: a - 0.1 * b, v["params"], g)
        return {"params": params, **upd}, value

    v2, l1 = step(nv, case.x)
    v3, l2 = step(v2, case.x)
    assert jax.tree.map(np.shape, v3) == jax.tree.map(np.shape, nv)
    assert np.isfinite(l1) and np.isfinite(l2) and l2 < l1


@st.composite
def _mlps(draw):
    widths = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    keeps = [np.asarray(draw(st.lists(st.booleans(), min_size=w, max_size=w))) for w in widths]
    for k in keeps:
        k[draw(st.integers(0, len(k) - 1))] = True
    return widths, keeps, draw(st.integers(1, 4))


class _RandomMLP(nn.Module):
    widths: tuple

    @nn.compact
    def __call__(self, x):
        for w in self.widths:
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(2)(x)


@settings(max_examples=15, deadline=None)
@given(spec=_mlps())
def test_random_mlps_prune_invariants(spec):
    widths, keeps, batch = spec
    model = _RandomMLP(widths)
    x = jax.random.normal(jax.random.key(batch), (batch, 3))
    v = model.init(jax.random.key(0), x)
    keep = {f"Dense_{i}": k for i, k in enumerate(keeps)}
    result = jp.prune_units(model, v, keep, x)
    narrow, nv = result.model, result.variables
    kept = [int(k.sum()) for k in keeps]
    dims = [3, *kept, 2]
    assert _size(nv) == sum(a * b + b for a, b in zip(dims[:-1], dims[1:], strict=True))
    masked = jp.trace(model, v, x).apply(v, x, masks=keep)
    np.testing.assert_allclose(narrow.apply(nv, x), masked, **TOL)
    # pruning everything kept is the identity
    result = jp.prune_units(model, v, {k: np.ones_like(m) for k, m in keep.items()}, x)
    same, sv = result.model, result.variables
    np.testing.assert_allclose(same.apply(sv, x), model.apply(v, x), **TOL)
