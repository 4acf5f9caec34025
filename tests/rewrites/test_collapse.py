"""jp.collapse on the zoo and on hand-built chains: outputs before == after at two batch sizes,
parameter counts by hand, BatchNorm folding, what is left alone, jit/export, random MLPs."""

import itertools

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from zoo import ZOO, make_cnn, make_resnet_v1, make_resnet_v2

import jaxprune as jp

LINEN_OR_FUNCTION = [n for n in sorted(ZOO) if not n.startswith(("nnx", "equinox"))]
TOL = dict(rtol=1e-5, atol=1e-5)  # float32; the folded kernels are products at HIGHEST


def _call(model, v, x, **kw):
    if isinstance(model, nn.Module):
        return model.apply(v, x, **kw)
    if isinstance(model, (nnx.Module, eqx.Module)):  # they hold their own variables
        return model(x, **kw)
    return model(v, x, **kw)


def _size(tree):
    return sum(int(np.size(a)) for a in jax.tree.leaves(tree))


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_collapse_keeps_outputs(name):
    case = ZOO[name]()
    result = jp.collapse(case.model, case.variables, case.x, model_kwargs=case.kwargs)
    small, sv = result.model, result.variables
    before = _call(case.model, case.variables, case.x, **case.kwargs)
    np.testing.assert_allclose(_call(small, sv, case.x, **case.kwargs), before, **TOL)
    x2 = jnp.concatenate([case.x, -case.x[:3]])  # another batch size: re-traced
    before2 = _call(case.model, case.variables, x2, **case.kwargs)
    np.testing.assert_allclose(_call(small, sv, x2, **case.kwargs), before2, **TOL)


@pytest.mark.parametrize("name", ["mlp", "nested", "concat", "depthwise"])
def test_models_without_chains_are_unchanged(name):
    case = ZOO[name]()
    sv = jp.collapse(case.model, case.variables, case.x, model_kwargs=case.kwargs).variables
    assert _shapes(sv) == _shapes(jax.tree.map(jnp.asarray, dict(case.variables)))


def test_layernorm_bias_folds_into_the_next_dense_layer():
    # LayerNorm's scale multiplies the per-example 1/std (not a constant), but its bias is a
    # per-channel shift right before Dense_0: it folds (exact), 4 parameters fewer
    case = ZOO["transformer_mlp"]()
    result = jp.collapse(case.model, case.variables, case.x)
    sv = result.variables
    assert _shapes(sv)["params"]["LayerNorm_0"] == {"scale": (4,)}
    assert _size(case.variables) - _size(sv) == 4
    p = case.variables["params"]
    want = p["LayerNorm_0"]["bias"] @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    np.testing.assert_allclose(sv["params"]["Dense_0"]["bias"], want, rtol=1e-6, atol=1e-6)


