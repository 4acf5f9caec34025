"""A fixed number of epochs for many seeds at once, with per-epoch metric curves."""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from jaxprune._losses import LossFn, get_loss
from jaxprune._types import Params
from jaxprune.training._checks import check_initial_state
from jaxprune.training.checkpoint import load_checkpoint, save_checkpoint
from jaxprune.training.fit import _as_key_batch, _place_seeds
from jaxprune.training.step import make_epoch

__all__ = ["EpochsResult", "train_epochs"]


class EpochsResult(NamedTuple):
    """Result of :func:`train_epochs`; a leading seed axis when ``keys`` is a batch."""

    params: Params  # params after the last epoch
    opt_state: Any  # optimizer state after the last epoch
    history: dict[str, jax.Array]  # name -> [seeds, epochs, ...]; "loss": epoch training loss
    seconds: float  # wall time of the whole call, compile included


@functools.lru_cache(maxsize=32)
def _programs(model, optimizer, loss_fn, batch_size, metrics, length):
    epoch = make_epoch(model, optimizer, loss_fn, batch_size)

    def init(key, p0, s0, x):
        k_init, k_run = jax.random.split(key)  # as fit: the same key gives the same run
        p = model.init(k_init, x[:1])["params"] if p0 is None else p0
        return p, optimizer.init(p) if s0 is None else s0, k_run

    def chunk(p, s, key, x, y):
        def body(carry, _):
            p, s, key = carry
            key, k_perm = jax.random.split(key)
            p, s, value = epoch(p, s, k_perm, x, y)
            extra = {} if metrics is None else metrics(p)
            if not isinstance(extra, dict) or "loss" in extra:
                raise ValueError(
                    f"metrics: expected fn(params) -> dict of arrays without a 'loss' key, "
                    f"got {type(extra).__name__}"
                )
            record = {"loss": value, **extra}
            return (p, s, key), record

        return jax.lax.scan(body, (p, s, key), None, length=length)

    vmapped = jax.vmap(chunk, in_axes=(0, 0, 0, None, None))
    return jax.jit(jax.vmap(init, in_axes=(0, 0, 0, None))), jax.jit(vmapped)


def _fingerprint(model, loss, batch_size, epochs, chunk_epochs, keys, x, y) -> str:
    h = hashlib.sha256()
    for a in (jax.random.key_data(keys), x, y):
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    loss_name = loss if isinstance(loss, str) else getattr(loss, "__qualname__", repr(loss))
    return (
        f"train_epochs {model!r} loss={loss_name} batch={batch_size} epochs={epochs} "
        f"chunk={chunk_epochs} data+keys={h.hexdigest()[:16]}"
    )


