import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import serialization

import jaxprune as jp
from jaxprune.training._checkpoint import CheckpointError, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = textwrap.dedent(
    """
    import sys, jax, optax, jaxprune as jp
    x, y = jp.data.paint("square", size=32)
    model = jp.models.MLP(hidden=(3,), linear_after=((9,),))
    runs = jp.training.fit(model, (x, y), keys=jax.random.split(jax.random.key(7), 3),
                           loss="mse", optimizer=optax.adam(1e-3), patience=10**6, max_epochs=MAX,
                           chunk_epochs=25, checkpoint=sys.argv[1], checkpoint_every=1,
                           progress=False)
    """
)


def _fit_kwargs(path, max_epochs):
    return dict(
        loss="mse",
        optimizer=optax.adam(1e-3),
        patience=10**6,
        max_epochs=max_epochs,
        chunk_epochs=25,
        checkpoint=path,
        checkpoint_every=1,
        progress=False,
    )


def test_fit_killed_mid_training_resumes_to_the_same_params(tmp_path):
    max_epochs = 3000
    ckpt = tmp_path / "fit.ckpt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.replace("MAX", str(max_epochs)), str(ckpt)], env=env
    )
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the child should have written a checkpoint before being killed"
    assert proc.returncode == -signal.SIGKILL
    saved = serialization.msgpack_restore(ckpt.read_bytes().split(b"\n", 3)[3])
    epochs_at_kill = np.asarray(saved["state"]["epoch"])
    assert len(saved["rows"]) == 3 and (epochs_at_kill < max_epochs).all()  # truly mid-training
    x, y = jp.data.paint("square", size=32)
    model = jp.models.MLP(hidden=(3,), linear_after=((9,),))
    keys = jax.random.split(jax.random.key(7), 3)
    resumed = jp.training.fit(model, (x, y), keys=keys, **_fit_kwargs(ckpt, max_epochs))
    fresh = jp.training.fit(model, (x, y), keys=keys, **_fit_kwargs(None, max_epochs))
    assert resumed.epochs.tolist() == [max_epochs] * 3
    jax.tree.map(np.testing.assert_array_equal, resumed.params, fresh.params)
    np.testing.assert_array_equal(resumed.loss, fresh.loss)


def test_corrupt_checkpoint_is_detected_and_previous_kept(tmp_path):
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, {"w": jnp.arange(4.0)}, "cfg")
    save_checkpoint(path, {"w": jnp.arange(4.0) + 1}, "cfg")
    assert (tmp_path / "a.ckpt.prev").exists()
    data = path.read_bytes()
    path.write_bytes(data[:-3])  # truncated
    with pytest.raises(CheckpointError, match="checksum mismatch .* previous good checkpoint"):
        load_checkpoint(path, {"w": jnp.zeros(4)}, "cfg")
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit edited
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path, {"w": jnp.zeros(4)}, "cfg")
    prev = load_checkpoint(tmp_path / "a.ckpt.prev", {"w": jnp.zeros(4)}, "cfg")
    assert prev["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(CheckpointError, match="another configuration"):
        load_checkpoint(tmp_path / "a.ckpt.prev", {"w": jnp.zeros(4)}, "other")
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a jaxprune checkpoint"):
        load_checkpoint(path, {"w": jnp.zeros(4)}, "cfg")


def test_checkpoint_roundtrips_prng_keys_and_optimizer_state(tmp_path):
    params = {"w": jnp.ones(3)}
    tx = optax.adam(0.1)
    tree = {"key": jax.random.key(3), "opt": tx.init(params), "n": np.arange(2)}
    save_checkpoint(tmp_path / "k.ckpt", tree)
    back = load_checkpoint(tmp_path / "k.ckpt", tree)
    assert jax.random.key_data(back["key"]).tolist() == jax.random.key_data(tree["key"]).tolist()
    assert int(back["opt"][0].count) == 0
