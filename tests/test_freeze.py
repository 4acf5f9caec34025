import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from jaxprune.transforms import FreezeUnitsState, freeze_units, set_frozen_units

MLP = jp.models.MLP(hidden=(3, 2), linear_after=((4, 2), ()))
CONV = jp.models.ConvNet(features=(3, 2), linear_after=((), ()), out=2)


def _params(model, x):
    return jax.jit(model.init)(jax.random.key(0), x)["params"]


def _ones_like(tree):
    return jax.tree.map(jnp.ones_like, tree)


def test_zeroes_incoming_bias_and_outgoing_of_frozen_units_only():
    params = _params(MLP, jnp.zeros((1, 2)))
    frozen = {"relu_0": jnp.array([False, True, False]), "relu_1": jnp.array([True, False])}
    tx = freeze_units(frozen)
    updates, _ = jax.jit(tx.update)(_ones_like(params), tx.init(params), params)
    zero = jax.tree.map(lambda u: np.asarray(u == 0), updates)
    np.testing.assert_array_equal(zero["relu_0"]["kernel"], np.tile([0, 1, 0], (2, 1)))
    np.testing.assert_array_equal(zero["relu_0"]["bias"], [0, 1, 0])
    np.testing.assert_array_equal(zero["linear_0_0"]["kernel"], np.repeat([[0], [1], [0]], 4, 1))
    assert not zero["linear_0_0"]["bias"].any() and not zero["linear_0_1"]["kernel"].any()
    # relu_1's incoming kernel: its unit 0 column (incoming), not relu_0's outgoing rows.
    np.testing.assert_array_equal(zero["relu_1"]["kernel"], np.tile([1, 0], (2, 1)))
    np.testing.assert_array_equal(zero["out"]["kernel"], [[1], [0]])
    assert not zero["out"]["bias"].any()


def test_conv_channels_freeze_next_input_channel_and_head_rows():
    x = jnp.zeros((1, 4, 4, 1))
    params = _params(CONV, x)
    tx = freeze_units(
        {"conv_0": jnp.array([False, True, False]), "conv_1": jnp.array([True, False])}
    )
    updates, _ = jax.jit(tx.update)(_ones_like(params), tx.init(params), params)
    zero = jax.tree.map(lambda u: np.asarray(u == 0), updates)
    assert (
        zero["conv_0"]["kernel"][..., 1].all() and not zero["conv_0"]["kernel"][..., [0, 2]].any()
    )
    k1 = zero["conv_1"]["kernel"]  # (3, 3, 3 in, 2 out): in-channel 1 (outgoing) | out-channel 0
    assert k1[:, :, 1, :].all() and k1[..., 0].all() and not k1[:, :, [0, 2], 1].any()
    head = zero["out"]["kernel"].reshape(4 * 4, 2, 2)  # flattened (H, W, C) rows
    assert head[:, 0].all() and not head[:, 1].any()


def test_frozen_weights_do_not_move_under_adam_momentum_and_others_match_adam():
    params = _params(MLP, jnp.zeros((1, 2)))
    x = jax.random.normal(jax.random.key(1), (16, 2))
    loss = lambda p: jnp.mean(MLP.apply({"params": p}, x) ** 2)
    none = {"relu_0": jnp.zeros(3, bool)}
    tx = optax.chain(optax.adam(0.1), freeze_units(none))
    ref = optax.adam(0.1)
    s, r = tx.init(params), ref.init(params)
    p = q = params

    @jax.jit
    def step(p, s, q, r):
        u, s = tx.update(jax.grad(loss)(p), s, p)
        v, r = ref.update(jax.grad(loss)(q), r, q)
        return optax.apply_updates(p, u), s, optax.apply_updates(q, v), r

    for _ in range(3):  # build up momentum with nothing frozen: identical to plain Adam
        p, s, q, r = step(p, s, q, r)
    # Same values as plain Adam (up to XLA's float reassociation inside one program).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), p, q)
    s = set_frozen_units(s, {"relu_0": jnp.array([True, False, False])})
    before = p
    for _ in range(3):
        p, s, _, _ = step(p, s, q, r)
    assert np.array_equal(p["relu_0"]["kernel"][:, 0], before["relu_0"]["kernel"][:, 0])
    assert p["relu_0"]["bias"][0] == before["relu_0"]["bias"][0]
    assert np.array_equal(p["linear_0_0"]["kernel"][0], before["linear_0_0"]["kernel"][0])
    assert not np.array_equal(p["relu_0"]["kernel"][:, 1], before["relu_0"]["kernel"][:, 1])


def test_mask_change_does_not_recompile_keeps_dtype_and_state_structure():
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), _params(MLP, jnp.zeros((1, 2))))
    tx = optax.chain(optax.sgd(0.1, momentum=0.9), freeze_units({"relu_1": jnp.zeros(2, bool)}))
    traces = []

    @jax.jit
    def step(p, s):
        traces.append(1)
        u, s = tx.update(_ones_like(p), s, p)
        return optax.apply_updates(p, u), s

    s = tx.init(params)
    structure = jax.tree.structure(s)
    p, s = step(params, s)
    s = set_frozen_units(s, {"relu_1": jnp.array([False, True])})
    p2, s = step(p, s)
    assert len(traces) == 1
    assert jax.tree.structure(s) == structure
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(p2))
    assert p2["relu_1"]["bias"][1] == p["relu_1"]["bias"][1]
    assert p2["relu_1"]["bias"][0] != p["relu_1"]["bias"][0]


def test_per_seed_masks_under_vmap():
    params = _params(MLP, jnp.zeros((1, 2)))
    tx = freeze_units({"relu_1": jnp.zeros(2, bool)})
    masks = jnp.array([[True, False], [False, True]])

    def one(m):
        s = set_frozen_units(tx.init(params), {"relu_1": m})
        return tx.update(_ones_like(params), s, params)[0]["relu_1"]["bias"]

    np.testing.assert_array_equal(jax.vmap(one)(masks), [[0, 1], [1, 0]])


def test_bad_masks_raise_naming_the_argument():
    params = _params(MLP, jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"frozen\['relu_0'\]: expected a 1-D"):
        freeze_units({"relu_0": jnp.zeros((3, 1), bool)})
    with pytest.raises(ValueError, match="frozen: expected a non-empty"):
        freeze_units({})
    tx = freeze_units({"relu_0": jnp.zeros(4, bool)})
    with pytest.raises(ValueError, match=r"frozen\['relu_0'\]: expected shape \(3,\)"):
        tx.update(params, tx.init(params), params)
    tx = freeze_units({"dense": jnp.zeros(3, bool)})
    with pytest.raises(ValueError, match="frozen: unknown layer"):
        tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match="opt_state: contains no FreezeUnitsState"):
        set_frozen_units(optax.sgd(1.0).init(params), {"relu_0": jnp.zeros(3, bool)})
    s = freeze_units({"relu_0": jnp.zeros(3, bool)}).init(params)
    assert isinstance(s, FreezeUnitsState)
    with pytest.raises(ValueError, match=r"frozen\['relu_0'\]: expected shape \(3,\)"):
        set_frozen_units(s, {"relu_0": jnp.zeros(2, bool)})