def train_epochs(
    model,
    keys: jax.Array,
    data: tuple[Any, Any],
    *,
    optimizer: optax.GradientTransformation,
    epochs: int,
    loss: str | LossFn = "cross_entropy",
    batch_size: int = 128,
    params: Params | None = None,
    opt_state: Any = None,
    metrics: Callable[[Params], dict[str, Any]] | None = None,
    chunk_epochs: int | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> EpochsResult:
    """Trains every run for exactly ``epochs`` epochs, recording a curve per epoch.

    The fixed-budget counterpart of :func:`~jaxprune.training.fit` (which stops early): the
    protocol of papers 001-004, whose figures plot accuracy against epochs. Runs (one per key)
    are ``vmap``-ed into one program; the epochs are a ``lax.scan`` in chunks of
    ``chunk_epochs`` with one host round-trip per chunk (progress bar, checkpoint). After each
    epoch ``metrics(params)`` (a pure function returning a pytree of arrays, e.g. the test
    accuracy of a closure over test data) is evaluated inside the program.

    Each epoch shuffles and batches as :func:`~jaxprune.training.fit` does (same key splits,
    last smaller batch kept), so ``train_epochs`` and ``fit(..., patience > epochs,
    restore_best=False)`` reach the same params from the same key (tested).

    Args:
      model: Flax module; ``model.init(key, x[:1])["params"]`` gives a run's initial params.
      keys: one key or a 1-D batch of keys (``jax.random.split``).
      data: ``(x, y)`` with the same non-zero leading length.
      optimizer: any optax transformation, e.g. ``train_scores(...)`` or a freeze chain.
      epochs: number of epochs, ``>= 1``.
      loss: loss name or per-example ``fn(pred, target)``.
      batch_size: minibatch size (capped at the number of examples).
      params: initial params (leading seed axis for a key batch) instead of ``model.init``.
      opt_state: initial optimizer state (needs ``params``), e.g. to continue a run.
      metrics: ``fn(params) -> {name: array}`` recorded after every epoch (traced under ``jit``
        and ``vmap``; pass the same function object again to reuse the compiled program).
      chunk_epochs: epochs per compiled chunk (default: all, or 10 with a checkpoint).
      checkpoint: file to save to after every chunk and to resume from if it exists (atomic,
        checksummed, tied to the configuration; see :func:`save_checkpoint`).
      progress: show a tqdm bar.

    Returns:
      An :class:`EpochsResult`; ``history["loss"]`` and each metric have shape
      ``[seeds, epochs, ...]`` (no seed axis for a single key).

    Raises:
      ValueError: for ``epochs``/``batch_size``/``chunk_epochs`` < 1, inconsistent data, NaN/inf
        in ``data`` (or in the given ``params``/``opt_state``), a bad key batch, or
        ``params``/``opt_state`` whose leading axis is not the number of keys or whose entries
        and shapes differ from ``model.init``'s.

    >>> import jax, jax.numpy as jnp, optax, jaxprune as jp
    >>> x, y = jp.data.paint("square", size=8)
    >>> model = jp.models.MLP(hidden=(4,))
    >>> acc = lambda p: jnp.mean((model.apply({"params": p}, x) > 0.5) == (y > 0.5))
    >>> r = jp.training.train_epochs(model, jax.random.split(jax.random.key(0), 3), (x, y),
    ...     optimizer=optax.adam(1e-2), epochs=5, loss="mse", batch_size=16,
    ...     metrics=lambda p: {"accuracy": acc(p)}, progress=False)
    >>> r.history["loss"].shape, r.history["accuracy"].shape
    ((3, 5), (3, 5))

    References:
      Paper 003, App. A (fixed epochs, test accuracy per epoch); paper 001, sec. IV.
    """
    start = time.perf_counter()
    x, y = jnp.asarray(data[0]), jnp.asarray(data[1])
    if x.ndim < 1 or x.shape[0] == 0 or y.shape[:1] != x.shape[:1]:
        raise ValueError(f"data: x and y need the same non-zero length, got {x.shape}, {y.shape}")
    default_chunk = 10 if checkpoint is not None else epochs
    chunk_epochs = default_chunk if chunk_epochs is None else chunk_epochs
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("chunk", chunk_epochs)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value}")
    keys, single = _as_key_batch(keys)
    n_runs = keys.shape[0]
    params, opt_state = check_initial_state(model, params, opt_state, (x, y), n_runs, single)
    epochs, batch_size = int(epochs), min(int(batch_size), x.shape[0])
    chunk_epochs = min(int(chunk_epochs), epochs)
    loss_fn = get_loss(loss)
    init, _ = _programs(model, optimizer, loss_fn, batch_size, metrics, chunk_epochs)
    p, s, k = init(keys, params, opt_state, x)
    _, chunk = _programs(model, optimizer, loss_fn, batch_size, metrics, chunk_epochs)
    record = jax.eval_shape(chunk, p, s, k, x, y)[1]
    history = jax.tree.map(lambda a: np.zeros((n_runs, epochs, *a.shape[2:]), a.dtype), record)
    done = 0
    if checkpoint is not None:
        fingerprint = _fingerprint(model, loss, batch_size, epochs, chunk_epochs, keys, x, y)
        if Path(checkpoint).exists():
            target = {"state": (p, s, k), "history": history, "done": np.int64(0)}
            saved = load_checkpoint(checkpoint, target, fingerprint)
            (p, s, k), done = saved["state"], int(saved["done"])
            history = jax.tree.map(np.array, saved["history"])
    p, s, k = _place_seeds((p, s, k))
    bar = tqdm(total=epochs, initial=done, unit="epoch", desc="train_epochs", disable=not progress)
    while done < epochs:
        length = min(chunk_epochs, epochs - done)
        run = chunk  # the last chunk may be shorter: one more compile
        if length != chunk_epochs:
            run = _programs(model, optimizer, loss_fn, batch_size, metrics, length)[1]
        (p, s, k), rec = run(p, s, k, x, y)
        for h, r in zip(jax.tree.leaves(history), jax.tree.leaves(rec), strict=True):
            h[:, done : done + length] = np.asarray(r)
        done += length
        bar.update(length)
        if checkpoint is not None:
            tree = {"state": (p, s, k), "history": history, "done": np.int64(done)}
            save_checkpoint(checkpoint, tree, fingerprint)
    bar.close()
    if single:
        p, s = jax.tree.map(lambda a: a[0], (p, s))
        history = jax.tree.map(lambda a: a[0], history)
    history = jax.tree.map(jnp.asarray, history)
    return EpochsResult(p, s, history, time.perf_counter() - start)
