"""The one train step under fit and train_epochs, on every kind of model users write."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxprune as jp
from jaxprune.training._checkpoint import Checkpoints
from jaxprune.training._core import make_core
from jaxprune.training._model import training_model

ROOT = Path(__file__).resolve().parents[1]


class Block(nn.Module):
    """A ResNet basic block, written as in the flax examples (conv without bias before BN)."""

    ch: int

    @nn.compact
    def __call__(self, x, train: bool):
        norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
        h = nn.relu(norm()(nn.Conv(self.ch, (3, 3), use_bias=False)(x)))
        h = norm()(nn.Conv(self.ch, (3, 3), use_bias=False)(h))
        return nn.relu(x + h)


class ResNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = Block(4)(x, train)
        x = nn.Dropout(0.3, deterministic=not train)(x.mean(axis=(1, 2)))
        return nn.Dense(3)(x)


X = jax.random.normal(jax.random.key(0), (24, 4, 4, 1))
Y = jnp.arange(24) % 3
KW = dict(loss="cross_entropy", optimizer=optax.adam(1e-2), batch_size=10, progress=False)


def _close(a, b, **kw):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **{"rtol": 1e-5, **kw}), a, b)


def test_linen_resnet_batch_stats_train_and_run_k_equals_single_run():
    keys = jax.random.split(jax.random.key(1), 3)
    many = jp.training.train_epochs(ResNet(), (X, Y), keys=keys, epochs=2, **KW)
    init = ResNet().init(jax.random.split(keys[2])[0], X[:1])
    stats0 = {"batch_stats": init["batch_stats"]}
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a[2] - b).max()), many.state, stats0)
    assert min(jax.tree.leaves(moved["batch_stats"])) > 1e-3  # updated while training
    assert sorted(many.variables) == ["batch_stats", "params"]
    one = jp.training.train_epochs(ResNet(), (X, Y), keys=keys[2], epochs=2, **KW)
    _close(jax.tree.map(lambda a: a[2], many.variables), one.variables, atol=1e-6)
    np.testing.assert_allclose(many.history["loss"][2], one.history["loss"], rtol=1e-5)
    # evaluation uses the trained statistics: the core's eval loss is model.apply(train=False)
    core = make_core(
        training_model(ResNet()), jp.training.get_loss("cross_entropy"), KW["optimizer"]
    )
    ts = core.init(jax.random.key(0), X[:1])._replace(params=one.params, state=one.state)
    logits = ResNet().apply(one.variables, X, train=False)
    want = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, Y))
    np.testing.assert_allclose(core.eval_step(ts, (X, Y))["loss"], want, rtol=1e-6)
    stale = ResNet().apply({**one.variables, "batch_stats": init["batch_stats"]}, X)
    assert float(jnp.abs(stale - logits).max()) > 1e-3


def test_fit_on_resnet_keeps_best_variables_and_equals_train_epochs():
    keys = jax.random.split(jax.random.key(2), 2)
    f = jp.training.fit(
        ResNet(), (X, Y), keys=keys, patience=50, max_epochs=3, restore_best=False, **KW
    )
    e = jp.training.train_epochs(ResNet(), (X, Y), keys=keys, epochs=3, **KW)
    _close(f.variables, e.variables, atol=1e-6)
    np.testing.assert_allclose(f.history["loss"], e.history["loss"], rtol=1e-6)
    assert f.history["loss"].shape == (2, 3) and f.epochs.tolist() == [3, 3]


def test_core_equals_a_loop_written_by_hand():
    """One epoch: shuffle, batches of 10 (last of 4 kept), BatchNorm updates, dropout keys."""
    key, model, tx = jax.random.key(5), ResNet(), KW["optimizer"]
    r = jp.training.train_epochs(model, (X, Y), keys=key, epochs=1, **KW)
    k_init, k_run = jax.random.split(key)
    v = model.init({"params": k_init, "dropout": jax.random.fold_in(k_init, 1)}, X[:1])
    params, stats, opt = v["params"], v["batch_stats"], tx.init(v["params"])
    _, k_epoch = jax.random.split(k_run)
    perm = np.asarray(jp.training.feistel_permutation(k_epoch, len(X)))
    k_steps, total = jax.random.fold_in(k_epoch, 1), 0.0
    for step, b in enumerate((perm[:10], perm[10:20], perm[20:])):
        drop = jax.random.fold_in(k_steps, step)

        def loss(p, stats=stats, b=b, drop=drop):
            out, new = model.apply(
                {"params": p, "batch_stats": stats},
                X[b],
                train=True,
                rngs={"dropout": drop},
                mutable=["batch_stats"],
            )
            ce = optax.softmax_cross_entropy_with_integer_labels(out, Y[b])
            return jnp.mean(ce), new["batch_stats"]

        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        params = optax.apply_updates(params, updates)
        total += float(value) * len(b)
    _close(r.variables, {"params": params, "batch_stats": stats}, atol=1e-6)
    np.testing.assert_allclose(r.history["loss"][0], total / len(X), rtol=1e-5)


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(2, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.3, rngs=rngs)
        self.b = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.b(self.drop(nnx.relu(self.bn(self.a(x)))))


class EqxNet(eqx.Module):
    a: eqx.nn.Linear
    b: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.a, self.b = eqx.nn.Linear(2, 8, key=k1), eqx.nn.Linear(8, 1, key=k2)

    def __call__(self, x):
        return jax.vmap(lambda r: self.b(jax.nn.relu(self.a(r))))(x)


XS, YS = jp.data.paint("square", size=6)
SKW = dict(loss="mse", optimizer=optax.adam(1e-2), batch_size=12, progress=False)


def test_nnx_module_trains_batch_stats_and_dropout_differs_per_seed():
    model = NnxNet(nnx.Rngs(0, dropout=1))
    keys = jax.random.split(jax.random.key(0), 2)
    r = jp.training.train_epochs(model, (XS, YS), keys=keys, epochs=3, same_init=True, **SKW)
    mean0 = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))["bn"]["mean"]
    assert float(jnp.abs(r.state["bn"]["mean"][0] - mean0).max()) > 1e-3
    # the same initial weights, different dropout masks: the seeds part
    assert float(jnp.abs(r.params["a"]["kernel"][0] - r.params["a"]["kernel"][1]).max()) > 1e-4
    one = jp.training.train_epochs(model, (XS, YS), keys=keys[1], epochs=3, **SKW)
    # a.bias feeds BatchNorm, so its gradient is 0 up to rounding, and Adam scales that rounding
    # noise into full steps: it differs between any two programs (0.003 here on one CPU, 0 on
    # another), so it is left out; every other variable must agree
    run_1 = jax.tree.map(lambda a: a[1], r.params)
    del run_1["a"]["bias"], one.params["a"]["bias"]
    _close(run_1, one.params, atol=1e-6)
    assert r.history["loss"][:, -1].max() < r.history["loss"][:, 0].min()


def test_equinox_module_and_function_pair_train_like_the_hand_loop():
    model, tx = EqxNet(jax.random.key(3)), SKW["optimizer"]
    r = jp.training.train_epochs(model, (XS, YS), keys=jax.random.key(1), epochs=1, **SKW)
    params = eqx.filter(model, eqx.is_inexact_array)
    opt = tx.init(params)
    _, k_run = jax.random.split(jax.random.key(1))
    perm = np.asarray(jp.training.feistel_permutation(jax.random.split(k_run)[1], len(XS)))
    for start in range(0, len(XS), 12):
        b = perm[start : start + 12]
        f = lambda p, b=b: jnp.mean((eqx.combine(p, model)(XS[b]) - YS[b]) ** 2)
        grads = eqx.filter_grad(f)(params)
        updates, opt = tx.update(grads, opt, params)
        params = optax.apply_updates(params, updates)
    _close(eqx.filter(r.variables, eqx.is_inexact_array), params, atol=1e-6)
    assert isinstance(r.variables, EqxNet)

    mlp = jp.models.MLP(hidden=(4,))
    pair = (lambda k, x: mlp.init(k, x)["params"], lambda p, x: mlp.apply({"params": p}, x))
    keys = jax.random.split(jax.random.key(4), 2)
    got = jp.training.fit(pair, (XS, YS), keys=keys, patience=9, max_epochs=2, **SKW)
    want = jp.training.fit(mlp, (XS, YS), keys=keys, patience=9, max_epochs=2, **SKW)
    _close(got.params, want.params, atol=1e-7)


def test_bad_models_keys_and_collections_are_named():
    def needs_two(p, x, mask):
        return x @ p["w"]

    with pytest.raises(TypeError, match=r"the trainer calls needs_two\(params, x\)"):
        jp.training.fit(
            needs_two, (XS, YS), keys=jax.random.key(0), variables={"w": jnp.ones((2, 1))}, **SKW
        )
    with pytest.raises(
        ValueError, match=r"mutable: collection\(s\) \['batch_stats'\] named but absent"
    ):
        jp.training.train_epochs(
            jp.models.MLP(hidden=(3,)),
            (XS, YS),
            keys=jax.random.key(0),
            epochs=1,
            variables=jp.models.MLP(hidden=(3,)).init(jax.random.key(0), XS[:1]),
            mutable=("batch_stats",),
            **SKW,
        )
    with pytest.raises(ValueError, match="keys: expected"):
        jp.training.train_epochs(ResNet(), (X, Y), keys=jnp.zeros((2, 3)), epochs=1, **KW)
    with pytest.raises(ValueError, match=r"data\[0\]: expected finite values"):
        jp.training.fit(ResNet(), (X.at[0, 0, 0, 0].set(jnp.nan), Y), keys=jax.random.key(0), **KW)


SCRIPT = textwrap.dedent(
    """
    import sys, jax, optax, jaxprune as jp
    sys.path.insert(0, sys.argv[2])
    from test_train_core import ResNet, X, Y, KW
    jp.training.fit(ResNet(), (X, Y), keys=jax.random.split(jax.random.key(7), 2), patience=10**6,
                    max_epochs=MAX, chunk_epochs=2, checkpoint=sys.argv[1], checkpoint_every=1,
                    **KW)
    """
)


def test_resnet_fit_killed_mid_training_resumes_bit_identically(tmp_path, monkeypatch):
    max_epochs, ckpt = 400, tmp_path / "fit"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = SCRIPT.replace("MAX", str(max_epochs))
    proc = subprocess.Popen([sys.executable, "-c", script, str(ckpt), str(ROOT / "tests")], env=env)
    deadline = time.time() + 300
    committed = lambda: ckpt.is_dir() and any(d.name.isdigit() for d in ckpt.iterdir())
    while not committed() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert committed() and proc.returncode == -signal.SIGKILL  # an orbax step was committed
    keys = jax.random.split(jax.random.key(7), 2)
    kw = dict(patience=10**6, max_epochs=max_epochs, chunk_epochs=2, **KW)
    restored, real = [], Checkpoints.restore
    monkeypatch.setattr(
        Checkpoints, "restore", lambda self, t: restored.append(real(self, t)) or restored[-1]
    )
    resumed = jp.training.fit(
        ResNet(), (X, Y), keys=keys, checkpoint=ckpt, checkpoint_every=50, **kw
    )
    monkeypatch.undo()
    fresh = jp.training.fit(ResNet(), (X, Y), keys=keys, **kw)
    at_kill = np.asarray(restored[0]["state"].epoch)  # epochs before the resume
    assert (at_kill > 0).all() and (at_kill < max_epochs).all()
    np.testing.assert_array_equal(resumed.history["loss"], fresh.history["loss"])  # all epochs
    assert set(resumed.variables) == {"params", "batch_stats"}
    for a, b in zip(jax.tree.leaves(fresh.state), jax.tree.leaves(resumed.state), strict=True):
        assert not np.allclose(a, jnp.round(a))  # BatchNorm statistics moved off their init
        np.testing.assert_array_equal(a, b)
    jax.tree.map(np.testing.assert_array_equal, resumed.variables, fresh.variables)
    jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, fresh.opt_state)


def test_rounds_on_resnet_update_batch_stats_and_run_k_equals_single_run():
    keys = jax.random.split(jax.random.key(3), 2)
    kw = dict(method="bl", optimizer=optax.adam(1e-2), steps_per_round=4, rounds=1)
    kw.update(loss="cross_entropy", batch_size=10)
    many = jp.training.train_rounds(ResNet(), (X, Y), keys=keys, **kw)
    stats = many.variables["batch_stats"]["Block_0"]["BatchNorm_0"]
    assert float(jnp.abs(stats["mean"]).min()) > 0  # moved from the initial zeros in training
    one = jp.training.train_rounds(ResNet(), (X, Y), keys=keys[1], **kw)
    _close(jax.tree.map(lambda a: a[1], many.variables), one.variables, atol=1e-6)
    logits = ResNet().apply(one.variables, X)  # evaluation with the trained statistics
    want = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, Y))
    np.testing.assert_allclose(one.loss, want, rtol=1e-5)


def test_progress_prints_plain_lines_when_not_a_terminal(capsys):
    from jaxprune.training._progress import Progress

    bar = Progress("fit", None, True, interval=0.0)
    bar.update(5, active="3/4 runs")
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("fit: epoch 5, active 3/4 runs, ") and lines[0].endswith(" s")
    assert lines[1].startswith("fit: epoch 5, active 3/4 runs") and lines[1].endswith("(done)")
    Progress("fit", 3, False).close()
    assert capsys.readouterr().err == ""
