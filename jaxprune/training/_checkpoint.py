"""Checkpoints of a training loop's whole state, written with orbax-checkpoint.

A checkpoint directory is an ``orbax.checkpoint.CheckpointManager`` holding the two most recent
steps (``max_to_keep=2``: the previous checkpoint is always kept). Each step has two items:

* ``state``: the pytree's leaves as a flat ``{"000000": leaf, ...}`` dict (orbax's
  ``PyTreeSave``; sharded arrays are written by every process, each its own shards; PRNG keys
  as their ``key_data``);
* ``meta``: JSON with the configuration ``fingerprint`` (named fields: model, optimizer,
  loss, data...), the tree structure and a SHA-256 of the leaves' bytes, dtypes and shapes.

Orbax writes a step into a temporary directory and renames it when complete, so a crash or
SIGKILL never leaves a half-written step that looks finished. On restore, a fingerprint that
differs from the caller's (the error names the fields that differ), a structure that differs, a
step orbax cannot read, or leaves whose digest differs from the recorded one (an edited or
truncated file) raise :class:`CheckpointError`, which names the previous step and how to resume
from it: never a silent fallback to another step.

With several processes (``jax.distributed``), every process calls ``save`` and ``restore`` with
the same tree: a leaf that spans processes (sharded or replicated over a global mesh) is written
by orbax shard by shard and read back into the target leaf's sharding; a process-local leaf (the
same values on every process) is written once. The digest covers the leaves that are fully
addressable by this process (all of them on one host); the leaves that span processes are
checked by orbax/tensorstore alone. Tested with two processes of two CPU devices each
(``tests/test_multiprocess.py``): the data-parallel state saved after one epoch and restored
continues bit-identically.

Public as :class:`jaxprune.training.Checkpoints` for loops written by hand (the data-parallel
epoch); ``fit`` and ``train_epochs`` use it through ``checkpoint=``.
"""

from __future__ import annotations

import gc
import hashlib
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CheckpointError", "Checkpoints"]


class CheckpointError(ValueError):
    """A checkpoint is unreadable, edited or was written for another configuration.

    Attributes:
      fields: the names of the fingerprint fields that differ (another configuration), else
        ``()``.
    """

    def __init__(self, message: str, fields: tuple[str, ...] = ()):
        super().__init__(message)
        self.fields = tuple(fields)


def _as_fields(fingerprint) -> dict[str, str]:
    """A fingerprint as named fields: a string is the one field ``configuration``."""
    if isinstance(fingerprint, str):
        return {"configuration": fingerprint}
    if isinstance(fingerprint, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in fingerprint.items()
    ):
        return dict(fingerprint)
    raise TypeError(
        "fingerprint: expected a string or a dict of named string fields, got "
        f"{type(fingerprint).__name__}"
    )


def _excerpts(saved: str | None, now: str | None, width: int = 64) -> tuple[str, str]:
    """Short quotes of two differing values, around their first difference."""
    if saved is None or now is None:
        return (
            "absent" if saved is None else repr(saved[:width]),
            "absent" if now is None else repr(now[:width]),
        )
    same = next(
        (i for i, (a, b) in enumerate(zip(saved, now, strict=False)) if a != b),
        min(len(saved), len(now)),
    )
    start = max(0, same - width // 3)

    def cut(text: str) -> str:
        part = text[start : start + width]
        return repr(("…" if start else "") + part + ("…" if start + width < len(text) else ""))

    return cut(saved), cut(now)


def _mismatch(where: str, directory: Path, saved: dict, now: dict) -> CheckpointError:
    names = [*now, *(k for k in saved if k not in now)]
    differ = tuple(k for k in names if saved.get(k) != now.get(k))
    parts = []
    for k in differ[:3]:
        old, new = _excerpts(saved.get(k), now.get(k))
        parts.append(f"{k} (saved {old}, now {new})")
    if len(differ) > 3:
        parts.append(f"and {len(differ) - 3} more: {', '.join(differ[3:])}")
    return CheckpointError(
        f"{where}: written for another configuration: {'; '.join(parts)}. Pass another "
        f"checkpoint directory to start a new run, or delete {directory} to discard the saved "
        "one; the saved run resumes only with its own settings",
        differ,
    )


def _is_key(a) -> bool:
    return isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)


