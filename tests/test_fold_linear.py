import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.models import PReLUMLP
from jaxprune.rewrites import fold_linear, mlp_cost, set_linear_slopes, transfer_mask


def random_net(seed, hidden, skips=(), p_linear=0.5, d_in=3):
    rng = np.random.default_rng(seed)
    net = PReLUMLP(hidden=hidden, out=2, skips=skips)
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, d_in)))["params"]
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes)
    linear = {f"prelu_{i}": rng.random(w) < p_linear for i, w in enumerate(hidden)}
    x = jnp.asarray(rng.normal(size=(32, d_in)), jnp.float32)
    return net, set_linear_slopes(params, linear), x


def outputs(net, params, x):
    # float64 reference outputs from a numpy forward pass (no compile per architecture)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    nodes = [np.asarray(x, np.float64)]
    last = len(net.hidden) + 1
    for b in range(1, last + 1):
        layer = p["out"] if b == last else p[f"dense_{b - 1}"]
        z = nodes[b - 1] @ layer["kernel"] + layer["bias"]
        for a, bb in net.skips:
            if bb == b:
                z = z + nodes[a] @ p[f"skip_{a}_{b}"]["kernel"]
        if b < last:
            s = p[f"prelu_{b - 1}"]["slope"]
            z = np.where(z >= 0, z, s * z)
        nodes.append(z)
    return nodes[-1]


CASES = [
    (0, (6, 5, 4), ()),
    (1, (5, 5, 5, 5), ((0, 2), (1, 4))),
    (2, (8, 3, 8), ()),
    (3, (4, 6), ((0, 2),)),
    (4, (7, 7, 7), ()),
]


@pytest.mark.parametrize("only_if_smaller", [True, False])
@pytest.mark.parametrize(("seed", "hidden", "skips"), CASES)
def test_fold_keeps_outputs(seed, hidden, skips, only_if_smaller):
    net, params, x = random_net(seed, hidden, skips)
    small, q = fold_linear(net, params, only_if_smaller=only_if_smaller)
    np.testing.assert_allclose(outputs(small, q, x), outputs(net, params, x), rtol=1e-5, atol=1e-5)
    before, after = mlp_cost(net, params), mlp_cost(small, q)
    assert after.nonlinear_units == before.nonlinear_units
    if only_if_smaller:
        assert after.params <= before.params
    else:  # every linear unit is gone (one hidden layer is always kept)
        slopes = np.concatenate(
            [np.asarray(q[f"prelu_{i}"]["slope"]) for i in range(len(small.hidden))]
        )
        assert (slopes != 1).all() or len(small.hidden) == 1


def test_fully_linear_layer_collapses_and_jitted_apply_matches(key):
    net, params, x = random_net(5, (6, 6, 6), p_linear=0.0)
    params = set_linear_slopes(params, {"prelu_1": np.ones(6, bool)})
    small, q = fold_linear(net, params)
    assert small == PReLUMLP(hidden=(6, 6), out=2)  # the linear layer joined its neighbours
    assert mlp_cost(net, params).depth == 3 and mlp_cost(small, q).depth == 2
    assert mlp_cost(small, q).params == mlp_cost(net, params).params - (6 * 6 + 6 + 6)
    np.testing.assert_allclose(
        jax.jit(small.apply)({"params": q}, x),
        jax.jit(net.apply)({"params": params}, x),
        rtol=1e-5,
        atol=1e-5,
    )


def test_narrow_linear_bottleneck_is_kept_when_folding_would_grow():
    net, params, x = random_net(6, (20, 2, 20), p_linear=0.0)
    params = set_linear_slopes(params, {"prelu_1": np.ones(2, bool)})
    small, _ = fold_linear(net, params)
    assert small.hidden == (20, 2, 20)  # 20x2 + 2x20 < 20x20
    small, q = fold_linear(net, params, only_if_smaller=False)
    assert small.hidden == (20, 20)
    np.testing.assert_allclose(outputs(small, q, x), outputs(net, params, x), rtol=1e-5, atol=1e-5)


def test_partially_linear_layer_becomes_narrower_with_a_skip():
    net, params, x = random_net(7, (10, 10, 10), p_linear=0.0)
    lin = np.arange(10) < 8
    params = set_linear_slopes(params, {"prelu_1": lin})
    small, q = fold_linear(net, params)
    assert small.hidden == (10, 2, 10) and small.skips == ((1, 3),)
    np.testing.assert_allclose(outputs(small, q, x), outputs(net, params, x), rtol=1e-5, atol=1e-5)


def test_slope_not_exactly_one_is_not_folded():
    net, params, _ = random_net(8, (4, 4), p_linear=0.0)
    params["prelu_0"]["slope"] = jnp.full(4, 0.995)
    small, _ = fold_linear(net, params)
    assert small == net


def test_fold_bad_inputs():
    net, params, _ = random_net(9, (3,))
    with pytest.raises(TypeError, match="PReLUMLP"):
        fold_linear(jp.models.MLP(hidden=(3,)), params)
    with pytest.raises(ValueError, match="params"):
        fold_linear(PReLUMLP(hidden=(4,), out=2), params)


def test_transfer_mask_modes(key):
    m = {
        "a": jnp.array([True, True, True, False, False, False]),
        "b": jnp.array([False, False, False, False]),
    }
    exact = transfer_mask(m, "exact")
    assert all((exact[k] == m[k]).all() for k in m)
    layer = transfer_mask(m, "layer", key)
    assert [int(v.sum()) for v in layer.values()] == [3, 0]
    counts_b = [int(transfer_mask(m, "global", k)["b"].sum()) for k in jax.random.split(key, 20)]
    assert sum(counts_b) > 0  # global shuffling moves inactive units across layers
    assert all(
        sum(int(v.sum()) for v in transfer_mask(m, "global", k).values()) == 3
        for k in jax.random.split(key, 3)
    )
    with pytest.raises(ValueError, match="mode"):
        transfer_mask(m, "random")
    with pytest.raises(ValueError, match="key"):
        transfer_mask(m, "layer")
    with pytest.raises(ValueError, match="no 'slope' leaf"):
        set_linear_slopes({"prelu_0": {"slope": jnp.zeros(2)}}, {"prelu_1": [True]})
