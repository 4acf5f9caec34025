"""swap_relu_for_prelu / fold_linear / slope_sparsity on zoo models (paper 004)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from zoo import ZOO

import jaxprune as jp


def _apply(model, kwargs=None):
    kwargs = kwargs or {}
    if hasattr(model, "apply"):
        return lambda v, x: model.apply(v, x, **kwargs)
    return model


def _slopes(v):
    return (v["params"] if "params" in v else v)["prelu"]


@pytest.mark.parametrize(
    ("name", "units"),
    [
        ("mlp", {"Dense_0": 8, "Dense_1": 6}),
        ("cnn", {"Conv_0": 6, "Conv_2": 5}),
        ("resnet_v1_b", {"Conv_0": 4, "ResBlockV1_0/Conv_0": 4, "ResBlockV1_1/Conv_0": 8,
                         "ResBlockV1_1/Conv_1": 8}),
        ("function", {"w1": 7}),
    ],
)  # fmt: skip
def test_swap_is_bit_identical_at_slope_zero(name, units):
    case = ZOO[name]()
    result = jp.rewrites.swap_relu_for_prelu(
        case.model, case.variables, case.x, model_kwargs=case.kwargs
    )
    net, v = result.model, result.variables
    assert {u: s["slope"].shape[0] for u, s in _slopes(v).items()} == units
    assert all(float(jnp.abs(s["slope"]).max()) == 0.0 for s in _slopes(v).values())
    ref = _apply(case.model, case.kwargs)(case.variables, case.x)
    np.testing.assert_array_equal(_apply(net, case.kwargs)(v, case.x), ref)
    # another batch size, under jit: same bits as the jitted original
    f = jax.jit(_apply(net, case.kwargs))
    g = jax.jit(_apply(case.model, case.kwargs))
    np.testing.assert_array_equal(f(v, case.x[:3]), g(case.variables, case.x[:3]))


def _hand_mlp(p, s, x):
    x = np.asarray(x, np.float64)
    act = lambda z, a: np.where(z >= 0, z, a * z)
    h = act(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], s["Dense_0"]["slope"])
    h = act(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"], s["Dense_1"]["slope"])
    return h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]


def test_mlp_with_random_slopes_is_the_hand_written_prelu_forward():
    case = ZOO["mlp"]()
    result = jp.rewrites.swap_relu_for_prelu(case.model, case.variables, case.x)
    net, v = result.model, result.variables
    rng = np.random.default_rng(0)
    v["params"]["prelu"] = jax.tree.map(
        lambda a: jnp.asarray(rng.uniform(-0.5, 1.5, a.shape), a.dtype), v["params"]["prelu"]
    )
    want = _hand_mlp(v["params"], v["params"]["prelu"], case.x)
    np.testing.assert_allclose(jax.jit(net.apply)(v, case.x), want, rtol=1e-5, atol=1e-5)


def test_gradient_in_slopes_and_weights_matches_the_hand_formula():
    case = ZOO["function"]()
    result = jp.rewrites.swap_relu_for_prelu(case.model, case.variables, case.x, slope=0.3)
    f, p = result.model, result.variables
    x = case.x
    loss = lambda q: jnp.sum(f(q, x))
    g = jax.jit(jax.grad(loss))(p)
    z = np.asarray(x, np.float64) @ p["w1"] + p["b1"]
    # d/da_j sum(out) = sum_n min(z_nj, 0) * sum_k w2[j, k]
    want = np.minimum(z, 0).sum(0) * np.asarray(p["w2"], np.float64).sum(1)
    np.testing.assert_allclose(g["prelu"]["w1"]["slope"], want, rtol=1e-5, atol=1e-5)
    # d/dw2 sum(out) = sum_n prelu(z)_n (outer) ones
    h = np.where(z >= 0, z, 0.3 * z)
    np.testing.assert_allclose(g["w2"], np.outer(h.sum(0), np.ones(2)), rtol=1e-5, atol=1e-4)
    # finite differences in one slope (float64 hand forward vs the model)
    d = np.zeros(7)
    d[2] = 1e-2
    bumped = {**p, "prelu": {"w1": {"slope": p["prelu"]["w1"]["slope"] + d}}}
    fd = (float(loss(bumped)) - float(loss(p))) / 1e-2  # exact: the loss is affine in a slope
    assert fd == pytest.approx(float(g["prelu"]["w1"]["slope"][2]), rel=1e-3, abs=1e-3)


def test_slope_sparsity_freezes_the_swapped_slopes_at_099():
    case = ZOO["mlp"]()
    result = jp.rewrites.swap_relu_for_prelu(case.model, case.variables, case.x)
    net, v = result.model, result.variables
    params = v["params"]
    params["prelu"]["Dense_1"]["slope"] = jnp.array([0.995, 0.5, 0, 0, 0, 0.98])
    tx = jp.transforms.slope_sparsity(optax.sgd(0.01), strength=1.0)
    state = tx.init(params)
    assert jp.analysis.slope_layers_of(params) == {"prelu/Dense_0": (8,), "prelu/Dense_1": (6,)}
    loss = lambda q: jnp.mean(net.apply({"params": q}, case.x) ** 2)
    updates, state = jax.jit(tx.update)(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
    s = params["prelu"]["Dense_1"]["slope"]
    assert s[0] == 1.0 and 0.98 < s[5] < 1.0  # frozen exactly at 1; 0.98 moved by the penalty
    assert state.inactive["prelu/Dense_1"].tolist() == [True] + [False] * 5
    assert not state.inactive["prelu/Dense_0"].any()
    updates, state = jax.jit(tx.update)(jax.grad(loss)(params), state, params)
    assert float(updates["prelu"]["Dense_1"]["slope"][0]) == 0.0  # stays at 1
    # the mask transfer helper works on the same paths
    fresh = jp.rewrites.set_linear_slopes(v["params"], {"prelu/Dense_0": np.arange(8) < 3})
    assert fresh["prelu"]["Dense_0"]["slope"].tolist() == [1.0] * 3 + [0.0] * 5


def test_fold_linear_joins_an_all_linear_dense_pair():
    case = ZOO["mlp"]()  # 5 -> 8 -> 6 -> 3
    result = jp.rewrites.swap_relu_for_prelu(case.model, case.variables, case.x)
    net, v = result.model, result.variables
    v["params"]["prelu"]["Dense_0"]["slope"] = jnp.ones(8)
    v["params"]["prelu"]["Dense_1"]["slope"] = jnp.linspace(0, 1, 6)  # partly linear: kept
    result = jp.rewrites.fold_linear(net, v, case.x)
    small, sv = result.model, result.variables
    count = lambda t: sum(int(np.size(a)) for a in jax.tree.leaves(t))
    assert count(v) == (5 * 8 + 8) + (8 * 6 + 6) + (6 * 3 + 3) + 8 + 6 == 137
    assert count(sv) == (5 * 6 + 6) + (6 * 3 + 3) + 6 == 63
    assert sorted(sv["params"]) == ["Dense_1", "Dense_2", "prelu"]
    assert sv["params"]["Dense_1"]["kernel"].shape == (5, 6)
    assert len(jp.trace(net, v, case.x).layers) == 3
    assert len(jp.trace(small, sv, case.x).layers) == 2  # one fewer layer
    ref = net.apply(v, case.x)
    np.testing.assert_allclose(jax.jit(small.apply)(sv, case.x), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(small.apply(sv, case.x[:2]), ref[:2], rtol=1e-5, atol=1e-5)
    # the remaining slopes still train
    g = jax.grad(lambda q: jnp.sum(small.apply({"params": q}, case.x)))(sv["params"])
    assert float(jnp.abs(g["prelu"]["Dense_1"]["slope"]).max()) > 0
    # the second group turning linear folds again: one affine layer, 5 * 3 + 3 parameters
    sv["params"]["prelu"]["Dense_1"]["slope"] = jnp.ones(6)
    result = jp.rewrites.fold_linear(small, sv, case.x)
    tiny, tv = result.model, result.variables
    assert jax.tree.map(jnp.shape, tv) == {"params": {"Dense_2": {"bias": (3,), "kernel": (5, 3)}}}
    np.testing.assert_allclose(
        tiny.apply(tv, case.x), small.apply(sv, case.x), rtol=1e-5, atol=1e-5
    )


def test_fold_linear_function_equals_the_affine_map():
    case = ZOO["function"]()
    result = jp.rewrites.swap_relu_for_prelu(case.model, case.variables, case.x, slope=1.0)
    f, p = result.model, result.variables
    result = jp.rewrites.fold_linear(f, p, case.x)
    g, q = result.model, result.variables
    assert jax.tree.map(jnp.shape, q) == {"b2": (2,), "w2": (5, 2)}
    w = case.variables
    want = (np.asarray(case.x, np.float64) @ w["w1"] + w["b1"]) @ w["w2"] + w["b2"]
    np.testing.assert_allclose(g(q, case.x), want, rtol=1e-5, atol=1e-5)


def test_fold_linear_keeps_what_it_cannot_fold():
    case = ZOO["cnn"]()  # conv groups: kept even when all-linear
    result = jp.rewrites.swap_relu_for_prelu(case.model, case.variables, case.x, slope=1.0)
    net, v = result.model, result.variables
    result = jp.rewrites.fold_linear(net, v, case.x)
    same, sv = result.model, result.variables
    assert same is net and sv is v


def test_swap_and_fold_errors():
    case = ZOO["nested"]()  # tanh only
    with pytest.raises(ValueError, match="no ReLU"):
        jp.rewrites.swap_relu_for_prelu(case.model, case.variables, case.x)
    case = ZOO["mlp"]()
    with pytest.raises(TypeError, match="swap_relu_for_prelu"):
        jp.rewrites.fold_linear(case.model, case.variables, case.x)
    bad = {**case.variables, "params": {**case.variables["params"], "prelu": {}}}
    with pytest.raises(ValueError, match="prelu"):
        jp.rewrites.swap_relu_for_prelu(case.model, bad, case.x)
