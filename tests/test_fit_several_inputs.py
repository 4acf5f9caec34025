"""Models with several inputs: ``x`` of a batch a tuple of arrays, called as ``model(*x)``."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp


class TwoInputs(nn.Module):
    """A user-style linen model with two inputs, the train flag and BatchNorm-free layers."""

    @nn.compact
    def __call__(self, a, b, train: bool = False):
        h = nn.relu(nn.Dense(6)(a)) + nn.Dense(6)(b)
        return nn.Dense(1)(h)


def _data(n=24):
    ka, kb = jax.random.split(jax.random.key(7))
    a = jax.random.normal(ka, (n, 3))
    b = jax.random.normal(kb, (n, 2))
    y = jnp.sin(a[:, :1]) + b[:, 1:] ** 2
    return a, b, y


def test_fit_of_two_input_model_equals_hand_written_optax_loop():
    a, b, y = _data()
    model, tx, epochs = TwoInputs(), optax.adam(3e-2), 6
    seeds = jax.random.split(jax.random.key(0), 3)
    starts = [model.init(k, a[:1], b[:1])["params"] for k in seeds]
    stacked = jax.tree.map(lambda *p: jnp.stack(p), *starts)
    runs = jp.training.fit(
        model,
        ((a, b), y),
        keys=jax.random.split(jax.random.key(1), 3),
        params=stacked,
        loss="mse",
        optimizer=tx,
        batch_size=len(a),  # one full batch per epoch: the same batch as the hand loop
        max_epochs=epochs,
        patience=epochs + 1,
        restore_best=False,
        progress=False,
    )

    def loss(p):
        return jnp.mean((model.apply({"params": p}, a, b, train=True) - y) ** 2)

    for i, p in enumerate(starts):
        s = tx.init(p)
        for _ in range(epochs):
            g = jax.grad(loss)(p)
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
        got = jax.tree.map(lambda t, i=i: t[i], runs.params)
        jax.tree.map(lambda x, w: np.testing.assert_allclose(x, w, rtol=2e-5, atol=1e-6), got, p)
    assert bool(jnp.all(runs.params["Dense_0"]["kernel"][0] != starts[0]["Dense_0"]["kernel"]))


@pytest.mark.parametrize("partial", ["keep", "pad"])
def test_shuffling_keeps_the_inputs_of_an_example_aligned(partial):
    # example i is (a=i, b=10 i) with target 100 i; the loss is 0 exactly when the three are
    # taken from the same row, and at least 1 on any misaligned row of a minibatch
    n = 11
    a = jnp.arange(n, dtype=jnp.float32)[:, None]
    b, y = 10 * a, 100 * a

    def f(p, a, b):
        return jnp.concatenate([a, b], -1) + 0 * p["w"]

    def loss(pred, target):
        return (pred[:, 1] - 10 * pred[:, 0]) ** 2 + (target[:, 0] - 100 * pred[:, 0]) ** 2

    r = jp.training.train_epochs(
        f,
        ((a, b), y),
        variables={"w": jnp.zeros(())},
        keys=jax.random.key(3),
        loss=loss,
        optimizer=optax.sgd(0.1),
        epochs=4,
        batch_size=3,
        partial=partial,
        progress=False,
    )
    np.testing.assert_array_equal(r.history["loss"], np.zeros(4))
    # and the same check fails when one input is shuffled on its own
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(loss(f({"w": 0.0}, a, b[::-1]), y), np.zeros(n))


def test_inputs_of_different_lengths_are_an_error_naming_the_input():
    a, b, y = _data()
    with pytest.raises(ValueError, match=r"data\[0\]\[1\]: expected the leading length 24"):
        jp.training.fit(
            TwoInputs(),
            ((a, b[:-1]), y),
            keys=jax.random.key(0),
            loss="mse",
            optimizer=optax.sgd(0.1),
            max_epochs=1,
            progress=False,
        )


def test_nan_in_one_input_is_an_error_naming_it():
    a, b, y = _data()
    b = b.at[3, 1].set(jnp.nan)
    with pytest.raises(ValueError, match=r"data\[0\]\[1\]: expected finite values"):
        jp.training.train_epochs(
            TwoInputs(),
            ((a, b), y),
            keys=jax.random.key(0),
            loss="mse",
            optimizer=optax.sgd(0.1),
            epochs=1,
            progress=False,
        )


def test_parallel_step_shards_every_input_and_equals_optax_step():
    a, b, y = _data(8)
    model, tx = TwoInputs(), optax.sgd(0.1)
    params = model.init(jax.random.key(0), a, b)["params"]
    mesh = jp.training.data_mesh()
    ts = jp.training.train_state(model, tx, {"params": params})
    step = jp.training.make_parallel_train_step(model, "mse", tx, mesh)
    ts, m = step(ts, ((a, b), y))

    def loss(p):
        return jnp.mean((model.apply({"params": p}, a, b, train=True) - y) ** 2)

    value, g = jax.value_and_grad(loss)(params)
    want = jax.tree.map(lambda p, d: p - 0.1 * d, params, g)
    np.testing.assert_allclose(m["loss"], value, rtol=1e-6)
    jax.tree.map(
        lambda x, w: np.testing.assert_allclose(x, w, rtol=1e-5, atol=1e-7), ts.params, want
    )


def test_train_step_and_evaluate_take_the_inputs_as_a_tuple():
    a, b, y = _data(8)
    model, tx = TwoInputs(), optax.sgd(0.1)
    params = model.init(jax.random.key(0), a, b)["params"]

    def loss(p):
        return jnp.mean((model.apply({"params": p}, a, b) - y) ** 2)

    np.testing.assert_allclose(
        jp.training.evaluate(model, params, ((a, b), y), "mse"), loss(params), rtol=1e-6
    )
    step = jp.training.make_train_step(model, "mse", tx)
    new, _, m = step(params, tx.init(params), ((a, b), y))
    want = jax.tree.map(lambda p, d: p - 0.1 * d, params, jax.grad(loss)(params))
    np.testing.assert_allclose(m["loss"], loss(params), rtol=1e-6)
    jax.tree.map(lambda x, w: np.testing.assert_allclose(x, w, rtol=1e-5, atol=1e-7), new, want)