def _digest(leaves) -> str:
    h = hashlib.sha256()
    for a in leaves:
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            h.update(b"<not addressable>")
            continue
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _collect_failed_read():
    """A failed orbax read leaves coroutines bound to the event loop orbax has already closed;
    they are collected here, where their "Event loop is closed" on cleanup is expected, rather
    than reported later as an unraisable error in unrelated code."""
    hook = sys.unraisablehook

    def quiet(unraisable):
        if not (
            isinstance(unraisable.exc_value, RuntimeError)
            and "Event loop is closed" in str(unraisable.exc_value)
        ):
            hook(unraisable)

    sys.unraisablehook = quiet
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


def _structure(treedef: str) -> str:
    """A tree structure as text without memory addresses: a static field of an equinox module
    (``jax.nn.relu``) is printed with its address, which differs in every process."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", treedef)


def _names(n: int) -> list[str]:
    return [f"{i:06d}" for i in range(n)]  # sorted order == leaf order


class Checkpoints:
    """The checkpoints of one training call, in a directory (created on first save).

    Args:
      directory: where the orbax ``CheckpointManager`` keeps its steps.
      fingerprint: the configuration, as a dict of named string fields (``{"model": ...,
        "optimizer": ...}``, stored as JSON) or one string; a checkpoint written under another
        fingerprint is refused on restore with a :class:`CheckpointError` naming the fields
        that differ (``error.fields``) and quoting their saved and current values around the
        first difference.

    >>> import tempfile, jax, jax.numpy as jnp
    >>> ckpt = Checkpoints(tempfile.mkdtemp() + "/run", fingerprint="demo")
    >>> ckpt.restore({"w": jnp.zeros(3)}) is None  # nothing saved yet
    True
    >>> ckpt.save({"w": jnp.arange(3.0), "key": jax.random.key(1)})
    1
    >>> back = ckpt.restore({"w": jnp.zeros(3), "key": jax.random.key(0)})
    >>> back["w"].tolist(), jax.random.key_data(back["key"]).tolist()
    ([0.0, 1.0, 2.0], [0, 1])
    >>> ckpt.close()
    """

    def __init__(self, directory: str | Path, fingerprint: str | Mapping[str, str]):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(
                f"checkpoint {self.directory}: expected a directory of orbax checkpoints, "
                "found a file"
            )
        self.fingerprint = _as_fields(fingerprint)
        options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        steps = self._manager.all_steps()
        self._step = max(steps) if steps else 0

    def _hint(self, step: int) -> str:
        older = [s for s in self._manager.all_steps() if s < step]
        if not older:
            return ""
        prev = self.directory / str(max(older))
        return (
            f"; the previous checkpoint is {prev} (delete {self.directory / str(step)} to "
            "resume from it)"
        )

    def restore(self, target):
        """The latest step's tree in the structure of ``target``, or None if there is none.

        Leaf shapes and dtypes come from the checkpoint (a compacted batch of runs restores as
        saved), except for leaves of ``target`` that span several processes: these are read
        into the target leaf's shape and sharding. Leaves that are PRNG keys in ``target`` are
        re-wrapped as keys.

        Raises:
          CheckpointError: another configuration's fingerprint, another tree structure, a step
            orbax cannot read, or a digest mismatch (truncated or edited); the message names
            the previous step.
        """
        ocp = self._ocp
        self._manager.wait_until_finished()
        step = self._manager.latest_step()
        if step is None:
            return None
        where = f"checkpoint {self.directory / str(step)}"
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta, failure = meta["meta"], None
        except Exception as exc:  # noqa: BLE001 -- any read failure is reported as corruption
            failure = f"{type(exc).__name__}: {exc}"
        if failure is not None:
            _collect_failed_read()
            raise CheckpointError(f"{where}: unreadable metadata ({failure}){self._hint(step)}")
        saved_fields = meta.get("fingerprint")
        if not isinstance(saved_fields, dict):  # a string, as older versions wrote it
            saved_fields = {"configuration": str(saved_fields)}
        if saved_fields != self.fingerprint:
            raise _mismatch(where, self.directory, saved_fields, self.fingerprint)
        leaves, treedef = jax.tree.flatten(target)
        if _structure(meta.get("structure", "")) != _structure(str(treedef)):
            raise CheckpointError(f"{where}: structure does not match the target{self._hint(step)}")
        names, empty = _names(len(leaves)), meta.get("empty", {})
        stored = [n for n in names if n not in empty] or ["empty"]
        # a leaf the target holds across processes is read back into the target's sharding
        # (each process reads its own shards); every other leaf as a whole host array
        as_stored = [jax.random.key_data(t) if _is_key(t) else t for t in leaves]
        spread = {
            n: t
            for n, t in zip(names, as_stored, strict=True)
            if isinstance(t, jax.Array) and not t.is_fully_addressable
        }
        restore_args = {
            n: ocp.ArrayRestoreArgs(sharding=spread[n].sharding, global_shape=spread[n].shape)
            if n in spread
            else ocp.RestoreArgs(restore_type=np.ndarray)
            for n in stored
        }
        try:
            state = self._manager.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.PyTreeRestore(restore_args=restore_args)),
            )["state"]
            saved = [
                np.zeros(empty[n][1], jnp.dtype(empty[n][0]))
                if n in empty
                else state[n]
                if n in spread
                else np.asarray(state[n])
                for n in names
            ]
            failure = None
        except Exception as exc:  # noqa: BLE001 -- any read failure is reported as corruption
            failure = f"{type(exc).__name__}: {exc}"
        if failure is not None:
            _collect_failed_read()
            raise CheckpointError(
                f"{where}: unreadable (truncated or edited: {failure}){self._hint(step)}"
            )
        if _digest(saved) != meta.get("sha256"):
            raise CheckpointError(
                f"{where}: checksum mismatch (truncated or edited){self._hint(step)}"
            )
        out = [
            jax.random.wrap_key_data(s, impl=jax.random.key_impl(t))
            if _is_key(t)
            else jnp.asarray(s)
            for t, s in zip(leaves, saved, strict=True)
        ]
        return jax.tree.unflatten(treedef, out)

    def save(self, tree) -> int:
        """Saves ``tree`` as the next step (asynchronously: orbax commits in the background);
        the step before it is kept, older ones are deleted. Returns the step number."""
        ocp = self._ocp
        leaves, treedef = jax.tree.flatten(tree)
        # PRNG keys as their data; host arrays copied (orbax writes them in the background).
        leaves = [jax.random.key_data(a) if _is_key(a) else a for a in leaves]
        several = jax.process_count() > 1
        leaves = [
            a
            if isinstance(a, jax.Array) and not (several and a.is_fully_addressable)
            # with several processes, orbax writes only global arrays (each process its own
            # shards); a process-local one holds the same values on every process and is
            # written once, as a host array
            else np.array(a)
            for a in leaves
        ]
        meta = {
            "fingerprint": self.fingerprint,
            "structure": _structure(str(treedef)),
            "sha256": _digest(leaves),
        }
        self._step += 1
        # Orbax cannot write zero-size arrays (all runs of a fit finished): their dtype and shape
        # go to the metadata instead.
        names = _names(len(leaves))
        state = {n: a for n, a in zip(names, leaves, strict=True) if a.size}
        meta["empty"] = {
            n: [str(a.dtype), list(a.shape)]
            for n, a in zip(names, leaves, strict=True)
            if not a.size
        }
        state = state or {"empty": np.zeros(1, np.uint8)}  # orbax needs at least one array
        self._manager.save(
            self._step,
            args=ocp.args.Composite(state=ocp.args.PyTreeSave(state), meta=ocp.args.JsonSave(meta)),
        )
        return self._step

    def close(self):
        """Waits for pending writes and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
