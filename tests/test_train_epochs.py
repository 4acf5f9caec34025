"""train_epochs: fixed-budget many-seed training with per-epoch curves, resumable."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp

X, Y = jp.data.paint("square", size=10)  # 100 examples: batches of 32 leave a batch of 4
MODEL = jp.models.MLP(hidden=(4,), linear_after=((3,),))
TX = optax.adam(1e-2)


def _acc(v):
    return {"accuracy": jnp.mean((MODEL.apply(v, X) > 0.5) == (Y > 0.5))}


@pytest.mark.parametrize("partial", ["keep", "pad", "drop"])
def test_equals_fit_without_early_stopping_and_records_its_losses(partial):
    keys = jax.random.split(jax.random.key(3), 3)
    assert len(X) % 32  # a partial last batch
    kw = dict(optimizer=TX, loss="mse", batch_size=32, partial=partial, progress=False)
    r = jp.training.train_epochs(MODEL, (X, Y), keys=keys, epochs=6, metrics=_acc, **kw)
    f = jp.training.fit(
        MODEL, (X, Y), keys=keys, patience=100, max_epochs=6, restore_best=False, **kw
    )
    for a, b in zip(jax.tree.leaves(r.params), jax.tree.leaves(f.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert r.history["loss"].shape == (3, 6) and r.history["accuracy"].shape == (3, 6)
    # fit's monitored loss is the best epoch loss: the minimum of our curve
    np.testing.assert_allclose(r.history["loss"].min(axis=1), f.loss, rtol=1e-6)
    # the recorded accuracy after the last epoch is the accuracy of the returned params
    final = jax.vmap(_acc)(r.variables)["accuracy"]
    np.testing.assert_allclose(r.history["accuracy"][:, -1], final)


def test_run_k_of_a_batch_equals_a_single_key_run_and_chunking_changes_nothing():
    keys = jax.random.split(jax.random.key(0), 2)
    kw = dict(optimizer=TX, loss="mse", batch_size=32, epochs=5, progress=False)
    batch = jp.training.train_epochs(MODEL, (X, Y), keys=keys, chunk_epochs=2, **kw)
    one = jp.training.train_epochs(MODEL, (X, Y), keys=keys[1], **kw)
    assert one.history["loss"].shape == (5,)
    np.testing.assert_allclose(batch.history["loss"][1], one.history["loss"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(batch.params), jax.tree.leaves(one.params), strict=True):
        np.testing.assert_allclose(a[1], b, rtol=1e-6, atol=1e-7)


def test_checkpoint_resume_continues_to_the_same_result(tmp_path, monkeypatch):
    keys = jax.random.split(jax.random.key(1), 2)
    kw = dict(optimizer=TX, loss="mse", batch_size=32, chunk_epochs=2, epochs=6, progress=False)
    full = jp.training.train_epochs(MODEL, (X, Y), keys=keys, **kw)
    ckpt = tmp_path / "run"
    checkpoints = importlib.import_module("jaxprune.training._checkpoint").Checkpoints
    real_save, calls = checkpoints.save, []

    def save_then_die_on_the_second_chunk(self, tree):
        real_save(self, tree)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted after epoch 4 was saved

    monkeypatch.setattr(checkpoints, "save", save_then_die_on_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        jp.training.train_epochs(MODEL, (X, Y), keys=keys, checkpoint=ckpt, **kw)
    monkeypatch.undo()
    assert sorted(int(d.name) for d in ckpt.iterdir() if d.name.isdigit()) == [1, 2]
    resumed = jp.training.train_epochs(MODEL, (X, Y), keys=keys, checkpoint=ckpt, **kw)
    np.testing.assert_array_equal(resumed.history["loss"], full.history["loss"])
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(full.params), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="another configuration"):
        jp.training.train_epochs(MODEL, (X, Y), keys=keys, checkpoint=ckpt, **{**kw, "epochs": 7})


def test_bad_input_is_named():
    key = jax.random.key(0)
    kw = dict(optimizer=TX, loss="mse", progress=False)
    with pytest.raises(ValueError, match="epochs: expected an integer >= 1"):
        jp.training.train_epochs(MODEL, (X, Y), keys=key, epochs=0, **kw)
    with pytest.raises(ValueError, match="data: x and y"):
        jp.training.train_epochs(MODEL, (X, Y[:5]), keys=key, epochs=1, **kw)
    with pytest.raises(ValueError, match="opt_state: given without params"):
        jp.training.train_epochs(MODEL, (X, Y), keys=key, epochs=1, opt_state=(), **kw)
    with pytest.raises(ValueError, match="metrics: expected"):
        jp.training.train_epochs(MODEL, (X, Y), keys=key, epochs=1, metrics=lambda p: 1.0, **kw)
