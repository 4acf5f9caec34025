"""Data parallelism on 8 fake CPU devices (set by tests/conftest.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from jaxprune.models import MLP

MODEL = MLP(hidden=(4,), linear_after=((3,),))
X, Y = jp.data.paint("square", size=16)  # 256 rows


def _tx_variants():
    params = MODEL.init(jax.random.key(0), X[:1])["params"]
    frozen = jax.tree.map(lambda _: False, params)
    frozen["relu_0"]["kernel"] = True  # freeze one leaf's final updates
    return {
        "adam": optax.adam(1e-2),
        "freeze_mask_chain": optax.chain(
            optax.adam(1e-2), optax.masked(optax.set_to_zero(), frozen)
        ),
    }


@pytest.mark.parametrize("name", ["adam", "freeze_mask_chain"])
def test_eight_device_step_equals_single_device_step(name):
    tx = _tx_variants()[name]
    params = MODEL.init(jax.random.key(0), X[:1])["params"]
    state = tx.init(params)
    batch = (X[:128], Y[:128])
    single = jp.training.make_train_step(MODEL, "mse", tx)
    mesh = jp.training.data_mesh()
    assert mesh.devices.size == 8
    parallel = jp.training.make_parallel_train_step(MODEL, "mse", tx, mesh)
    p1, s1, m1 = single(params, state, batch)
    p8, s8, m8 = parallel(params, state, jp.training.shard_batch(batch, mesh))
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p8, p1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), s8, s1)
    if name == "freeze_mask_chain":
        np.testing.assert_array_equal(p8["relu_0"]["kernel"], params["relu_0"]["kernel"])
    assert p8["out"]["kernel"].sharding.is_fully_replicated


def test_parallel_epoch_equals_sequential_single_device_steps():
    tx = optax.adam(1e-2)
    params = MODEL.init(jax.random.key(1), X[:1])["params"]
    batches = (X.reshape(4, 64, 2), Y.reshape(4, 64, 1))
    mesh = jp.training.data_mesh()
    epoch = jp.training.make_parallel_epoch(MODEL, "mse", tx, mesh)
    p8, _, losses = epoch(params, tx.init(params), batches)
    step = jp.training.make_train_step(MODEL, "mse", tx)
    p, s = params, tx.init(params)
    ref = []
    for i in range(4):
        p, s, m = step(p, s, (batches[0][i], batches[1][i]))
        ref.append(float(m["loss"]))
    np.testing.assert_allclose(losses, ref, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p8, p)


def test_a_python_loop_of_parallel_steps_does_not_deadlock():
    tx = optax.sgd(0.1)
    params = MODEL.init(jax.random.key(2), X[:1])["params"]
    state = tx.init(params)
    mesh = jp.training.data_mesh()
    step = jp.training.make_parallel_train_step(MODEL, "mse", tx, mesh)
    batch = jp.training.shard_batch((X[:64], Y[:64]), mesh)
    losses = []
    for _ in range(30):  # without blocking, this pattern hangs the CPU all-reduce rendezvous
        params, state, m = step(params, state, batch)
        losses.append(m["loss"])
    assert float(losses[-1]) < float(losses[0])


def test_batches_that_do_not_divide_the_devices_are_rejected():
    mesh = jp.training.data_mesh()
    tx = optax.sgd(0.1)
    params = MODEL.init(jax.random.key(0), X[:1])["params"]
    step = jp.training.make_parallel_train_step(MODEL, "mse", tx, mesh)
    with pytest.raises(ValueError, match="batch: 100 rows do not divide evenly over the 8"):
        step(params, tx.init(params), (X[:100], Y[:100]))
    with pytest.raises(ValueError, match="batch: 12 rows"):
        jp.training.shard_batch((X[:12],), mesh)


def test_one_device_mesh_and_process_slice():
    mesh = jp.training.data_mesh(jax.devices()[:1])
    assert mesh.devices.size == 1
    assert jp.training.process_slice(256) == slice(0, 256)
    with pytest.raises(ValueError, match="devices: expected at least one"):
        jp.training.data_mesh([])
    r = jp.training.replicate({"a": jnp.ones(3)}, jp.training.data_mesh())
    assert r["a"].sharding.is_fully_replicated


def test_fit_shards_seeds_over_devices_and_matches_single_runs():
    keys = jax.random.split(jax.random.key(5), 8)
    kw = dict(loss="mse", optimizer=optax.adam(1e-2), patience=3, max_epochs=15, progress=False)
    runs = jp.training.fit(MODEL, (X, Y), keys=keys, **kw)
    leaf = runs.params["out"]["kernel"]
    assert len(leaf.sharding.device_set) == 8
    one = jp.training.fit(MODEL, (X, Y), keys=keys[6], **kw)
    np.testing.assert_allclose(runs.loss[6], one.loss, rtol=1e-6)
    np.testing.assert_allclose(leaf[6], one.params["out"]["kernel"], rtol=1e-5, atol=1e-7)
