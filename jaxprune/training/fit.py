"""Many independent training runs as one compiled program, each with its own early stopping."""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxprune._types import Params
from jaxprune.training.early_stopping import (
    EarlyStoppingState,
    early_stopping_init,
    early_stopping_update,
)
from jaxprune.training.losses import LossFn, get_loss
from jaxprune.training.step import batch_loss

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

    params: Params  # the best params (restored, as Keras' restore_best_weights)
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


def _bucket(n_active: int, n_total: int) -> int:
    """Row count to compact to: the next power of two (bounded compile count), at most n_total."""
    return min(n_total, 1 << max(0, math.ceil(math.log2(max(n_active, 1)))))


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
    chunk_epochs: int | None = None,
    progress: bool = True,
) -> FitResult:
    """Trains one run per key, all in one compiled program, each with Keras-style early stopping.

    Each run draws its initial params (``model.init``) and its per-epoch shuffles from its own
    key, trains on minibatches of ``batch_size`` (the last partial batch is kept, as in Keras:
    its loss is the mean over its real rows), and stops when its mean epoch loss has not improved
    for ``patience`` epochs; the best params are restored. Runs are ``vmap``-ed; the epoch loop is
    a ``lax.scan`` of ``chunk_epochs`` epochs with no host round-trip per step. Between chunks,
    finished runs are dropped from the batch (compacted to the next power of two), so they stop
    costing compute and the fastest run never waits for the slowest.

    Run ``k`` of a batch equals a single-key run with ``keys[k]`` (tested).

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
      chunk_epochs: epochs per compiled chunk between host checks (default ``patience``).
      progress: show a tqdm bar (epochs of the slowest run, runs still active).

    Returns:
      A :class:`FitResult`.

    Raises:
      ValueError: on inconsistent data, a bad key batch or non-positive sizes.

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
    for name, value in (("batch_size", batch_size), ("patience", patience),
                        ("max_epochs", max_epochs)):
        if int(value) < 1:
            raise ValueError(f"{name}: must be >= 1, got {value}")
    keys, single = _as_key_batch(keys)
    n_runs, n = keys.shape[0], x.shape[0]
    batch_size = min(int(batch_size), n)
    n_batches = -(-n // batch_size)
    pad = n_batches * batch_size - n
    chunk_epochs = int(chunk_epochs or min(patience, max_epochs))
    loss_fn = get_loss(loss)

    def init_run(key, p0):
        k_init, k_run = jax.random.split(key)
        p = model.init(k_init, x[:1])["params"] if p0 is None else p0
        return RunState(p, optimizer.init(p), k_run, jnp.asarray(0, jnp.int32),
                        early_stopping_init(p))

    def train_step(carry, batch):
        p, s = carry
        xb, yb, wb = batch
        value, grads = jax.value_and_grad(lambda q: batch_loss(model.apply, loss_fn, q, xb, yb,
                                                               wb))(p)
        updates, s = optimizer.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), value * jnp.sum(wb)

    def epoch(run: RunState) -> RunState:
        key, k_perm = jax.random.split(run.key)
        idx = jnp.concatenate([jax.random.permutation(k_perm, n), jnp.zeros(pad, jnp.int32)])
        w = jnp.concatenate([jnp.ones(n, x.dtype), jnp.zeros(pad, x.dtype)])
        split = lambda a: a.reshape(n_batches, batch_size, *a.shape[1:])
        batches = (split(x[idx]), split(y[idx]), split(w))
        (p, s), sums = jax.lax.scan(train_step, (run.params, run.opt_state), batches)
        epoch_loss = jnp.sum(sums) / n
        stopping = early_stopping_update(run.stopping, epoch_loss, p, run.epoch,
                                         patience=patience, min_delta=min_delta)
        e = run.epoch + 1
        stopping = stopping._replace(done=stopping.done | (e >= max_epochs))
        return RunState(p, s, key, e, stopping)

    def chunk(run: RunState) -> RunState:
        def body(r, _):
            new = epoch(r)
            return jax.tree.map(lambda a, b: jnp.where(r.stopping.done, a, b), r, new), None

        return jax.lax.scan(body, run, None, length=chunk_epochs)[0]

    if params is not None and single:
        params = jax.tree.map(lambda a: jnp.asarray(a)[None], params)
    if params is None:
        state = jax.jit(jax.vmap(lambda k: init_run(k, None)))(keys)
    else:
        lead = {np.shape(a)[0] for a in jax.tree.leaves(params)}
        if lead != {n_runs}:
            raise ValueError(f"params: expected a leading seed axis of {n_runs}, got {lead}")
        state = jax.jit(jax.vmap(init_run))(keys, params)
    run_chunk = jax.jit(jax.vmap(chunk))
    final = jax.tree.map(jnp.zeros_like, state)
    rows = np.arange(n_runs)  # seed index of each row of `state` (-1: padding copy)
    bar = tqdm(total=None, unit="epoch", desc="fit", disable=not progress, leave=False)
    while rows.size:
        state = run_chunk(state)
        done = np.asarray(state.stopping.done)  # one small host read per chunk
        bar.update(chunk_epochs)
        real = rows >= 0
        bar.set_postfix(active=int((real & ~done).sum()), runs=n_runs)
        active = np.flatnonzero(real & ~done)
        size = _bucket(active.size, n_runs) if active.size else 0
        if size == rows.size and active.size:
            continue
        finished = np.flatnonzero(real & done)
        final = jax.tree.map(lambda f, s: f.at[rows[finished]].set(s[finished]), final, state)
        take = np.concatenate([active, np.full(size - active.size, active[0] if size else 0)])
        state = jax.tree.map(lambda a: a[take], state)
        rows = np.concatenate([rows[active], np.full(size - active.size, -1)])
    bar.close()
    es = final.stopping
    result = FitResult(
        params=es.best_params,
        loss=es.best_loss,
        epochs=final.epoch,
        best_epoch=es.best_epoch,
        stopped_early=es.wait >= patience,
        opt_state=final.opt_state,
        seconds=time.perf_counter() - start,
    )
    if single:
        result = result._replace(**{
            f: jax.tree.map(lambda a: a[0], getattr(result, f))
            for f in FitResult._fields if f != "seconds"
        })
    return result
