"""Data parallelism on 8 fake CPU devices (set by tests/conftest.py)."""

import flax.linen as nn
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


class BNDrop(nn.Module):
    """Dense -> BatchNorm -> ReLU -> Dropout -> Dense, written as the flax examples do (no bias
    before BatchNorm: its gradient would be rounding noise, which Adam scales up to lr)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(
            nn.Dense(8, use_bias=False)(x)
        )
        h = nn.Dropout(0.5, deterministic=not train)(nn.relu(h))
        return nn.Dense(1)(h)


BN = BNDrop()
BN_VARS = BN.init(jax.random.key(3), X[:1])


def _hand_step(tx, variables, opt_state, batch, key, step):
    """One step written out by hand on one device: global-batch BatchNorm, dropout key
    ``fold_in(key, step)``, mean squared error, optax update."""
    x, y = batch

    def loss(p):
        out, upd = BN.apply(
            {**variables, "params": p},
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.fold_in(key, step)},
        )
        return jnp.mean(jnp.sum((out - y) ** 2, -1)), upd

    (value, upd), g = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    updates, opt_state = tx.update(g, opt_state, variables["params"])
    params = optax.apply_updates(variables["params"], updates)
    return {"params": params, **upd}, opt_state, value


def _close(a, b):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a, b)


@pytest.mark.parametrize("name", ["adam", "freeze_mask_chain"])
def test_eight_device_step_equals_single_device_step(name):
    tx = _tx_variants()[name]
    variables = MODEL.init(jax.random.key(0), X[:1])
    params = variables["params"]
    batch = (X[:128], Y[:128])
    single = jp.training.make_train_step(MODEL, "mse", tx)
    mesh = jp.training.data_mesh()
    assert mesh.devices.size == 8
    parallel = jp.training.make_parallel_train_step(MODEL, "mse", tx, mesh)
    p1, s1, m1 = single(params, tx.init(params), batch)
    ts = jp.training.train_state(MODEL, tx, variables)
    ts, m8 = parallel(ts, jp.training.shard_batch(batch, mesh))
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-6)
    _close(ts.params, p1)
    _close(ts.opt_state, s1)
    if name == "freeze_mask_chain":
        np.testing.assert_array_equal(ts.params["relu_0"]["kernel"], params["relu_0"]["kernel"])
    assert ts.params["out"]["kernel"].sharding.is_fully_replicated


def test_batchnorm_and_dropout_step_on_eight_devices_equals_one_device_full_batch():
    tx = optax.adam(1e-2)
    mesh = jp.training.data_mesh()
    step = jp.training.make_parallel_train_step(BN, "mse", tx, mesh)
    batch, key = (X[:128], Y[:128]), jax.random.key(11)
    ts0 = jp.training.train_state(BN, tx, BN_VARS)
    ts, m = step(ts0, jp.training.shard_batch(batch, mesh), key=key)
    want, want_opt, want_loss = _hand_step(tx, BN_VARS, tx.init(BN_VARS["params"]), batch, key, 0)
    np.testing.assert_allclose(m["loss"], want_loss, rtol=1e-5)
    _close(ts.params, want["params"])
    _close(ts.state, {"batch_stats": want["batch_stats"]})
    _close(ts.opt_state, want_opt)
    assert ts.state["batch_stats"]["BatchNorm_0"]["mean"].sharding.is_fully_replicated
    # Hand-computed: running mean = 0.9 * 0 + 0.1 * (global-batch mean of the Dense output).
    h = X[:128] @ BN_VARS["params"]["Dense_0"]["kernel"]
    bs = ts.state["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(bs["mean"], 0.1 * h.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bs["var"], 0.9 + 0.1 * h.var(0), rtol=1e-5)
    # Each device's shard of rows has its own dropout mask (not one mask repeated per device):
    # the step's mask is bernoulli(fold_in(key, 0)) over the global batch, as on one device.
    mask = np.asarray(jax.random.bernoulli(jax.random.fold_in(key, 0), 0.5, (128, 8)))
    assert not np.array_equal(mask[:16], mask[16:32])
    other, _ = step(ts0, jp.training.shard_batch(batch, mesh), key=jax.random.key(12))
    assert not np.allclose(other.params["Dense_1"]["kernel"], ts.params["Dense_1"]["kernel"])


def test_parallel_epoch_with_batchnorm_and_dropout_equals_a_hand_written_loop():
    tx = optax.adam(1e-2)
    batches = (X.reshape(4, 64, 2), Y.reshape(4, 64, 1))
    mesh = jp.training.data_mesh()
    epoch = jp.training.make_parallel_epoch(BN, "mse", tx, mesh)
    key = jax.random.key(5)
    ts, losses = epoch(jp.training.train_state(BN, tx, BN_VARS), batches, key=key)
    v, s, ref = BN_VARS, tx.init(BN_VARS["params"]), []
    for i in range(4):
        v, s, value = _hand_step(tx, v, s, (batches[0][i], batches[1][i]), key, i)
        ref.append(float(value))
    np.testing.assert_allclose(losses, ref, rtol=1e-5)
    assert int(ts.step) == 4
    _close(ts.params, v["params"])
    _close(ts.state["batch_stats"], v["batch_stats"])
    assert not np.allclose(ts.state["batch_stats"]["BatchNorm_0"]["mean"], 0.0)


def test_a_python_loop_of_parallel_steps_does_not_deadlock():
    tx = optax.sgd(0.1)
    ts = jp.training.train_state(MODEL, tx, MODEL.init(jax.random.key(2), X[:1]))
    mesh = jp.training.data_mesh()
    step = jp.training.make_parallel_train_step(MODEL, "mse", tx, mesh)
    batch = jp.training.shard_batch((X[:64], Y[:64]), mesh)
    losses = []
    for _ in range(30):  # without blocking, this pattern hangs the CPU all-reduce rendezvous
        ts, m = step(ts, batch)
        losses.append(m["loss"])
    assert float(losses[-1]) < float(losses[0]) and int(ts.step) == 30


def test_bad_input_to_the_parallel_step():
    mesh = jp.training.data_mesh()
    tx = optax.sgd(0.1)
    ts = jp.training.train_state(MODEL, tx, MODEL.init(jax.random.key(0), X[:1]))
    step = jp.training.make_parallel_train_step(MODEL, "mse", tx, mesh)
    with pytest.raises(ValueError, match="batch: 100 rows do not divide evenly over the 8"):
        step(ts, (X[:100], Y[:100]))
    with pytest.raises(ValueError, match="batch: 12 rows"):
        jp.training.shard_batch((X[:12],), mesh)
    with pytest.raises(TypeError, match="positional argument"):
        step(ts, (X[:64], Y[:64]), jax.random.key(0))
    with pytest.raises(ValueError, match="variables: a linen module needs its variables"):
        jp.training.train_state(BN, tx)
    with pytest.raises(ValueError, match=r"mutable: collection\(s\) \['stats'\] named but absent"):
        jp.training.train_state(BN, tx, BN_VARS, mutable=("stats",))


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
