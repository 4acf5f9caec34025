"""A checkpoint is tied to everything that shapes the run it holds.

Rerunning ``fit(..., checkpoint=dir)`` with another optimizer, loss, data, batch size or model
is refused with a short error naming the field(s) that differ; the fingerprint holds no memory
address, so a user's ``nn.Sequential([..., nn.relu, ...])`` resumes in another process.
"""

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from jaxprune.training._checkpoint import CheckpointError, Checkpoints
from jaxprune.training._fingerprint import describe, describe_optimizer

ROOT = Path(__file__).resolve().parents[1]
X = jax.random.normal(jax.random.key(1), (24, 3))
Y = jnp.stack([X[:, 0] * X[:, 1], jnp.sin(X[:, 2])], axis=1)


def _net(width=8):
    return nn.Sequential([nn.Dense(width), nn.relu, nn.Dense(2)])


def _kw(path, **changes):
    kw = dict(
        model=_net(),
        data=(X, Y),
        keys=jax.random.key(0),
        loss="mse",
        optimizer=optax.adam(1e-3),
        batch_size=8,
        patience=100,
        max_epochs=4,
        chunk_epochs=2,
        checkpoint=path,
        checkpoint_every=1,
        progress=False,
        train_kw=None,  # nn.Sequential forwards keywords to its first layer
    )
    return {**kw, **changes}


def _fit(kw):
    kw = dict(kw)
    return jp.training.fit(kw.pop("model"), kw.pop("data"), **kw)


CHANGES = {
    "optimizer": dict(optimizer=optax.adam(1.0)),
    "loss": dict(loss=lambda p, t: jnp.abs(p - t).sum(-1)),
    "data": dict(data=(X.at[3, 1].add(0.5), Y)),  # same shape, one value moved
    "batch_size": dict(batch_size=4),
    "model": dict(model=_net(16)),
}
NAMED = {"model": ("model", "shapes")}  # a wider layer is also another param shape


@pytest.mark.parametrize("field", CHANGES)
def test_a_changed_setting_is_refused_naming_the_field(tmp_path, field):
    first = _kw(tmp_path / "run")
    if field == "loss":  # a callable of the same qualified name (<lambda>), other code
        first["loss"] = lambda p, t: ((p - t) ** 2).sum(-1)
    _fit(first)
    with pytest.raises(CheckpointError) as err:
        _fit({**first, **CHANGES[field]})
    message = str(err.value)
    assert err.value.fields == NAMED.get(field, (field,))
    assert f"{field} (saved " in message
    assert len(message) < 900, message  # names the fields, no model repr
    assert "0x" not in message
    assert "another checkpoint directory" in message and f"delete {tmp_path / 'run'}" in message
    if field == "optimizer":  # the learning rate is quoted: adam(1e-3) scales by -0.001
        assert re.search(r"optimizer \(saved '.*-0\.001\].*', now '.*-1\.0\]", message)
    # the unchanged call still resumes (the finished run is read back, nothing retrained)
    again = _fit(first)
    assert int(again.epochs) == 4


def test_the_optimizer_description_tells_hyperparameters_apart():
    params = {"Dense_0": {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}}

    def desc(tx):
        return describe_optimizer(tx, params, tx.init(params))

    txs = {
        "adam 1e-3": optax.adam(1e-3),
        "adam 1.0": optax.adam(1.0),
        "adam b1=0.8": optax.adam(1e-3, b1=0.8),
        "sgd 1e-3": optax.sgd(1e-3),
        "adam decay 0.5": optax.adam(optax.exponential_decay(1e-3, 100, 0.5)),
        "adam decay 0.9": optax.adam(optax.exponential_decay(1e-3, 100, 0.9)),
        "injected 1e-3": optax.inject_hyperparams(optax.adam)(learning_rate=1e-3),
        "injected 1.0": optax.inject_hyperparams(optax.adam)(learning_rate=1.0),
        "array lr": optax.sgd(jnp.float32(1e-3)),  # a constant of the traced update, not a literal
        "array lr 2": optax.sgd(jnp.float32(2e-3)),
        "clipped": optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)),
    }
    seen = {name: desc(tx) for name, tx in txs.items()}
    assert len(set(seen.values())) == len(seen), seen
    assert desc(optax.adam(1e-3)) == seen["adam 1e-3"]  # rebuilt: the same description
    assert "0.001" in seen["adam 1e-3"] and "0x" not in seen["adam 1e-3"]
    assert len(seen["adam 1e-3"]) < 400


def test_model_descriptions_hold_no_address_and_tell_settings_apart():
    from flax import nnx

    seq = describe(_net())
    assert seq == describe(_net()) and "0x" not in seq
    assert "jax.nn.relu" in seq or "relu" in seq
    assert describe(_net(16)) != seq
    assert describe(nn.Dense(4, kernel_init=nn.initializers.normal(0.1))) != describe(
        nn.Dense(4, kernel_init=nn.initializers.normal(0.2))
    )
    drop = lambda rate: nnx.Dropout(rate, rngs=nnx.Rngs(0))  # noqa: E731
    assert describe(drop(0.1)) != describe(drop(0.2)) and "0x" not in describe(drop(0.1))


