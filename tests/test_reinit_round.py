import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxprune as jp
from jaxprune.analysis import layer_mask, magnitude_mask, random_mask
from jaxprune.rewrites import (
    model_initializer,
    reinit_round,
    reinitialize,
)

MODEL = jp.models.BlockMLP(hidden=(6, 5), out=3)
X = jax.random.normal(jax.random.key(0), (16, 7))
INIT = model_initializer(MODEL, X)
PARAMS = INIT(jax.random.key(1))


def _zeros(params):
    return jax.tree.map(lambda p: jnp.zeros(p.shape, bool), params)


def test_reinitialize_selects_exactly_eq1():
    w = {"a": jnp.array([1.0, jnp.inf, 3.0, -2.0])}
    eta = {"a": jnp.array([5.0, 6.0, jnp.nan, 8.0])}
    s = {"a": jnp.array([0.0, 1.0, 0.0, 1.0])}
    np.testing.assert_array_equal(reinitialize(w, s, eta)["a"], [1.0, 6.0, 3.0, 8.0])


def test_all_false_mask_is_a_noop_and_all_true_gives_the_fresh_draw():
    tx = optax.sgd(0.1, momentum=0.9)
    state = tx.update(jax.tree.map(jnp.ones_like, PARAMS), tx.init(PARAMS), PARAMS)[1]
    same, same_state = reinit_round(
        PARAMS, _zeros(PARAMS), jax.random.key(2), INIT, optimizer=tx, opt_state=state
    )
    jax.tree.map(np.testing.assert_array_equal, same, PARAMS)
    jax.tree.map(np.testing.assert_array_equal, same_state, state)
    full = jax.tree.map(lambda p: jnp.ones(p.shape, bool), PARAMS)
    new, new_state = reinit_round(
        PARAMS, full, jax.random.key(2), INIT, optimizer=tx, opt_state=state
    )
    jax.tree.map(np.testing.assert_array_equal, new, INIT(jax.random.key(2)))
    assert all(float(jnp.abs(t).max()) == 0.0 for t in jax.tree.leaves(new_state))


def test_round_redraws_masked_entries_from_layer_initializer_and_resets_momentum():
    tx = optax.sgd(0.1, momentum=0.9)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    state = tx.update(grads, tx.init(PARAMS), PARAMS)[1]
    mask = random_mask(PARAMS, jax.random.key(3), 0.5)
    fn = jax.jit(lambda p, m, k, s: reinit_round(p, m, k, INIT, optimizer=tx, opt_state=s))
    new, new_state = fn(PARAMS, mask, jax.random.key(4), state)
    eta = INIT(jax.random.key(4))
    trace = new_state[0].trace
    for path in (("relu_0", "kernel"), ("out", "kernel"), ("relu_1", "bias")):
        m = np.asarray(mask[path[0]][path[1]])
        got = np.asarray(new[path[0]][path[1]])
        np.testing.assert_array_equal(got[m], np.asarray(eta[path[0]][path[1]])[m])
        np.testing.assert_array_equal(got[~m], np.asarray(PARAMS[path[0]][path[1]])[~m])
        tr = np.asarray(trace[path[0]][path[1]])
        np.testing.assert_array_equal(tr[m], 0.0)
        np.testing.assert_array_equal(tr[~m], 1.0)  # first momentum trace = the gradient


def test_reinitialize_keeps_dtype():
    p = {"a": jnp.arange(4, dtype=jnp.bfloat16)}
    out = reinitialize(p, {"a": jnp.array(True)}, {"a": jnp.zeros(4, jnp.float32)})
    assert out["a"].dtype == jnp.bfloat16 and float(out["a"].sum()) == 0.0


def test_bad_masks_raise():
    with pytest.raises(ValueError, match="mask: expected the structure"):
        reinitialize(PARAMS, {"out": True}, PARAMS)
    bad = _zeros(PARAMS)
    bad["out"]["kernel"] = jnp.zeros((2, 2), bool)
    with pytest.raises(ValueError, match=r"mask\['out'\]\['kernel'\]: shape \(2, 2\)"):
        reinitialize(PARAMS, bad, PARAMS)
    with pytest.raises(ValueError, match="optimizer, opt_state"):
        reinit_round(PARAMS, _zeros(PARAMS), jax.random.key(0), INIT, optimizer=optax.sgd(1.0))


@settings(max_examples=5)
@given(fraction=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_mask_sizes_are_exact_per_tensor(fraction, seed):
    params = INIT(jax.random.key(seed))
    for mask in (
        random_mask(params, jax.random.key(seed), fraction),
        magnitude_mask(params, fraction),
    ):
        for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params), strict=True):
            assert m.shape == p.shape and m.dtype == bool
            assert int(m.sum()) == int(np.floor(fraction * p.size + 0.5))


@settings(max_examples=10)
@given(fraction=st.floats(0.05, 0.95), seed=st.integers(0, 2**16))
def test_magnitude_mask_holds_the_smallest_entries(fraction, seed):
    w = jax.random.normal(jax.random.key(seed), (7, 9))
    m = np.asarray(magnitude_mask({"d": {"kernel": w}}, fraction)["d"]["kernel"])
    a = np.abs(np.asarray(w))
    if 0 < m.sum() < m.size:
        assert a[m].max() <= a[~m].min()


def test_random_mask_is_uniform_and_fixed_by_its_key():
    p = {"d": {"kernel": jnp.zeros((5, 8))}}
    keys = jax.random.split(jax.random.key(7), 400)
    masks = jax.vmap(lambda k: random_mask(p, k, 0.25)["d"]["kernel"])(keys)
    freq = np.asarray(masks.mean(0))
    np.testing.assert_allclose(freq, 0.25, atol=0.09)  # 400 draws: sd = 0.022 per entry
    np.testing.assert_array_equal(random_mask(p, keys[0], 0.25)["d"]["kernel"], masks[0])
    assert not np.array_equal(masks[0], masks[1])


def test_layer_mask_and_bad_arguments():
    m = layer_mask(PARAMS, ["out"])
    assert all(bool(v.all()) for v in jax.tree.leaves(m["out"]))
    assert not any(bool(v.any()) for k in ("relu_0", "relu_1") for v in jax.tree.leaves(m[k]))
    with pytest.raises(ValueError, match=r"layers: \['head'\] not in params"):
        layer_mask(PARAMS, ["head"])
    with pytest.raises(ValueError, match=r"fraction: expected a value in \[0, 1\], got 1.5"):
        random_mask(PARAMS, jax.random.key(0), 1.5)
    with pytest.raises(ValueError, match="fraction"):
        magnitude_mask(PARAMS, -0.1)
    only = random_mask(PARAMS, jax.random.key(0), 1.0, layers=["relu_1"])
    assert int(sum(v.sum() for v in jax.tree.leaves(only))) == 6 * 5 + 5
