"""Many independent training runs as one compiled program, each with its own early stopping."""

from __future__ import annotations

import functools
import hashlib
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from jaxprune._losses import LossFn, get_loss
from jaxprune._types import Params
from jaxprune.training._checks import check_initial_state
from jaxprune.training.checkpoint import load_checkpoint, save_checkpoint
from jaxprune.training.early_stopping import (
    EarlyStoppingState,
    early_stopping_init,
    early_stopping_update,
)
from jaxprune.training.step import make_epoch

__all__ = ["FitResult", "RunState", "fit"]


class RunState(NamedTuple):
    """Everything one run carries between epochs (a leading seed axis when batched)."""

    params: Params
    opt_state: Any
    key: jax.Array
    epoch: jax.Array  # epochs completed
    stopping: EarlyStoppingState


class FitResult(NamedTuple):
    """Result of :func:`fit`; every field has a leading seed axis when ``keys`` is a batch."""

    params: Params  # the best params (restored, as Keras' restore_best_weights), or the last
    loss: jax.Array  # best monitored epoch loss (mean training loss over the epoch's batches)
    epochs: jax.Array  # epochs run
    best_epoch: jax.Array  # 0-based epoch of the best loss
    stopped_early: jax.Array  # True if patience ran out before max_epochs
    opt_state: Any  # optimizer state after the last epoch run
    seconds: float  # wall time of the whole fit (all seeds together), compile included


def _as_key_batch(keys: jax.Array) -> tuple[jax.Array, bool]:
    keys = jnp.asarray(keys)
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        if keys.ndim > 1:
            raise ValueError(f"keys: expected one key or a 1-D batch of keys, got {keys.shape}")
        return (keys[None], True) if keys.ndim == 0 else (keys, False)
    if keys.dtype == jnp.uint32 and keys.shape[-1:] == (2,) and keys.ndim in (1, 2):
        keys = jax.random.wrap_key_data(keys)
        return (keys[None], True) if keys.ndim == 0 else (keys, False)
    raise ValueError(
        "keys: expected jax.random.key(...) or a batch from jax.random.split, "
        f"got dtype {keys.dtype} shape {keys.shape}"
    )


def _bucket(n_active: int, n_rows: int) -> int:
    """Rows to keep: shrink to the next power of two only once 3/4 of the rows are finished.

    On CPU and GPU a small step's time is mostly fixed per-kernel cost, nearly flat in the number
    of rows, so compacting saves little per step while each new row count costs a compile;
    shrinking by >= 4x at a time bounds the compiles to ``log4(n)`` per fit.
    """
    if n_active == 0:
        return 0
    if 4 * n_active > n_rows:
        return n_rows
    return 1 << max(0, math.ceil(math.log2(n_active)))


@functools.lru_cache(maxsize=64)
def _programs(
    model,
    optimizer,
    loss_fn,
    batch_size,
    unroll,
    patience,
    min_delta,
    max_epochs,
    chunk_epochs,
):
    """Builds (and caches, so repeated fits reuse compiled code) the jitted init and chunk."""

    def init_run(key, p0, s0, x):
        k_init, k_run = jax.random.split(key)
        p = model.init(k_init, x[:1])["params"] if p0 is None else p0
        s = optimizer.init(p) if s0 is None else s0
        return RunState(p, s, k_run, jnp.asarray(0, jnp.int32), early_stopping_init(p))

    one_epoch = make_epoch(model, optimizer, loss_fn, batch_size, unroll=unroll)

    def epoch(run: RunState, x, y) -> RunState:
        key, k_perm = jax.random.split(run.key)
        p, s, mean_loss = one_epoch(run.params, run.opt_state, k_perm, x, y)
        stopping = early_stopping_update(
            run.stopping, mean_loss, p, run.epoch, patience=patience, min_delta=min_delta
        )
        e = run.epoch + 1
        stopping = stopping._replace(done=stopping.done | (e >= max_epochs))
        return RunState(p, s, key, e, stopping)

    def chunk(run: RunState, x, y) -> RunState:
        def body(r, _):
            new = epoch(r, x, y)
            return jax.tree.map(lambda a, b: jnp.where(r.stopping.done, a, b), r, new), None

        return jax.lax.scan(body, run, None, length=chunk_epochs)[0]

    init_fn = jax.jit(jax.vmap(init_run, in_axes=(0, 0, 0, None)))
    return init_fn, jax.jit(jax.vmap(chunk, in_axes=(0, None, None)))


