"""reinit_units on user-style models: the model's own initializer, ablation equivalence, moments."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trainable import loss_fn, trainable
from zoo import ZOO

import jaxprune as jp
from jaxprune.rewrites import reinit_units


def _setup(name):
    case = ZOO[name]()
    graph = jp.trace(case.model, case.variables, case.x, model_kwargs=case.kwargs)
    params, combine = trainable(case, graph)
    return case, graph, params, combine


@pytest.mark.parametrize("unit", ["ResBlockV1_1/Conv_1", "Conv_0", "ResBlockV1_0/Conv_0"])
def test_zeroed_outgoing_through_projection_equals_ablation(unit):
    # "ResBlockV1_1/Conv_1": block 2's output, written by its conv and its 1x1 projection;
    # "Conv_0": the stem + block 1 (identity skip), read by block 2's conv and projection.
    case, graph, params, combine = _setup("resnet_v1_b")
    w = graph.units[unit].width
    m = jnp.arange(w) % 3 == 1
    q, _ = reinit_units(graph, params, {unit: m}, jax.random.key(5), outgoing="zero")
    got = case.model.apply(combine(q), case.x)
    want = graph.apply(case.variables, case.x, masks={unit: 1.0 - m})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    intact = case.model.apply(case.variables, case.x)
    assert np.abs(np.asarray(want - intact)).max() > 1e-3  # the ablation changes the output
    # the writers were redrawn: the projection's kernel columns and BatchNorm entries
    if unit == "ResBlockV1_1/Conv_1":
        old, new = params["ResBlockV1_1"], q["ResBlockV1_1"]
        changed = np.asarray(new["Conv_2"]["kernel"] != old["Conv_2"]["kernel"]).any(axis=(0, 1, 2))
        assert changed.tolist() == np.asarray(m).tolist()
        assert np.asarray(new["BatchNorm_2"]["scale"])[np.asarray(m)].tolist() == [1.0] * int(
            m.sum()
        )


class GlorotMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        init = nn.initializers.glorot_uniform()
        h = nn.relu(nn.Dense(256, kernel_init=init, bias_init=nn.initializers.constant(0.5))(x))
        return nn.Dense(4, kernel_init=init)(h)


def test_redrawn_entries_follow_the_models_own_initializer():
    x = jnp.ones((2, 64))
    model = GlorotMLP()
    variables = model.init(jax.random.key(0), x)
    p = jax.tree.map(lambda a: a + 3.0, variables["params"])  # "trained": far from the init
    graph = jp.trace(model, {"params": p}, x)
    m = jnp.arange(256) < 128
    q, _ = jax.jit(
        lambda p, m: reinit_units(graph, p, {"Dense_0": m}, jax.random.key(1), outgoing="redraw")
    )(p, m)
    k = np.asarray(q["Dense_0"]["kernel"])
    bound = np.sqrt(6 / (64 + 256))
    fresh = k[:, :128]
    assert np.abs(fresh).max() <= bound and np.abs(fresh).max() > 0.95 * bound
    np.testing.assert_allclose(fresh.std(), bound / np.sqrt(3), rtol=0.03)  # uniform's std
    assert np.asarray(q["Dense_0"]["bias"])[:128].tolist() == [0.5] * 128  # bias_init
    out = np.asarray(q["Dense_1"]["kernel"])
    assert np.abs(out[:128]).max() <= np.sqrt(6 / (256 + 4))  # redrawn rows: Dense_1's init
    # untouched entries: bit-identical
    assert np.array_equal(k[:, 128:], np.asarray(p["Dense_0"]["kernel"])[:, 128:])
    assert np.array_equal(out[128:], np.asarray(p["Dense_1"]["kernel"])[128:])
    assert np.array_equal(q["Dense_1"]["bias"], p["Dense_1"]["bias"])
    keep, _ = reinit_units(graph, p, {"Dense_0": m}, jax.random.key(1), outgoing="keep")
    assert np.array_equal(keep["Dense_1"]["kernel"], p["Dense_1"]["kernel"])
    np.testing.assert_array_equal(keep["Dense_0"]["kernel"], k)


def _init_fn(name, case):
    if name == "nnx_mlp":
        from flax import nnx

        return lambda key: type(case.model)(nnx.Rngs(key))
    if name == "equinox_mlp":
        return lambda key: type(case.model)(key)
    return lambda key: jax.tree.map(lambda a: jax.random.normal(key, a.shape), case.variables)


@pytest.mark.parametrize("name", ["mlp", "concat", "cnn", "nnx_mlp", "equinox_mlp", "function"])
def test_every_kind_copies_the_fresh_draw_and_resets_moments(name):
    case, graph, params, combine = _setup(name)
    unit = list(graph.units)[-1]
    m = jnp.arange(graph.units[unit].width) % 2 == 0
    init_fn = None if graph.model.kind == "linen" else _init_fn(name, case)
    tx = optax.adam(1e-2)
    loss = loss_fn(case, graph, combine)
    state = tx.init(params)
    for _ in range(3):  # built-up moments
        state = tx.update(jax.grad(loss)(params), state, params)[1]
    key = jax.random.key(7)
    q, s = reinit_units(
        graph, params, {unit: m}, key, optimizer=tx, opt_state=state, init_fn=init_fn
    )
    inc = graph.unit_param_mask(params, {unit: m}, outgoing=False)
    out = graph.unit_param_mask(params, {unit: m}, incoming=False)
    changed = jax.tree.map(jnp.logical_or, inc, out)
    if init_fn is None:
        fresh = case.model.init(key, case.x, **case.kwargs)["params"]
    else:
        fresh = init_fn(key)
        if graph.model.kind == "nnx":
            fresh.eval()  # a new NNX module starts in training mode; trace reads it predicting
        if graph.model.kind != "function":
            fresh = trainable(
                type(case)(fresh, None, case.x, case.units), jp.trace(fresh, None, case.x)
            )[0]
    for a, b, f, i, c in zip(
        *(jax.tree.leaves(t) for t in (params, q, fresh, inc, changed)), strict=True
    ):
        a, b, f, i, c = map(np.asarray, (a, b, f, i, c))
        assert np.array_equal(b[i], f[i])  # incoming: the fresh draw, exactly
        assert np.array_equal(b[~c], a[~c])  # untouched: unchanged
    assert sum(int(np.asarray(i).sum()) for i in jax.tree.leaves(inc)) > 0
    mu, nu = s[0].mu, s[0].nu
    for leaf_mu, leaf_nu, old_mu, c in zip(
        *(jax.tree.leaves(t) for t in (mu, nu, state[0].mu, changed)), strict=True
    ):
        c = np.asarray(c)
        assert (np.asarray(leaf_mu)[c] == 0).all() and (np.asarray(leaf_nu)[c] == 0).all()
        assert np.array_equal(np.asarray(leaf_mu)[~c], np.asarray(old_mu)[~c])
    assert int(s[0].count) == 3  # the shared step count is kept (see the Adam test)


def test_adam_first_update_after_reset_is_3x_a_fresh_adams():
    """Decision: reset mu/nu, keep Adam's shared count; the first step is ~3.16 lr, not lr."""
    _, graph, params, _ = _setup("mlp")
    lr, b1, b2 = 1e-3, 0.9, 0.999
    tx = optax.adam(lr, b1, b2)
    g = jax.tree.map(lambda a: jnp.full_like(a, 0.3), params)
    state = tx.init(params)
    state = (state[0]._replace(count=jnp.asarray(10_000, jnp.int32)), *state[1:])
    state = tx.update(g, state, params)[1]  # moments built up
    m = jnp.zeros(8, bool).at[0].set(True)
    base, _ = tx.update(g, state, params)
    _, state = reinit_units(
        graph, params, {"Dense_0": m}, jax.random.key(0), optimizer=tx, opt_state=state
    )
    u, _ = tx.update(g, state, params)
    t = 10_002
    expected = -lr * ((1 - b1) / (1 - b1**t)) / np.sqrt((1 - b2) / (1 - b2**t))
    reset = float(u["Dense_0"]["kernel"][0, 0])
    np.testing.assert_allclose(reset, expected, rtol=1e-4)
    np.testing.assert_allclose(reset / -lr, 3.162, rtol=1e-3)  # vs a fresh Adam's first step
    fresh_u, _ = tx.update(g, tx.init(params), params)
    np.testing.assert_allclose(float(fresh_u["Dense_0"]["kernel"][0, 0]), -lr, rtol=1e-4)
    # entries not reset step exactly as without the reinit
    np.testing.assert_array_equal(u["Dense_0"]["kernel"][:, 1:], base["Dense_0"]["kernel"][:, 1:])
    np.testing.assert_array_equal(u["Dense_2"]["kernel"], base["Dense_2"]["kernel"])


def test_bad_input_names_the_argument():
    case, graph, params, _ = _setup("mlp")
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"units: unknown unit\(s\) \['relu_0'\].*Dense_0"):
        reinit_units(graph, params, {"relu_0": jnp.ones(8, bool)}, key)
    with pytest.raises(ValueError, match=r"units\['Dense_0'\]: expected shape \(8,\)"):
        reinit_units(graph, params, {"Dense_0": jnp.ones(3, bool)}, key)
    with pytest.raises(ValueError, match=r"units\['Dense_0'\]: .* and dtype bool, got .* float32"):
        reinit_units(graph, params, {"Dense_0": jnp.full(8, 0.5)}, key)
    with pytest.raises(ValueError, match="outgoing: expected one of"):
        reinit_units(graph, params, {}, key, outgoing="random")
    with pytest.raises(ValueError, match="optimizer, opt_state"):
        reinit_units(graph, params, {}, key, optimizer=optax.adam(1.0))
    _, eqx_graph, eqx_params, _ = _setup("equinox_mlp")
    with pytest.raises(ValueError, match="init_fn: required for a equinox model"):
        reinit_units(eqx_graph, eqx_params, {"layers/0": jnp.ones(8, bool)}, key)
