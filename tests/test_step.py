"""make_train_step with ``trainable``: only chosen leaves are differentiated and updated."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp

RNG = np.random.default_rng(0)
X = RNG.random((10, 4, 4, 1), dtype=np.float32)
Y = RNG.integers(0, 3, 10).astype(np.int32)


def _run(step, params, state, n=3):
    losses = []
    for _ in range(n):
        params, state, metrics = step(params, state, (X, Y))
        losses.append(float(metrics["loss"]))
    return params, state, losses


def _weights(params):
    return {k: v["weights"] for k, v in params.items()}


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("kind", ["mask", "flip"])
def test_score_only_step_equals_full_step_and_keeps_weight_arrays(key, kind):
    model = jp.models.MaskedMLP(hidden=(6,), out=3, kind=kind)
    params = model.init(key, X)["params"]
    tx = jp.transforms.train_scores(optax.adam(0.05))
    full = jp.training.make_train_step(model, "cross_entropy", tx)
    only = jp.training.make_train_step(model, "cross_entropy", tx, trainable=jp.models.is_score)
    p_full, s_full, l_full = _run(full, params, tx.init(params))
    p_only, s_only, l_only = _run(only, params, tx.init(params))
    # Same scores, optimizer state and losses, bit for bit.
    assert l_only == l_full
    _assert_trees_equal(p_only, p_full)
    _assert_trees_equal(s_only, s_full)
    # The scores moved; the weights are the very arrays passed in (no copy, no update).
    assert not np.array_equal(p_only["dense_0"]["scores"], params["dense_0"]["scores"])
    for layer in params:
        assert p_only[layer]["weights"] is params[layer]["weights"]


def test_unjitted_step_in_scan_equals_jitted_step(key):
    model = jp.models.MaskedMLP(hidden=(6,), out=3, kind="mask")
    params = model.init(key, X)["params"]
    tx = jp.transforms.train_scores(optax.adam(0.05))
    kw = dict(trainable=jp.models.is_score)
    jitted = jp.training.make_train_step(model, "cross_entropy", tx, **kw)
    raw = jp.training.make_train_step(model, "cross_entropy", tx, jit=False, **kw)

    @jax.jit
    def scan(p, s):
        def body(c, _):
            p, s, m = raw(*c, (X, Y))
            return (p, s), m["loss"]

        return jax.lax.scan(body, (p, s), None, length=3)

    (p_scan, _), losses = scan(params, tx.init(params))
    p_jit, _, l_jit = _run(jitted, params, tx.init(params))
    np.testing.assert_allclose(np.asarray(losses), l_jit, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), p_scan, p_jit)
    _assert_trees_equal(_weights(p_scan), _weights(params))


def test_trainable_with_a_plain_optimizer_freezes_the_rest(key):
    # A plain optimizer sees zero gradients for the frozen leaves, which are never updated;
    # the chosen leaf follows exactly one SGD step on its own gradient.
    model = jp.models.MaskedMLP(hidden=(6,), out=3, kind=None)
    params = model.init(key, X)["params"]
    tx = optax.sgd(0.1)
    step = jp.training.make_train_step(
        model, "cross_entropy", tx, trainable=lambda path, leaf: path[0].key == "out"
    )
    new, _, _ = step(params, tx.init(params), (X, Y))
    assert new["dense_0"]["weights"] is params["dense_0"]["weights"]

    def loss(w):
        p = {**params, "out": {"weights": w}}
        return jp.training.evaluate(model, p, (X, Y), "cross_entropy")

    expected = params["out"]["weights"] - 0.1 * jax.jit(jax.grad(loss))(params["out"]["weights"])
    np.testing.assert_allclose(new["out"]["weights"], expected, rtol=1e-6, atol=1e-7)


def test_trainable_selecting_nothing_raises(key):
    model = jp.models.MaskedDense(2, kind=None)
    params = {"weights": jnp.ones((4 * 4, 2))}
    step = jp.training.make_train_step(
        model, "mse", optax.sgd(0.1), trainable=lambda path, leaf: False
    )
    with pytest.raises(ValueError, match="trainable: expected a predicate selecting"):
        step(params, optax.sgd(0.1).init(params), (X.reshape(10, -1), jnp.zeros((10, 2))))
