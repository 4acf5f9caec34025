"""A fixed number of epochs for many seeds at once, with per-epoch metric curves."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune._data_checks import n_rows, rows
from jaxprune._losses import LossFn, get_loss
from jaxprune._types import Model, Params, Variables
from jaxprune.training._checkpoint import Checkpoints
from jaxprune.training._checks import check_call, check_initial_state, device_data, given_variables
from jaxprune.training._core import ProgramCache, TrainState, jit, make_core
from jaxprune.training._fingerprint import run_fields
from jaxprune.training._fit import _as_key_batch, _place_seeds
from jaxprune.training._model import check_starts, training_model
from jaxprune.training._progress import Progress

__all__ = ["EpochsResult", "train_epochs"]


class EpochsResult(NamedTuple):
    """Result of :func:`train_epochs`; a leading seed axis when ``keys`` is a batch."""

    variables: Any  # the model's variables in its own form (every collection) after the last epoch
    params: Params  # the trainable part of ``variables``
    state: Any  # every other variable collection (BatchNorm statistics, ...), {} if none
    opt_state: Any  # optimizer state after the last epoch
    history: dict[str, jax.Array]  # name -> [seeds, epochs, ...]; "loss": epoch training loss
    seconds: float  # wall time of the whole call, compile included


_PROGRAMS = ProgramCache(32)


def _programs(tm, optimizer, loss_fn, batch_size, metrics, length, partial, trainable):
    parts = (tm, optimizer, loss_fn, batch_size, metrics, length, partial, trainable)
    return _PROGRAMS.get(parts, lambda: _build(*parts))


def _build(tm, optimizer, loss_fn, batch_size, metrics, length, partial, trainable):
    core = make_core(
        tm, loss_fn, optimizer, batch_size=batch_size, partial=partial, trainable=trainable
    )

    def init(key, p0, s0, v0, x):
        k_init, k_run = jax.random.split(key)  # as fit: the same key gives the same run
        return core.init(k_init, rows(x, slice(0, 1)), p0, s0, v0), k_run

    def chunk(ts: TrainState, key, x, y):
        def body(carry, _):
            ts, key = carry
            key, k_epoch = jax.random.split(key)
            ts, value = core.epoch(ts, k_epoch, x, y)
            extra = {} if metrics is None else metrics(tm.variables(ts.params, ts.state))
            if not isinstance(extra, dict) or "loss" in extra:
                raise ValueError(
                    f"metrics: expected fn(variables) -> dict of arrays without a 'loss' key, "
                    f"got {type(extra).__name__}"
                )
            return (ts, key), {"loss": value, **extra}

        return jax.lax.scan(body, (ts, key), None, length=length)

    vmapped = jax.vmap(chunk, in_axes=(0, 0, None, None))
    return jit(jax.vmap(init, in_axes=(0, 0, 0, 0, None))), jit(vmapped)


def train_epochs(
    model: Model,
    data: tuple[Any, Any],
    *,
    keys: jax.Array,
    loss: str | LossFn,
    optimizer: optax.GradientTransformation,
    epochs: int,
    variables: Variables = None,
    batch_size: int = 128,
    partial: str = "keep",
    params: Params | None = None,
    opt_state: Any = None,
    metrics: Callable[[Params], dict[str, Any]] | None = None,
    trainable: Callable[[Any, Any], bool] | None = None,
    chunk_epochs: int | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    train_kw: str | None = "train",
    mutable: tuple[str, ...] | None = None,
    rngs: tuple[str, ...] = ("dropout",),
    init_fn: Callable[[jax.Array], Any] | None = None,
    same_init: bool = False,
) -> EpochsResult:
    """Trains every run for exactly ``epochs`` epochs, recording a curve per epoch.

    The fixed-budget counterpart of :func:`~jaxprune.training.fit` (which stops early): the
    protocol of papers 001-004, whose figures plot accuracy against epochs. Runs (one per key)
    are ``vmap``-ed into one program; the epochs are a ``lax.scan`` in chunks of
    ``chunk_epochs`` with one host round-trip per chunk (progress bar, checkpoint). After each
    epoch ``metrics(variables)`` (a pure function returning a pytree of arrays, e.g. the test
    accuracy of a closure over test data) is evaluated inside the program.

    Each epoch shuffles and batches as :func:`~jaxprune.training.fit` does (same key splits,
    last smaller batch kept), so ``train_epochs`` and ``fit(..., patience > epochs,
    restore_best=False)`` reach the same params from the same key (tested).

    Args:
      model: any model :func:`~jaxprune.training.fit` takes (linen with BatchNorm and dropout,
        NNX, equinox, an ``(init_fn, apply_fn)`` pair, ``f(params, x)`` with ``variables`` or
        ``init_fn``, a haiku transform).
      keys: one key or a 1-D batch of keys (``jax.random.split``).
      data: ``(x, y)`` with the same non-zero leading length; ``x`` may be a tuple of arrays
        sharing that length, a model's several inputs, called as ``model.apply(v, *x, ...)``.
      loss: loss name or per-example ``fn(pred, target)``; required.
      optimizer: any optax transformation, e.g. ``train_scores(...)`` or a freeze chain.
      epochs: number of epochs, ``>= 1``.
      variables: the model's variables (as for :func:`~jaxprune.training.fit`).
      batch_size: minibatch size (capped at the number of examples).
      partial: the last ``n % batch_size`` examples of an epoch: ``"keep"`` (default, one
        smaller step, as Keras), ``"drop"`` or ``"pad"`` (rows of weight 0).
      params: initial params (leading seed axis for a key batch) instead of ``model.init``.
      opt_state: initial optimizer state (needs ``params``), e.g. to continue a run.
      metrics: ``fn(variables) -> {name: array}`` (the model's variables in its own form,
        for linen ``{"params": ..., "batch_stats": ...}``) recorded after every epoch (traced
        under ``jit`` and ``vmap``; pass the same function object again to reuse the compiled
        program).
      trainable: optional ``(path, leaf) -> bool`` over the params (e.g.
        :func:`jaxprune.models.is_score`): only the selected leaves are differentiated and
        updated, the others pass through bit-identical; the optimizer sees zero gradients for
        them. Default: every parameter trains.
      chunk_epochs: epochs per compiled chunk (default: all, or 10 with a checkpoint).
      checkpoint: directory of orbax-checkpoint steps, saved after every chunk and resumed
        from if it holds one, curves included (the last two kept, digest-checked, tied to the
        configuration as for :func:`~jaxprune.training.fit`, ``metrics`` and ``trainable``
        too; see :class:`~jaxprune.training._checkpoint.Checkpoints`).
      progress: a tqdm bar on a terminal, a plain line every 30 s otherwise.
      train_kw, mutable, rngs: as for :func:`~jaxprune.training.fit`.
      init_fn, same_init: as for :func:`~jaxprune.training.fit`: each run's initial weights
        drawn from its key by ``init_fn`` (NNX, equinox, functions), or every run started from
        the one fixed set given (``same_init=True``; required for several keys).

    Returns:
      An :class:`EpochsResult`; ``history["loss"]`` and each metric have shape
      ``[seeds, epochs, ...]`` (no seed axis for a single key).

    Raises:
      ValueError: for ``epochs``/``batch_size``/``chunk_epochs`` < 1, inconsistent data, NaN/inf
        in ``data`` (or in the given ``params``/``opt_state``), a bad key batch, or
        ``params``/``opt_state`` whose leading axis is not the number of keys or whose entries
        and shapes differ from ``model.init``'s; several keys with one fixed set of weights
        without ``same_init=True``.

    >>> import jax, jax.numpy as jnp, optax, jaxprune as jp
    >>> x, y = jp.data.paint("square", size=8)
    >>> model = jp.models.MLP(hidden=(4,))
    >>> acc = lambda v: jnp.mean((model.apply(v, x) > 0.5) == (y > 0.5))
    >>> r = jp.training.train_epochs(model, (x, y), keys=jax.random.split(jax.random.key(0), 3),
    ...     optimizer=optax.adam(1e-2), epochs=5, loss="mse", batch_size=16,
    ...     metrics=lambda v: {"accuracy": acc(v)}, progress=False)
    >>> r.history["loss"].shape, r.history["accuracy"].shape
    ((3, 5), (3, 5))

    References:
      Paper 003, App. A (fixed epochs, test accuracy per epoch); paper 001, sec. IV.
    """
    start = time.perf_counter()
    x, y = device_data(data)
    default_chunk = 10 if checkpoint is not None else epochs
    chunk_epochs = default_chunk if chunk_epochs is None else chunk_epochs
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("chunk", chunk_epochs)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value}")
    keys, single = _as_key_batch(keys)
    n_runs = keys.shape[0]
    tm = training_model(
        model, variables, train_kw=train_kw, mutable=mutable, rngs=rngs, init_fn=init_fn
    )
    check_starts(tm, rows(x, slice(0, 1)), n_runs, params, bool(same_init))
    params, opt_state = check_initial_state(tm, params, opt_state, (x, y), n_runs, single)
    given_params, given_opt_state = params, opt_state  # for the checkpoint's fingerprint
    epochs, batch_size = int(epochs), min(int(batch_size), n_rows(x))
    chunk_epochs = min(int(chunk_epochs), epochs)
    loss_fn = get_loss(loss)
    check_call(tm, loss_fn, optimizer, x, y)
    programs = lambda n: _programs(  # noqa: E731
        tm, optimizer, loss_fn, batch_size, metrics, n, partial, trainable
    )
    init, chunk = programs(chunk_epochs)
    params, other = given_variables(tm, params, n_runs)
    ts, k = init(keys, params, opt_state, other, x)
    record = jax.eval_shape(chunk, ts, k, x, y)[1]
    history = jax.tree.map(lambda a: np.zeros((n_runs, epochs, *a.shape[2:]), a.dtype), record)
    done, ckpt = 0, None
    if checkpoint is not None:
        fingerprint = run_fields(
            "train_epochs",
            tm,
            ts,
            optimizer=optimizer,
            loss=loss,
            data=(x, y),
            keys=keys,
            params=given_params,
            opt_state=given_opt_state,
            batch_size=batch_size,
            epochs=epochs,
            chunk_epochs=chunk_epochs,
            partial=partial,
            trainable=trainable,
            metrics=metrics,
        )
        ckpt = Checkpoints(checkpoint, fingerprint)
        target = {"state": (ts, k), "history": history, "done": np.int64(0)}
        saved = ckpt.restore(target)
        if saved is not None:
            (ts, k), done = saved["state"], int(saved["done"])
            ts = TrainState(*ts)
            history = jax.tree.map(np.array, saved["history"])
    ts, k = _place_seeds((ts, k))
    bar = Progress("train_epochs", epochs, progress)
    bar.update(done)
    try:
        while done < epochs:
            length = min(chunk_epochs, epochs - done)
            run = chunk  # the last chunk may be shorter: one more compile
            if length != chunk_epochs:
                run = programs(length)[1]
            (ts, k), rec = run(ts, k, x, y)
            for h, r in zip(jax.tree.leaves(history), jax.tree.leaves(rec), strict=True):
                h[:, done : done + length] = np.asarray(r)
            done += length
            bar.update(length, loss=f"{float(np.mean(history['loss'][:, done - 1])):.4g}")
            if ckpt is not None:
                ckpt.save({"state": (ts, k), "history": history, "done": np.int64(done)})
    finally:  # pending writes are finished even on an exception (Ctrl-C)
        if ckpt is not None:
            ckpt.close()
    bar.close()
    p, s, o = ts.params, ts.state, ts.opt_state
    if single:
        p, s, o = jax.tree.map(lambda a: a[0], (p, s, o))
        history = jax.tree.map(lambda a: a[0], history)
    v = tm.variables(p, s)  # not vmapped: an equinox module holds functions (activations)
    history = jax.tree.map(jnp.asarray, history)
    return EpochsResult(v, p, s, o, history, time.perf_counter() - start)
