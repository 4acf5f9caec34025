"""Atomic, verified checkpoints of pytrees (flax msgpack serialization + a SHA-256 header)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import jax
import numpy as np
from flax import serialization

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]

_MAGIC = b"JAXPRUNE-CKPT-1\n"


class CheckpointError(ValueError):
    """A checkpoint file is truncated, edited or was written for another configuration."""


def _to_host(tree):
    def leaf(a):
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            return {"__prng_key__": np.asarray(jax.random.key_data(a))}
        return np.asarray(a)

    return jax.tree.map(leaf, tree)


def save_checkpoint(path: str | Path, tree, fingerprint: str = "") -> Path:
    """Writes ``tree`` to ``path`` atomically; the previous file is kept as ``path.prev``.

    The file is a magic line, a SHA-256 of the payload, the ``fingerprint`` (a string naming the
    configuration, checked on load) and the flax msgpack payload. The bytes go to a temporary file
    in the same folder, which is then renamed over ``path``, so a crash never leaves a
    half-written checkpoint; the last good one is first moved to ``path.prev``.

    >>> import tempfile, pathlib, jax.numpy as jnp
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "run.ckpt"
    >>> _ = save_checkpoint(p, {"w": jnp.arange(3.0)}, fingerprint="demo")
    >>> load_checkpoint(p, {"w": jnp.zeros(3)}, fingerprint="demo")["w"].tolist()
    [0.0, 1.0, 2.0]
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = serialization.msgpack_serialize(serialization.to_state_dict(_to_host(tree)))
    header = _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    header += fingerprint.encode().replace(b"\n", b" ") + b"\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(header + payload)
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        os.replace(path, path.with_name(path.name + ".prev"))
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, target, fingerprint: str = ""):
    """Reads a checkpoint written by :func:`save_checkpoint` into the structure of ``target``.

    Leaf shapes come from the file (so a compacted batch of runs restores as saved); PRNG keys
    are re-wrapped. Raises :class:`CheckpointError` (a ``ValueError``) when the file is truncated
    or edited (checksum mismatch) or its fingerprint differs, naming the path and, if present,
    the previous good checkpoint ``path.prev``.
    """
    path = Path(path)
    data = path.read_bytes()
    prev = path.with_name(path.name + ".prev")
    hint = f"; the previous good checkpoint is {prev}" if prev.exists() else ""
    parts = data.split(b"\n", 3)
    if len(parts) < 4 or parts[0] + b"\n" != _MAGIC:
        raise CheckpointError(f"checkpoint {path}: not a jaxprune checkpoint or truncated{hint}")
    _, digest, saved_fp, payload = parts
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise CheckpointError(f"checkpoint {path}: checksum mismatch (truncated or edited){hint}")
    if saved_fp.decode() != fingerprint.replace("\n", " "):
        raise CheckpointError(
            f"checkpoint {path}: written for another configuration ({saved_fp.decode()!r}, "
            f"expected {fingerprint!r})"
        )
    state = serialization.msgpack_restore(payload)
    host_target = _to_host(target)
    restored = serialization.from_state_dict(host_target, state)

    def wrap(t, r):
        if isinstance(t, jax.Array) and jax.dtypes.issubdtype(t.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(np.asarray(r["__prng_key__"]))
        return jax.numpy.asarray(r)

    is_key = lambda v: isinstance(v, dict) and "__prng_key__" in v
    flat_t = jax.tree.leaves(target)
    flat_r = jax.tree.leaves(restored, is_leaf=is_key)
    if len(flat_t) != len(flat_r):
        raise CheckpointError(f"checkpoint {path}: structure does not match the target")
    return jax.tree.unflatten(
        jax.tree.structure(target), [wrap(t, r) for t, r in zip(flat_t, flat_r, strict=True)]
    )
