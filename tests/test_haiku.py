"""Haiku models in the trainers: ``hk.transform`` / ``hk.transform_with_state`` passed directly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp

hk = pytest.importorskip("haiku")

X = jax.random.normal(jax.random.key(0), (40, 4))
Y = (X[:, :1] * X[:, 1:2] + jnp.sin(X[:, 2:3])) * 3.0 + 5.0
KW = dict(loss="mse", batch_size=16, progress=False)  # 40 rows: 3 steps an epoch (16, 16, 8)


def bn_net(x, is_training):
    h = hk.Linear(16)(x)
    h = hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=0.9)(h, is_training)
    return hk.Linear(1)(jax.nn.relu(h))


def dropout_net(x, train=False):
    h = jax.nn.relu(hk.Linear(16)(x))
    if train:
        h = hk.dropout(hk.next_rng_key(), 0.5, h)
    return hk.Linear(1)(h)


def _counters(state):
    return {
        f"{m}/{n}": int(np.asarray(a).reshape(-1)[0])
        for m, d in state.items()
        for n, a in d.items()
        if n == "counter"
    }


def test_transform_with_state_trains_batch_norm_and_evaluates_with_its_state():
    t = hk.transform_with_state(bn_net)
    epochs = 10
    r = jp.training.train_epochs(
        t, (X, Y), keys=jax.random.key(1), optimizer=optax.adam(5e-2), epochs=epochs, **KW
    )
    loss = np.asarray(r.history["loss"])
    assert loss[-1] < 0.5 * loss[0], loss
    # the EMA counters (int32 state) advance once per training step: 3 steps an epoch
    counters = _counters(r.state)
    assert len(counters) == 2 and set(counters.values()) == {3 * epochs}, counters
    params, state = r.variables
    assert jax.tree.structure(params) == jax.tree.structure(r.params)
    # evaluation (is_training=False) reads the trained running statistics
    k_init = jax.random.split(jax.random.key(1))[0]
    _, state0 = t.init(k_init, X[:1], is_training=True)
    by_hand = lambda s: float(jnp.mean((t.apply(params, s, None, X, False)[0] - Y) ** 2))  # noqa: E731
    got = float(jp.training.evaluate(t, r.variables, (X, Y), "mse"))
    assert got == pytest.approx(by_hand(state), rel=1e-5)
    assert abs(by_hand(state0) - got) > 0.1 * got  # the initial statistics give another loss


def test_haiku_seeds_draw_their_own_init_and_without_apply_rng_works():
    t = hk.without_apply_rng(hk.transform_with_state(bn_net))
    keys = jax.random.split(jax.random.key(2), 3)
    r = jp.training.fit(t, (X, Y), keys=keys, optimizer=optax.sgd(0.0), max_epochs=1, **KW)
    for i, k in enumerate(keys):
        want, _ = t.init(jax.random.split(k)[0], X[:1], is_training=True)
        for a, b in zip(jax.tree.leaves(r.params), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(np.asarray(a)[i], b, rtol=0, atol=1e-6)  # ulps: compiled
    w = r.params["linear"]["w"]
    assert float(jnp.abs(w[0] - w[1]).max()) > 0.05 and float(jnp.abs(w[1] - w[2]).max()) > 0.05


def test_haiku_dropout_gets_a_key_per_step_and_the_train_flag():
    t = hk.transform(dropout_net)
    keys = jax.random.split(jax.random.key(3), 2)
    p0 = t.init(jax.random.key(0), X[:1])
    kw = dict(optimizer=optax.adam(1e-2), epochs=3, **KW)
    r = jp.training.train_epochs(
        t, (X, Y), keys=keys, params=jax.tree.map(lambda a: jnp.stack([a, a]), p0), **kw
    )
    # the same start, different dropout masks: the two runs part
    diff = jax.tree.map(lambda a: float(jnp.abs(a[0] - a[1]).max()), r.params)
    assert max(jax.tree.leaves(diff)) > 1e-3
    # evaluation passes train=False: deterministic, and equal to the hand call without dropout
    got = float(jp.training.evaluate(t, jax.tree.map(lambda a: a[0], r.params), (X, Y), "mse"))
    p = jax.tree.map(lambda a: a[0], r.params)
    want = float(jnp.mean((t.apply(p, None, X, train=False) - Y) ** 2))
    assert got == pytest.approx(want, rel=1e-6)


def test_haiku_variables_and_several_keys_need_same_init():
    t = hk.transform_with_state(bn_net)
    variables = t.init(jax.random.key(0), X[:1], is_training=True)
    keys = jax.random.split(jax.random.key(2), 3)
    kw = dict(optimizer=optax.sgd(0.0), max_epochs=1, **KW)
    with pytest.raises(ValueError, match=r"keys: 3 seeds would all start from the same"):
        jp.training.fit(t, (X, Y), keys=keys, variables=variables, **kw)
    r = jp.training.fit(t, (X, Y), keys=keys, variables=variables, same_init=True, **kw)
    for a, b in zip(jax.tree.leaves(r.params), jax.tree.leaves(variables[0]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.broadcast_to(b, a.shape))