USER_MODEL = """
import equinox as eqx
import flax.linen as nn

class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.ACT(nn.Dense(8)(x)))
"""


def test_an_edited_model_class_is_another_model():
    def model(act):  # the same class path, another line of code
        namespace = {"__name__": "user_train_script"}
        exec(USER_MODEL.replace("ACT", act), namespace)
        return namespace["MLP"]()

    assert describe(model("relu")) == describe(model("relu"))
    assert describe(model("relu")) != describe(model("tanh"))
    assert describe(model("relu")).startswith("user_train_script.MLP#")


class WeightedMSE:  # a loss written as a callable object
    def __init__(self, weight):
        self.weight = weight

    def __call__(self, pred, target):
        return self.weight * ((pred - target) ** 2).sum(-1)


def test_a_callable_object_is_described_by_its_attributes():
    assert describe(WeightedMSE(1.0)) == describe(WeightedMSE(1.0))
    assert describe(WeightedMSE(1.0)) != describe(WeightedMSE(2.0))
    assert "0x" not in describe(WeightedMSE(1.0))


class StaticActNet(eqx.Module):
    """An equinox model whose activation is a static field (in its treedef, not a leaf)."""

    layers: list
    act: Callable = eqx.field(static=True)

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.layers = [eqx.nn.Linear(3, 8, key=k1), eqx.nn.Linear(8, 2, key=k2)]
        self.act = jax.nn.relu

    def __call__(self, x):
        return jax.vmap(lambda v: self.layers[1](self.act(self.layers[0](v))))(x)


ELSEWHERE = {"sequential": _net, "equinox": lambda: StaticActNet(jax.random.key(2))}
CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from jaxprune.training._checkpoint import Checkpoints
    from test_checkpoint_fingerprint import ELSEWHERE, _fit, _kw

    class Stop(Exception):
        pass

    def stop_after_first_save(self, tree, real=Checkpoints.save):
        real(self, tree)
        raise Stop  # after the first chunk's checkpoint (fit's finally commits it)

    Checkpoints.save = stop_after_first_save
    for name, make in ELSEWHERE.items():
        try:
            _fit(_kw(f"{sys.argv[1]}/{name}", model=make(), max_epochs=6))
        except Stop:
            print("stopped", name)
    """
)


def test_models_with_functions_resume_in_another_process(tmp_path, monkeypatch):
    """nn.Sequential holds nn.relu as a field, the equinox model jax.nn.relu in its treedef:
    neither may make the checkpoint unreadable to another process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(ROOT / "tests")],
        env=env,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert child.stdout.split() == ["stopped", "sequential", "stopped", "equinox"], child.stderr
    restored, real = [], Checkpoints.restore
    monkeypatch.setattr(
        Checkpoints, "restore", lambda self, t: restored.append(real(self, t)) or restored[-1]
    )
    for i, (name, make) in enumerate(ELSEWHERE.items()):
        resumed = _fit(_kw(tmp_path / name, model=make(), max_epochs=6))
        assert np.asarray(restored[i]["state"].epoch).tolist() == [2]  # resumed after epoch 2
        fresh = _fit(_kw(None, model=make(), max_epochs=6))
        np.testing.assert_array_equal(resumed.history["loss"], fresh.history["loss"])
        assert not np.isnan(np.asarray(resumed.history["loss"])).any()
        jax.tree.map(np.testing.assert_array_equal, resumed.params, fresh.params)
        jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, fresh.opt_state)


def test_an_nnx_model_with_dropout_rngs_checkpoints_and_resumes(tmp_path):
    # NNX state holds the dropout stream's PRNG key: its dtype is a key type, not a numpy one
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.fc1 = nnx.Linear(3, 8, rngs=rngs)
            self.drop = nnx.Dropout(0.2, rngs=rngs)
            self.fc2 = nnx.Linear(8, 2, rngs=rngs)

        def __call__(self, x):
            return self.fc2(self.drop(nnx.relu(self.fc1(x))))

    kw = _kw(tmp_path / "ck", model=Net(nnx.Rngs(0)), train_kw="train")
    first = _fit(kw)
    again = _fit({**kw, "model": Net(nnx.Rngs(0))})  # restored from the last checkpoint
    np.testing.assert_array_equal(first.history["loss"], again.history["loss"])
    assert np.isfinite(np.asarray(first.history["loss"])).all()
    with pytest.raises(CheckpointError, match="optimizer"):
        _fit({**kw, "model": Net(nnx.Rngs(0)), "optimizer": optax.adam(1e-2)})