def _fingerprint(
    model, loss, batch_size, patience, max_epochs, min_delta, chunk_epochs, keys, x, y
) -> str:
    """Names a fit's configuration, so a checkpoint is never resumed into another one."""
    h = hashlib.sha256()
    for a in (jax.random.key_data(keys), x, y):
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    loss_name = loss if isinstance(loss, str) else getattr(loss, "__qualname__", repr(loss))
    return (
        f"{model!r} loss={loss_name} batch={batch_size} patience={patience} "
        f"max_epochs={max_epochs} min_delta={min_delta} chunk={chunk_epochs} "
        f"data+keys={h.hexdigest()[:16]}"
    )


def _place_seeds(state: RunState) -> RunState:
    """Shards the seed axis over all devices when there are several and the rows divide evenly.

    Runs are independent, so the vmapped program partitions without any collective; otherwise
    the state stays where it is (one device).
    """
    n_dev = jax.device_count()
    rows = jax.tree.leaves(state)[0].shape[0]
    if n_dev == 1 or rows % n_dev:
        return state
    mesh = jax.make_mesh((n_dev,), ("seeds",), axis_types=(AxisType.Auto,))
    return jax.device_put(state, NamedSharding(mesh, P("seeds")))


@jax.jit
def _compact(final, state, seeds, finished, take):
    """Writes finished rows into ``final[seeds]`` and keeps rows ``take`` of ``state``."""
    final = jax.tree.map(lambda f, a: f.at[seeds].set(a[finished]), final, state)
    return final, jax.tree.map(lambda a: a[take], state)


