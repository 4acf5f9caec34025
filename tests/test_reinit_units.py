import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from jaxprune.rewrites import reinit_units as _reinit_units

# Jitted once per argument set: far cheaper than eager op-by-op dispatch on a small CPU.
reinit_units = jax.jit(_reinit_units, static_argnames=("optimizer", "outgoing"))

MLP = jp.models.MLP(hidden=(4, 3), linear_after=((5,), ()), out_activation="identity")


def _params(model=MLP, x=None):
    x = jnp.zeros((1, 2)) if x is None else x
    return jax.jit(model.init)(jax.random.key(0), x)["params"]


def _changed(a, b):
    return jax.tree.map(lambda u, v: np.asarray(u != v), a, b)


def test_only_chosen_units_change_incoming_bias_and_outgoing():
    p = _params()
    p = jax.tree.map(lambda a: a + 0.5, p)  # nonzero biases, so a reset to 0 is visible
    units = {"relu_0": jnp.array([False, True, False, True]), "relu_1": jnp.array([1, 0, 0], bool)}
    q, state = reinit_units(p, units, jax.random.key(3))
    assert state is None
    c = _changed(p, q)
    np.testing.assert_array_equal(c["relu_0"]["kernel"].all(0), [0, 1, 0, 1])
    np.testing.assert_array_equal(c["relu_0"]["kernel"].any(0), [0, 1, 0, 1])
    np.testing.assert_array_equal(np.asarray(q["relu_0"]["bias"]), [0.5, 0, 0.5, 0])
    np.testing.assert_array_equal(c["linear_0_0"]["kernel"].any(1), [0, 1, 0, 1])
    assert not c["linear_0_0"]["bias"].any()
    np.testing.assert_array_equal(c["relu_1"]["kernel"].any(0), [1, 0, 0])
    np.testing.assert_array_equal(c["out"]["kernel"].any(1), [1, 0, 0])
    assert not c["out"]["bias"].any()


def test_redrawn_kernels_follow_the_layers_lecun_normal_scale():
    model = jp.models.MLP(hidden=(256,), linear_after=((256,),))
    p = jax.tree.map(jnp.zeros_like, _params(model))
    q, _ = reinit_units(p, {"relu_0": jnp.ones(256, bool)}, jax.random.key(1))
    # LeCun normal: std 1/sqrt(fan_in); fan_in 2 for relu_0, 256 for the outgoing linear layer.
    assert abs(float(jnp.std(q["relu_0"]["kernel"])) * np.sqrt(2) - 1) < 0.1
    assert abs(float(jnp.std(q["linear_0_0"]["kernel"])) * 16 - 1) < 0.05
    assert not q["relu_0"]["bias"].any()


def test_zero_outgoing_equals_the_masked_network_and_keep_keeps_them():
    p = _params()
    x = jax.random.normal(jax.random.key(2), (32, 2))
    m = jnp.array([True, False, False, True])
    q, _ = reinit_units(p, {"relu_0": m}, jax.random.key(1), outgoing="zero")
    masked = jp.trace(MLP, {"params": p}, x).apply({"params": p}, x, masks={"relu_0": ~m})
    np.testing.assert_allclose(MLP.apply({"params": q}, x), masked, atol=1e-6)
    k, _ = reinit_units(p, {"relu_0": m}, jax.random.key(1), outgoing="keep")
    np.testing.assert_array_equal(k["linear_0_0"]["kernel"], p["linear_0_0"]["kernel"])


@pytest.mark.parametrize(
    "optimizer", [optax.adam(0.1), optax.chain(optax.clip(1.0), optax.sgd(0.1, momentum=0.9))]
)
def test_optimizer_state_entries_of_changed_weights_are_reset(optimizer):
    p = _params()
    s = optimizer.init(p)
    for _ in range(2):
        _, s = optimizer.update(jax.tree.map(jnp.ones_like, p), s, p)
    fresh = optimizer.init(p)
    units = {"relu_0": jnp.array([False, True, False, False])}
    q, s2 = reinit_units(p, units, jax.random.key(1), optimizer=optimizer, opt_state=s)
    changed = _changed(p, q)
    changed["relu_0"]["bias"] = np.array([False, True, False, False])  # 0 -> 0 is a change too

    def param_leaves(state):  # every leaf of every params-shaped tree in the state, in order
        out = []
        optax.tree_utils.tree_map_params(optimizer, lambda v: out.append(np.asarray(v)), state)
        return out

    before, after, init = param_leaves(s), param_leaves(s2), param_leaves(fresh)
    masks = jax.tree.leaves(changed)
    assert len(after) % len(masks) == 0 and len(after) >= len(masks)
    for i, (b, a, f) in enumerate(zip(before, after, init, strict=True)):
        m = masks[i % len(masks)]
        np.testing.assert_array_equal(a[m], f[m])
        np.testing.assert_array_equal(a[~m], b[~m])
        assert not m.any() or not np.array_equal(b[m], f[m])  # something was reset


def test_jit_vmap_with_traced_per_seed_masks():
    p = _params()
    masks = jnp.array([[True, False, False, False], [False, False, True, True]])
    keys = jax.random.split(jax.random.key(0), 2)
    f = jax.jit(jax.vmap(lambda m, k: _reinit_units(p, {"relu_0": m}, k)[0]))
    q = f(masks, keys)
    for i in range(2):
        ch = np.asarray(q["relu_0"]["kernel"][i] != p["relu_0"]["kernel"]).any(0)
        np.testing.assert_array_equal(ch, masks[i])


def test_conv_channel_reinit_touches_next_input_channel_and_head_rows():
    model = jp.models.ConvNet(features=(3,), linear_after=((2,),), out=2)
    p = _params(model, jnp.zeros((1, 4, 4, 1)))
    q, _ = reinit_units(p, {"conv_0": jnp.array([False, False, True])}, jax.random.key(5))
    c = _changed(p, q)
    np.testing.assert_array_equal(c["conv_0"]["kernel"].any((0, 1, 2)), [0, 0, 1])
    np.testing.assert_array_equal(c["linear_0_0"]["kernel"].any((0, 1, 3)), [0, 0, 1])
    assert not c["out"]["kernel"].any()


def test_bad_arguments_raise():
    p, reinit_units = _params(), _reinit_units
    with pytest.raises(ValueError, match="outgoing: expected one of"):
        reinit_units(p, {}, jax.random.key(0), outgoing="random")
    with pytest.raises(ValueError, match="optimizer, opt_state: give both"):
        reinit_units(p, {}, jax.random.key(0), optimizer=optax.adam(1.0))
    with pytest.raises(ValueError, match=r"units\['relu_0'\]: expected shape \(4,\)"):
        reinit_units(p, {"relu_0": jnp.ones(3, bool)}, jax.random.key(0))
    with pytest.raises(ValueError, match="units: unknown layer"):
        reinit_units(p, {"relu_9": jnp.ones(3, bool)}, jax.random.key(0))
    with pytest.raises(ValueError, match=r"units\['relu_0'\]: expected a bool .* got dtype float"):
        reinit_units(p, {"relu_0": jnp.full(4, 0.5)}, jax.random.key(0))