def test_paper_000_model_2_collapses_from_55_to_13_parameters():
    model = jp.models.MLP(hidden=(3,), linear_after=((9,),))  # 2 -> 3 relu -> 9 -> 1
    x = jax.random.normal(jax.random.key(1), (7, 2))
    v = model.init(jax.random.key(0), x)
    result = jp.collapse(model, v, x)
    small, sv = result.model, result.variables
    assert _size(v) == 2 * 3 + 3 + 3 * 9 + 9 + 9 * 1 + 1 == 55
    assert _size(sv) == 2 * 3 + 3 + 3 * 1 + 1 == 13
    assert _shapes(sv) == {
        "params": {
            "relu_0": {"kernel": (2, 3), "bias": (3,)},
            "linear_0_0": {"kernel": (3, 1), "bias": (1,)},  # linear_0_0 and out, folded
        }
    }
    p = v["params"]
    k = p["linear_0_0"]["kernel"] @ p["out"]["kernel"]  # Eq. 6: K' = K1 K2
    b = p["linear_0_0"]["bias"] @ p["out"]["kernel"] + p["out"]["bias"]  # b' = b1 K2 + b2
    np.testing.assert_allclose(sv["params"]["linear_0_0"]["kernel"], k, rtol=1e-6)
    np.testing.assert_allclose(sv["params"]["linear_0_0"]["bias"], b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(small.apply(sv, x), model.apply(v, x), **TOL)


class Chains(nn.Module):
    """Every chain kind: kxk -> 1x1, bias-free 1x1 -> kxk (+BN), 1x1 -> flatten -> dense ->
    dense."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(6, (3, 3))(x)
        x = nn.relu(nn.Conv(4, (1, 1))(x))
        x = nn.Conv(8, (1, 1), use_bias=False)(x)  # widening: folding it shrinks the model
        x = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(5, (3, 3))(x)))
        x = nn.Conv(8, (1, 1))(x)
        x = nn.Dense(7)(x.reshape((x.shape[0], -1)))
        return nn.Dense(3)(x)


def test_every_chain_kind_folds_with_counts_by_hand():
    x = jax.random.normal(jax.random.key(1), (3, 6, 6, 2))
    model = Chains()
    v = model.init(jax.random.key(0), x)
    v = {**v, "batch_stats": jax.tree.map(lambda a: a + 0.5, v["batch_stats"])}
    result = jp.collapse(model, v, x)
    small, sv = result.model, result.variables
    assert _size(v) == (108 + 6) + (24 + 4) + 32 + (360 + 5) + 4 * 5 + (40 + 8) + (288 * 7 + 7) + 24
    assert _shapes(sv) == {
        "params": {
            "Conv_0": {"kernel": (3, 3, 2, 4), "bias": (4,)},  # Conv_0 -> Conv_1 (1x1)
            "Conv_2": {"kernel": (3, 3, 4, 5), "bias": (5,)},  # 1x1 -> 3x3 -> BatchNorm
            "Conv_4": {"kernel": (6 * 6 * 5, 3), "bias": (3,)},  # 1x1 -> flatten -> 2 dense
        }
    }
    assert _size(sv) == 76 + 185 + 543 == 804
    np.testing.assert_allclose(small.apply(sv, x), model.apply(v, x), **TOL)


def test_cnn_1x1_conv_with_bias_before_same_conv_is_left_alone():
    # Conv_1 (1x1, with bias) -> Conv_2 (3x3, SAME): at the borders the padding is 0, not the
    # bias, so the fold would not be exact: collapse leaves the zoo CNN as it is ...
    case = make_cnn()
    sv = jp.collapse(case.model, case.variables, case.x).variables
    assert _shapes(sv) == _shapes(dict(case.variables))

    # ... and folds the same chain once the 1x1 conv has no bias (exact): 6*8 + 3*3*8*5 + 5
    # (Conv_1 + Conv_2) become 3*3*6*5 + 5 under Conv_1.
    class NoBias(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(6, (3, 3))(x))
            x = nn.Conv(8, (1, 1), use_bias=False)(x)
            x = nn.relu(nn.Conv(5, (3, 3))(x))
            return nn.Dense(3)(x.reshape((x.shape[0], -1)))

    m = NoBias()
    v = m.init(jax.random.key(0), case.x)
    result = jp.collapse(m, v, case.x)
    small, sv = result.model, result.variables
    assert _size(v) - _size(sv) == (48 + 360 + 5) - (270 + 5)
    assert _shapes(sv)["params"]["Conv_1"] == {"kernel": (3, 3, 6, 5), "bias": (5,)}
    np.testing.assert_allclose(small.apply(sv, case.x), m.apply(v, case.x), **TOL)


def test_batchnorm_folds_into_convs_of_resnet_v1_b():
    case = make_resnet_v1("B")
    result = jp.collapse(case.model, case.variables, case.x, model_kwargs={"train": False})
    small, sv = result.model, result.variables
    # every BatchNorm follows a conv: stem (conv has a bias: -4*4), block 1: two bias-free
    # convs (-4*4 + 4 each), block 2: two convs and the projection (-4*8 + 8 each)
    assert _size(case.variables) - _size(sv) == 16 + 2 * 12 + 3 * 24
    assert "batch_stats" not in sv
    assert not any("BatchNorm" in k for k in jax.tree_util.keystr(sv).split("'"))
    np.testing.assert_allclose(
        small.apply(sv, case.x, train=False), case.model.apply(case.variables, case.x), **TOL
    )


def test_batchnorm_folds_where_exact_in_resnet_v2():
    case = make_resnet_v2()
    result = jp.collapse(case.model, case.variables, case.x, model_kwargs={"train": False})
    small, sv = result.model, result.variables
    # folded: each block's middle BN (after its first conv, before relu): -4*4+4, -4*6+6;
    # kept: the pre-activation BNs (they read the residual sum, also read by the shortcut)
    # and the final BN (after a residual join)
    assert _size(case.variables) - _size(sv) == 12 + 18
    assert sorted(sv["batch_stats"]) == ["BatchNorm_0", "ResBlockV2_0", "ResBlockV2_1"]
    np.testing.assert_allclose(
        small.apply(sv, case.x), case.model.apply(case.variables, case.x), **TOL
    )


def test_collapsed_model_under_jit_and_export():
    case = make_resnet_v1("A")
    result = jp.collapse(case.model, case.variables, case.x, model_kwargs={"train": False})
    small, sv = result.model, result.variables
    exp = jax.export.export(jax.jit(small.apply))(sv, case.x)
    want = case.model.apply(case.variables, case.x)
    np.testing.assert_allclose(exp.call(sv, case.x), want, **TOL)
    np.testing.assert_allclose(jax.jit(small.apply)(sv, case.x), want, **TOL)


def test_function_model_collapses():
    def f(p, x):
        return jnp.tanh(x @ p["w1"]) @ p["w2"] @ p["w3"] + p["b3"]

    ks = jax.random.split(jax.random.key(0), 3)
    p = {
        "w1": jax.random.normal(ks[0], (4, 5)),
        "w2": jax.random.normal(ks[1], (5, 6)),
        "w3": jax.random.normal(ks[2], (6, 2)),
        "b3": jnp.ones(2),
    }
    x = jax.random.normal(jax.random.key(1), (8, 4))
    result = jp.collapse(f, p, x)
    g, q = result.model, result.variables
    assert _shapes(q) == {"w1": (4, 5), "w2": (5, 2), "w2_bias": (2,)}
    np.testing.assert_allclose(g(q, x), f(p, x), **TOL)


def test_collapse_under_vmap_over_variables():
    model = jp.models.MLP(hidden=(3,), linear_after=((4, 4),))
    x = jax.random.normal(jax.random.key(1), (5, 2))
    vs = jax.vmap(lambda k: model.init(k, x))(jax.random.split(jax.random.key(0), 3))
    small = jp.collapse(model, jax.tree.map(lambda a: a[0], vs), x).model
    svs = jax.vmap(lambda v: jp.collapse(model, v, x).variables)(vs)
    got = jax.vmap(lambda v: small.apply(v, x))(svs)
    np.testing.assert_allclose(got, jax.vmap(lambda v: model.apply(v, x))(vs), **TOL)


@settings(max_examples=15, deadline=None)
@given(
    hidden=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    linear=st.lists(st.lists(st.integers(1, 6), max_size=3), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_random_mlps_with_linear_layers_collapse_to_the_plain_mlp(hidden, linear, seed):
    linear_after = tuple(tuple(w) for w in linear[: len(hidden)])
    model = jp.models.MLP(hidden=tuple(hidden), linear_after=linear_after)
    x = jax.random.normal(jax.random.key(seed), (6, 3))
    v = model.init(jax.random.key(seed + 1), x)
    v = jax.tree.map(lambda a: a + 0.1, v)  # non-zero biases
    result = jp.collapse(model, v, x)
    small, sv = result.model, result.variables
    # the fewest parameters over every way to cut each run (biased dense layers a -> b cost
    # a*b + b), by brute force over the cut sets
    widths = [3, *hidden, 1]
    best = widths[0] * widths[1] + widths[1]
    for i in range(len(hidden)):
        lin = linear_after[i] if i < len(linear_after) else ()
        run = [widths[i + 1], *lin, widths[i + 2]]
        inner = range(1, len(run) - 1)
        costs = []
        for cuts in itertools.product([False, True], repeat=len(inner)):
            ends = [0] + [j for j, c in zip(inner, cuts, strict=True) if c] + [len(run) - 1]
            costs.append(sum(run[a] * run[b] + run[b] for a, b in itertools.pairwise(ends)))
        best += min(costs)
    assert _size(sv) == best
    ref = model.apply(v, x)
    tol = 1e-5 * max(1.0, float(jnp.abs(ref).max()))
    np.testing.assert_allclose(small.apply(sv, x), ref, rtol=1e-4, atol=tol)


class NormFirst(nn.Module):
    """BatchNorm *before* layers: into a dense and a VALID conv (exact), not into a SAME
    conv (at the borders the zero padding is not the BatchNorm shift)."""

    @nn.compact
    def __call__(self, x):
        norm = lambda: nn.BatchNorm(use_running_average=True)  # noqa: E731
        h = nn.relu(nn.Conv(4, (3, 3), padding="VALID")(norm()(x)))  # folds
        h = nn.relu(nn.Conv(4, (3, 3), padding="SAME")(norm()(h)))  # left alone
        h = norm()(h.reshape((h.shape[0], -1)))
        return nn.Dense(2)(h)  # folds


def test_batchnorm_before_a_layer_folds_where_exact():
    x = jax.random.normal(jax.random.key(1), (3, 6, 6, 2))
    model = NormFirst()
    v = model.init(jax.random.key(0), x)
    v = {**v, "batch_stats": jax.tree.map(lambda a: a + 0.7, v["batch_stats"])}
    v["params"] = jax.tree.map(lambda a: a + 0.2, v["params"])
    result = jp.collapse(model, v, x)
    small, sv = result.model, result.variables
    assert sorted(sv["batch_stats"]) == ["BatchNorm_1"]  # the one before the SAME conv
    assert sorted(sv["params"]) == ["BatchNorm_1", "Conv_0", "Conv_1", "Dense_0"]
    # BN_0 (2 ch) and BN_2 (64 features): 2 * 4 + 64 * 4 entries gone, no new leaves
    assert _size(v) - _size(sv) == 2 * 4 + 64 * 4
    np.testing.assert_allclose(small.apply(sv, x), model.apply(v, x), **TOL)


def test_per_position_constants_and_other_call_modes_are_not_folded():
    class PosEmb(nn.Module):
        @nn.compact
        def __call__(self, x):  # (N, T, C): a (T, C) table added between two dense layers
            pos = self.param("pos", nn.initializers.normal(1.0), x.shape[1:-1] + (4,))
            return nn.Dense(3)(nn.Dense(4)(x) + pos)

    x = jax.random.normal(jax.random.key(1), (2, 5, 3))
    m = PosEmb()
    v = m.init(jax.random.key(0), x)
    result = jp.collapse(m, v, x)
    small, sv = result.model, result.variables
    assert _shapes(sv) == _shapes(dict(v))
    np.testing.assert_allclose(small.apply(sv, x), m.apply(v, x), **TOL)

    case = make_resnet_v1("B")
    result = jp.collapse(case.model, case.variables, case.x, model_kwargs={"train": False})
    small, sv = result.model, result.variables
    with pytest.raises(jp.GraphError, match="traces differently"):
        small.apply(sv, case.x, train=True, mutable=["batch_stats"])


class Pooled(nn.Module):
    """Average pooling inside linear runs: it commutes with channel maps (exact)."""

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(5, (1, 1))(x)  # 1x1 -> avg pool -> VALID 3x3: one conv after the pool
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = nn.relu(nn.Conv(6, (3, 3), padding="VALID")(h))
        h = nn.Conv(4, (1, 1))(h)  # 1x1 -> global mean -> dense -> dense
        return nn.Dense(2)(nn.Dense(3)(jnp.mean(h, axis=(1, 2))))


def test_average_pooling_inside_a_run_folds():
    x = jax.random.normal(jax.random.key(1), (3, 10, 10, 2))
    model = Pooled()
    v = model.init(jax.random.key(0), x)
    v = jax.tree.map(lambda a: a + 0.1, v)  # non-zero biases
    result = jp.collapse(model, v, x)
    small, sv = result.model, result.variables
    assert _shapes(sv) == {
        "params": {
            "Conv_0": {"kernel": (3, 3, 2, 6), "bias": (6,)},  # 2*5+5 + 3*3*5*6+6 -> 108+6
            # after the global mean the run is a dense map: 6*4+4 + 4*3+3 + 3*2+2 -> 6*2+2
            "Conv_2": {"kernel": (6, 2), "bias": (2,)},
        }
    }
    np.testing.assert_allclose(small.apply(sv, x), model.apply(v, x), **TOL)
    x2 = jax.random.normal(jax.random.key(2), (5, 10, 10, 2))
    np.testing.assert_allclose(small.apply(sv, x2), model.apply(v, x2), **TOL)


def test_valid_kxk_convs_compose_into_one_larger_conv():
    """3x3 (stride 1) -> 3x3 (stride 2), both VALID, no nonlinearity between: one 5x5 conv
    with stride 2, kernel sum_{a+b=u} K1[a] K2[b] (written out here in float64)."""

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Conv(4, (3, 3), padding="VALID")(x)
            h = nn.Conv(5, (3, 3), strides=2, padding="VALID")(h)
            return nn.Dense(2)(jnp.mean(nn.relu(h), axis=(1, 2)))

    x = jax.random.normal(jax.random.key(0), (3, 11, 11, 2))
    net = Net()
    v = net.init(jax.random.key(1), x)
    result = jp.collapse(net, v, x)
    small, sv = result.model, result.variables
    p = v["params"]
    assert _size(v) == (9 * 2 * 4 + 4) + (9 * 4 * 5 + 5) + (5 * 2 + 2)
    assert _shapes(sv["params"]["Conv_0"]) == {"kernel": (5, 5, 2, 5), "bias": (5,)}
    assert _size(sv) == (25 * 2 * 5 + 5) + (5 * 2 + 2)
    k1 = np.asarray(p["Conv_0"]["kernel"], np.float64)
    k2 = np.asarray(p["Conv_1"]["kernel"], np.float64)
    want = np.zeros((5, 5, 2, 5))
    for a in np.ndindex(3, 3):
        for b in np.ndindex(3, 3):
            want[a[0] + b[0], a[1] + b[1]] += k1[a] @ k2[b]
    bias = np.asarray(p["Conv_0"]["bias"]) @ k2.sum(axis=(0, 1)) + np.asarray(p["Conv_1"]["bias"])
    np.testing.assert_allclose(sv["params"]["Conv_0"]["kernel"], want, **TOL)
    np.testing.assert_allclose(sv["params"]["Conv_0"]["bias"], bias, **TOL)
    np.testing.assert_allclose(small.apply(sv, x), net.apply(v, x), **TOL)


def test_padded_or_strided_first_kxk_conv_is_not_composed():
    class Net(nn.Module):
        padding: str
        stride: int

        @nn.compact
        def __call__(self, x):
            h = nn.Conv(4, (3, 3), strides=self.stride, padding=self.padding)(x)
            h = nn.Conv(5, (3, 3), padding="VALID")(h)
            return nn.relu(h)

    x = jax.random.normal(jax.random.key(0), (2, 12, 12, 2))
    for padding, stride in (("SAME", 1), ("VALID", 2)):
        net = Net(padding, stride)
        v = net.init(jax.random.key(1), x)
        result = jp.collapse(net, v, x)
        small, sv = result.model, result.variables
        assert _shapes(sv) == _shapes(v)  # nothing folded: not exact
        np.testing.assert_allclose(small.apply(sv, x), net.apply(v, x), **TOL)


def test_a_bottleneck_is_not_collapsed_into_a_larger_layer():
    """4 -> 1 -> 3 (no nonlinearity): one 4x3 layer (15 parameters) would outgrow the two
    (4 + 1 + 3 + 3 = 11), so the run stays; 4 -> 1 -> 3 -> 3 folds only its last pair."""

    class Net(nn.Module):
        depth: int

        @nn.compact
        def __call__(self, x):
            h = nn.Dense(3)(nn.Dense(1)(x))
            for _ in range(self.depth - 2):
                h = nn.Dense(3)(h)
            return h

    x = jax.random.normal(jax.random.key(0), (5, 4))
    for depth, before, after in ((2, 11, 11), (3, 23, (4 + 1) + (1 * 3 + 3))):
        net = Net(depth)
        v = net.init(jax.random.key(1), x)
        result = jp.collapse(net, v, x)
        small, sv = result.model, result.variables
        assert _size(v) == before
        assert _size(sv) == after
        np.testing.assert_allclose(small.apply(sv, x), net.apply(v, x), **TOL)