def fit(
    model,
    keys: jax.Array,
    data: tuple[Any, Any],
    *,
    optimizer: optax.GradientTransformation,
    loss: str | LossFn = "mse",
    batch_size: int = 128,
    patience: int = 20,
    max_epochs: int = 500_000,
    min_delta: float = 0.0,
    params: Params | None = None,
    opt_state: Any = None,
    chunk_epochs: int | None = None,
    unroll: int = 1,
    restore_best: bool = True,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 10,
    progress: bool = True,
) -> FitResult:
    """Trains one run per key, all in one compiled program, each with Keras-style early stopping.

    Each run draws its initial params (``model.init``) and its per-epoch shuffles from its own
    key (shuffled with :func:`~jaxprune.training.feistel_permutation`, which needs no sort),
    trains on minibatches of ``batch_size`` (the last partial batch is kept, as in Keras:
    its loss is the mean over its real rows), and stops when its mean epoch loss has not improved
    for ``patience`` epochs; the best params are restored. Runs are ``vmap``-ed; the epoch loop is
    a ``lax.scan`` of ``chunk_epochs`` epochs with no host round-trip per step. Between chunks,
    finished runs are dropped from the batch (compacted once three quarters of the rows are
    finished, see ``_bucket``), so the fastest runs do not keep paying for the slowest.

    Run ``k`` of a batch equals a single-key run with ``keys[k]`` (tested). With several devices
    the seed axis is sharded over all of them whenever the rows divide evenly (seed sharding).

    Args:
      model: Flax module; ``model.init(key, x[:1])["params"]`` gives a run's initial params.
      keys: ``jax.random.key(s)`` for one run, or a 1-D batch from ``jax.random.split``.
      data: ``(x, y)`` arrays with the same leading length.
      optimizer: any optax transformation (its state is per run).
      loss: loss name or per-example loss callable (see :func:`~jaxprune.training.get_loss`).
      batch_size: minibatch size (paper 000: 128).
      patience: early-stopping patience in epochs (paper 000: 20).
      max_epochs: hard cap on epochs (paper 000: 500,000, "practically unlimited"); reaching it
        also restores the best params.
      min_delta: minimum decrease that counts as an improvement.
      params: optional initial params (with a leading seed axis if ``keys`` is a batch); the keys
        then only drive shuffling.
      opt_state: optional initial optimizer state for those params (same leading axis), e.g. to
        continue a previous fit's ``opt_state`` or to carry per-seed masks held in the state;
        default ``optimizer.init(params)``.
      chunk_epochs: epochs per compiled chunk between host checks (default ``patience``).
      unroll: minibatch steps unrolled per iteration of the compiled loop (``lax.scan``'s
        ``unroll``); trades compile time for less loop overhead.
      restore_best: return the params of the best epoch (Keras' ``restore_best_weights``);
        ``False`` returns the last epoch's params, which match the returned ``opt_state`` (use
        it when the optimizer state carries masks that must agree with the params).
      checkpoint: file to save the whole fit state to (params, optimizer state, keys,
        early-stopping state, finished runs) every ``checkpoint_every`` chunks and at the end,
        atomically; if it exists, the fit resumes from it and gives the same result as an
        uninterrupted fit. It is tied (by a fingerprint) to the model, loss, sizes, keys and
        data; the optimizer must be the same.
      checkpoint_every: chunks between checkpoints.
      progress: show a tqdm bar (epochs of the slowest run, runs still active).

    Returns:
      A :class:`FitResult`.

    Raises:
      ValueError: on inconsistent data, NaN/inf in ``data`` (or in the given ``params`` or
        ``opt_state``), given ``params`` whose entries or shapes differ from ``model.init``'s,
        a bad key batch, non-positive sizes or a negative or non-finite ``min_delta``; the
        message names the argument.

    >>> import jax, optax, jaxprune as jp
    >>> x, y = jp.data.paint("square", size=16)
    >>> model = jp.models.MLP(hidden=(3,), linear_after=((9,),))
    >>> runs = jp.training.fit(model, jax.random.split(jax.random.key(0), 4), (x, y),
    ...                        optimizer=optax.adam(1e-2), patience=5, max_epochs=50,
    ...                        progress=False)
    >>> runs.loss.shape, jax.tree.leaves(runs.params)[0].shape[0]
    ((4,), 4)

    References:
      Paper 000, sec. 3.2 (training protocol: batch 128, MSE, early stopping with patience 20).
    """
    start = time.perf_counter()
    x, y = jnp.asarray(data[0]), jnp.asarray(data[1])
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"data: x and y need the same non-zero length, got {x.shape}, {y.shape}")
    for name, value in (
        ("batch_size", batch_size),
        ("patience", patience),
        ("max_epochs", max_epochs),
        ("checkpoint_every", checkpoint_every),
    ):
        if int(value) < 1:
            raise ValueError(f"{name}: must be >= 1, got {value}")
    if not 0.0 <= float(min_delta) < math.inf:
        raise ValueError(f"min_delta: expected a finite value >= 0, got {min_delta}")
    keys, single = _as_key_batch(keys)
    n_runs, n = keys.shape[0], x.shape[0]
    batch_size = min(int(batch_size), n)
    chunk_epochs = int(chunk_epochs or min(patience, max_epochs))
    init_fn, run_chunk = _programs(
        model,
        optimizer,
        get_loss(loss),
        batch_size,
        int(unroll),
        int(patience),
        float(min_delta),
        int(max_epochs),
        chunk_epochs,
    )
    params, opt_state = check_initial_state(model, params, opt_state, (x, y), n_runs, single)
    state = init_fn(keys, params, opt_state, x)
    final = jax.tree.map(jnp.zeros_like, state)
    rows = np.arange(n_runs)  # seed index of each row of `state` (-1: padding copy)
    if checkpoint is not None:
        fingerprint = _fingerprint(
            model, loss, batch_size, patience, max_epochs, min_delta, chunk_epochs, keys, x, y
        )
        if Path(checkpoint).exists():
            saved = load_checkpoint(
                checkpoint, {"state": state, "final": final, "rows": rows}, fingerprint
            )
            state, final, rows = saved["state"], saved["final"], np.asarray(saved["rows"])
    state = _place_seeds(state)
    bar = tqdm(
        total=None, unit="epoch", desc="fit", disable=not progress, leave=False, mininterval=2.0
    )
    chunks = 0
    while rows.size:
        state = run_chunk(state, x, y)
        chunks += 1
        done = np.asarray(state.stopping.done)  # one small host read per chunk
        bar.update(chunk_epochs)
        real = rows >= 0
        bar.set_postfix(active=int((real & ~done).sum()), runs=n_runs, refresh=False)
        active = np.flatnonzero(real & ~done)
        size = _bucket(active.size, rows.size)
        if size < rows.size or not active.size:
            finished = np.flatnonzero(real & done)
            take = np.concatenate([active, np.full(size - active.size, active[0] if size else 0)])
            final, state = _compact(final, state, rows[finished], finished, take)
            state = _place_seeds(state)
            rows = np.concatenate([rows[active], np.full(size - active.size, -1)])
        if checkpoint is not None and (not rows.size or chunks % checkpoint_every == 0):
            save_checkpoint(checkpoint, {"state": state, "final": final, "rows": rows}, fingerprint)
    bar.close()
    es = final.stopping
    result = FitResult(
        params=es.best_params if restore_best else final.params,
        loss=es.best_loss,
        epochs=final.epoch,
        best_epoch=es.best_epoch,
        stopped_early=es.wait >= patience,
        opt_state=final.opt_state,
        seconds=time.perf_counter() - start,
    )
    if single:
        result = result._replace(
            **{
                f: jax.tree.map(lambda a: a[0], getattr(result, f))
                for f in FitResult._fields
                if f != "seconds"
            }
        )
    return result
