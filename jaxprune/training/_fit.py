"""Many independent training runs as one compiled program, each with its own early stopping."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from jaxprune._data_checks import n_rows as _n_examples
from jaxprune._data_checks import rows as _rows_of
from jaxprune._losses import LossFn, get_loss
from jaxprune._types import Model, Params, Variables
from jaxprune.training._checkpoint import Checkpoints
from jaxprune.training._checks import (
    check_call,
    check_initial_state,
    device_data,
    given_variables,
)
from jaxprune.training._core import ProgramCache, TrainState, jit, make_core
from jaxprune.training._early_stopping import (
    EarlyStoppingState,
    early_stopping_init,
    early_stopping_update,
)
from jaxprune.training._fingerprint import run_fields
from jaxprune.training._model import check_starts, training_model
from jaxprune.training._progress import Progress

__all__ = ["FitResult", "RunState", "fit"]


class RunState(NamedTuple):
    """Everything one run carries between epochs (a leading seed axis when batched)."""

    train: TrainState  # params, other variables (BatchNorm statistics...), opt_state, step
    key: jax.Array
    epoch: jax.Array  # epochs completed
    stopping: EarlyStoppingState


class FitResult(NamedTuple):
    """Result of :func:`fit`; every field has a leading seed axis when ``keys`` is a batch.

    The fields shared with :class:`RoundsResult` and :class:`ReinitResult` (``variables``,
    ``params``, ``state``, ``history``, ``loss``, ``seconds``) mean the same things.
    """

    variables: Any  # the model's variables in its own form (every collection), best or last
    params: Params  # the trainable part of ``variables``
    state: Any  # every other variable collection (BatchNorm statistics, ...), {} if none
    history: dict[str, jax.Array]  # "loss": [seeds, epochs] epoch training loss (NaN after stop)
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


def _next_width(n_active: int, n_rows: int, idle: int, work: int) -> int:
    """Rows of the next chunk: the active runs, once idle rows took half the work of this width.

    A chunk's time grows about linearly with its rows (finished runs are still computed and
    discarded), and each new row count costs a compilation (~1 s for a small MLP on CPU). So the
    batch is shrunk, ski-rental style, only once the row-epochs spent on finished rows (and
    padding) since the last shrink (``idle``) reach half of all row-epochs spent at this width
    (``work``): the compile is then small next to the time it saves. The rule reads epochs, not
    clocks, so a fit's widths, and so its float rounding, are the same on every run. The new
    width is :func:`_width` of the active runs.
    """
    if n_active == 0:
        return 0
    width = _width(n_active)
    if width >= n_rows or 2 * idle < work:
        return n_rows
    return width


def _width(n: int) -> int:
    """Rows for ``n`` runs: ``n`` on one device while fewer than the devices, else the next
    multiple of the device count (the seed axis is then sharded over all of them)."""
    n_dev = jax.device_count()
    return n if n < n_dev else -(-n // n_dev) * n_dev


_PROGRAMS = ProgramCache(64)


def _programs(tm, optimizer, loss_fn, batch_size, unroll, chunk, partial):
    """The jitted init, chunk and finish (cached, so repeated fits reuse compiled code).

    Patience, ``min_delta`` and ``max_epochs`` are arguments of the compiled chunk, not part of
    it: fits that differ only in them share one program.
    """
    parts = (tm, optimizer, loss_fn, batch_size, unroll, chunk, partial)
    return _PROGRAMS.get(parts, lambda: _build(*parts))


_T = TypeVar("_T")


class _Limits(NamedTuple):
    """Early-stopping settings, passed to the compiled chunk as values."""

    patience: ArrayLike  # int32
    min_delta: ArrayLike  # float32
    max_epochs: ArrayLike  # int32


def _build(tm, optimizer, loss_fn, batch_size, unroll, chunk, partial):
    core = make_core(tm, loss_fn, optimizer, batch_size=batch_size, unroll=unroll, partial=partial)

    def init_run(key, p0, s0, v0, x):
        k_init, k_run = jax.random.split(key)
        ts = core.init(k_init, _rows_of(x, slice(0, 1)), p0, s0, v0)
        return RunState(
            ts, k_run, jnp.asarray(0, jnp.int32), early_stopping_init((ts.params, ts.state))
        )

    def epoch(run: RunState, x, y, limits: _Limits):
        key, k_epoch = jax.random.split(run.key)
        ts, mean_loss = core.epoch(run.train, k_epoch, x, y)
        stopping = early_stopping_update(
            run.stopping,
            mean_loss,
            (ts.params, ts.state),
            run.epoch,
            patience=limits.patience,
            min_delta=limits.min_delta,
        )
        e = run.epoch + 1
        stopping = stopping._replace(done=stopping.done | (e >= limits.max_epochs))
        return RunState(ts, key, e, stopping), mean_loss

    def run_chunk(run: RunState, x, y, limits: _Limits):
        def body(r, _):
            new, value = epoch(r, x, y, limits)
            kept = jax.tree.map(lambda a, b: jnp.where(r.stopping.done, a, b), r, new)
            return kept, jnp.where(r.stopping.done, jnp.nan, value)

        return jax.lax.scan(body, run, None, length=chunk)

    def init_all(keys, p0, s0, v0, x, rows: int):
        """The runs' first states, padded with copies of the first run to ``rows`` rows, and
        zeros of the same shape (for finished runs' final state); sharded over the seed axis
        when the rows divide over the devices."""
        state = jax.vmap(init_run, in_axes=(0, 0, 0, 0, None))(keys, p0, s0, v0, x)
        pad = rows - keys.shape[0]
        state = jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[:1], pad, 0)]), state)
        pair = (state, jax.tree.map(jnp.zeros_like, state))
        return _constrain_seeds(pair, _shards_seeds(rows))

    def finish(final: RunState, patience, restore_best: bool, single: bool, n_runs: int):
        """The result's arrays from the finished runs, in one program (no eager op per leaf)."""
        final = jax.tree.map(lambda a: a[:n_runs], final)  # without the padding rows
        es = final.stopping
        params, other = es.best_params if restore_best else (final.train.params, final.train.state)
        out = {
            "params": params,
            "state": other,
            "loss": es.best_loss,
            "epochs": final.epoch,
            "best_epoch": es.best_epoch,
            "stopped_early": es.wait >= patience,
            "opt_state": final.train.opt_state,
        }
        return jax.tree.map(lambda a: a[0], out) if single else out

    return (
        jit(init_all, static_argnums=5, once=True),
        jit(jax.vmap(run_chunk, in_axes=(0, None, None, None))),
        jax.jit(finish, static_argnums=(2, 3, 4)),
    )


def _history_tree(history: list[list[float]]) -> dict[str, np.ndarray]:
    """Per-seed epoch losses as arrays a checkpoint holds: NaN-padded curves and lengths."""
    lengths = np.array([len(h) for h in history], np.int64)
    curves = np.full((len(history), int(lengths.max(initial=0))), np.nan, np.float32)
    for i, h in enumerate(history):
        curves[i, : len(h)] = h
    return {"loss": curves, "epochs": lengths}


def _shards_seeds(rows: int) -> bool:
    """Whether a batch of ``rows`` runs is sharded over the devices (several, rows divide)."""
    n_dev = jax.device_count()
    return n_dev > 1 and rows > 0 and rows % n_dev == 0


def _seed_sharding() -> NamedSharding:
    mesh = jax.make_mesh((jax.device_count(),), ("seeds",), axis_types=(AxisType.Auto,))
    return NamedSharding(mesh, P("seeds"))


def _place_seeds(state: _T) -> _T:
    """Shards the seed axis over all devices when there are several and the rows divide evenly.

    Runs are independent, so the vmapped program partitions without any collective; otherwise
    the state stays where it is (one device). The programs that make states (``init``,
    :func:`_compact`) place their outputs themselves; this is for states read back from a
    checkpoint or passed in.
    """
    if not _shards_seeds(jax.tree.leaves(state)[0].shape[0]):
        return state
    return jax.device_put(state, _seed_sharding())


def _constrain_seeds(tree, shard: bool):
    """``tree`` sharded over the seed axis inside a program (``shard``), else as it is."""
    return jax.lax.with_sharding_constraint(tree, _seed_sharding()) if shard else tree


def _compact(final, state, dest, take, shard_final: bool, shard_state: bool):
    """Writes row ``r`` of ``state`` into ``final[dest[r]]`` (none where ``dest[r]`` is out
    of range) and keeps rows ``take`` of ``state``. Shapes depend only on the row counts, so
    one program serves every compaction between the same widths."""
    return _compact_program()(final, state, dest, take, shard_final, shard_state)


@functools.cache
def _compact_program():
    # built on first use: ``jit`` asks for the backend, which must not start at import (a
    # multi-process user calls ``jax.distributed.initialize`` after importing jaxprune)
    def compact(final, state, dest, take, shard_final, shard_state):
        final = jax.tree.map(lambda f, a: f.at[dest].set(a, mode="drop"), final, state)
        kept = jax.tree.map(lambda a: a[take], state)
        return _constrain_seeds(final, shard_final), _constrain_seeds(kept, shard_state)

    return jit(compact, static_argnums=(4, 5), once=True)


def fit(
    model: Model,
    data: tuple[Any, Any],
    *,
    keys: jax.Array,
    loss: str | LossFn,
    optimizer: optax.GradientTransformation,
    variables: Variables = None,
    batch_size: int = 128,
    partial: str = "keep",
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
    train_kw: str | None = "train",
    mutable: tuple[str, ...] | None = None,
    rngs: tuple[str, ...] = ("dropout",),
    init_fn: Callable[[jax.Array], Any] | None = None,
    same_init: bool = False,
) -> FitResult:
    """Trains one run per key, all in one compiled program, each with Keras-style early stopping.

    Each run draws its initial params (``model.init``) and its per-epoch shuffles from its own key
    (shuffled with :func:`~jaxprune.training.feistel_permutation`, which needs no sort), trains on
    minibatches of ``batch_size`` (by default the last partial batch is kept, as in Keras: its loss
    is the mean over its real rows; see ``partial``), and stops when its mean epoch loss has not
    improved for ``patience`` epochs; the best params are restored. Runs are ``vmap``-ed; the epoch
    loop is a ``lax.scan`` of ``chunk_epochs`` epochs with no host round-trip per step. Between
    chunks, finished runs are dropped from the batch (once they take half the work since the last
    shrink, see ``_next_width``), so the fastest runs do not keep paying for the slowest.

    Run ``k`` of a batch equals a single-key run with ``keys[k]`` (tested). With several devices
    and at least as many runs, the seed axis is sharded over all of them (seed sharding); the
    batch is padded to a multiple of the device count with copies of the first run, whose
    results are dropped.

    Any model trains (see :mod:`jaxprune.training._model`): a linen module (each run draws
    its variables with ``model.init``; BatchNorm ``batch_stats`` are updated in training and used
    in evaluation; dropout gets a fresh key per step and per run; ``train=`` is passed when
    ``__call__`` takes it), an NNX or equinox module (each run draws its weights with
    ``init_fn``), an ``(init_fn, apply_fn)`` pair, ``f(params, x)`` with ``variables=params`` or
    ``init_fn``, or a haiku ``hk.transform``/``hk.transform_with_state`` (state such as
    BatchNorm's updated every step). Several keys with one fixed set of weights need
    ``same_init=True``. Every step is the library's one train step.

    Args:
      model: a linen, NNX or equinox module, an ``(init_fn, apply_fn)`` pair, ``f(params, x)``
        or a haiku transform.
      keys: ``jax.random.key(s)`` for one run, or a 1-D batch from ``jax.random.split``.
      data: ``(x, y)`` arrays with the same leading length; ``x`` may be a tuple of arrays
        sharing that length, a model's several inputs, called as ``model.apply(v, *x, ...)``.
      loss: loss name or per-example loss callable (see :func:`~jaxprune.training.get_loss`);
        required.
      optimizer: any optax transformation (its state is per run).
      variables: the model's variables (linen, haiku: used by every run instead of their init,
        see ``same_init``; NNX/equinox: default the module's own; a function's params: required
        without ``init_fn``).
      batch_size: minibatch size (paper 000: 128).
      partial: the last ``n % batch_size`` examples of an epoch: ``"keep"`` (default, one
        smaller step, as Keras), ``"drop"`` or ``"pad"`` (rows of weight 0: one step shape).
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
      checkpoint: directory of orbax-checkpoint steps to save the whole fit state to (params,
        every other collection, optimizer state, keys, early-stopping state, finished runs)
        every ``checkpoint_every`` chunks and at the end; the last two steps are kept. If it
        holds a step, the fit resumes from it and gives the same result as an uninterrupted
        fit, ``history`` included. It is tied by a fingerprint to the model (structure,
        options, given variables, shapes), the optimizer (its hyperparameters), the loss, the
        data, the keys and every size: another one raises ``CheckpointError`` naming the
        fields that differ. See :class:`~jaxprune.training._checkpoint.Checkpoints`.
      checkpoint_every: chunks between checkpoints.
      progress: report progress: a tqdm bar on a terminal, a plain line every 30 s otherwise.
      train_kw: name of the model's train/eval keyword (passed when its call accepts it).
      mutable: linen collections updated while training (default: every non-``params`` one).
      rngs: linen RNG streams given a fresh key every step (default ``("dropout",)``).
      init_fn: NNX/equinox: ``init_fn(key) -> module`` (e.g.
        ``lambda k: Net(rngs=nnx.Rngs(k))``, ``lambda k: Net(key=k)``); ``f(params, x)``:
        ``init_fn(key) -> params``. Each run draws its initial weights with it from its key
        (``jax.random.split(key)[0]``, the key a linen run gives ``model.init``), under ``vmap``;
        ``model`` (or ``variables``) then only fixes their structure. Linen modules, pairs and
        haiku transforms draw their own and take none.
      same_init: with several keys and one fixed set of weights (an NNX/equinox module or a
        function's params without ``init_fn``, or ``variables=``), every run starts from those
        weights and only the data order and dropout differ. Without it that is an error: a
        many-seed run whose seeds share their initialization is rarely what was meant.

    Returns:
      A :class:`FitResult`.

    Raises:
      ValueError: on inconsistent data, NaN/inf in ``data`` (or in the given ``params`` or
        ``opt_state``), given ``params`` whose entries or shapes differ from ``model.init``'s,
        a bad key batch, non-positive sizes or a negative or non-finite ``min_delta``; the
        message names the argument.
        Also a ``mutable`` collection absent from ``variables``; several ``keys`` with one
        fixed set of weights without ``same_init=True`` (or ``same_init`` where every run draws
        its own); an ``init_fn`` whose draws differ from the model in structure.
      TypeError: a model whose call does not fit the trainer's; the message names the call
        made (e.g. ``Net.apply(variables, x, train=bool, rngs=..., mutable=[...])``) and the fix
        where it is known (``train_kw=None``, ``jax.vmap`` for a model of one example).

    >>> import jax, optax, jaxprune as jp
    >>> x, y = jp.data.paint("square", size=16)
    >>> model = jp.models.MLP(hidden=(3,), linear_after=((9,),))
    >>> runs = jp.training.fit(model, (x, y), keys=jax.random.split(jax.random.key(0), 4),
    ...                        loss="mse", optimizer=optax.adam(1e-2), patience=5,
    ...                        max_epochs=50, progress=False)
    >>> runs.loss.shape, jax.tree.leaves(runs.params)[0].shape[0]
    ((4,), 4)

    References:
      Paper 000, sec. 3.2 (training protocol: batch 128, MSE, early stopping with patience 20).
    """
    start = time.perf_counter()
    x, y = device_data(data)
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
    n_runs, n = keys.shape[0], _n_examples(x)
    batch_size = min(int(batch_size), n)
    chunk_epochs = int(chunk_epochs or min(patience, max_epochs))
    tm = training_model(
        model, variables, train_kw=train_kw, mutable=mutable, rngs=rngs, init_fn=init_fn
    )
    check_starts(tm, _rows_of(x, slice(0, 1)), n_runs, params, bool(same_init))
    loss_fn = get_loss(loss)
    params, opt_state = check_initial_state(tm, params, opt_state, (x, y), n_runs, single)
    given_params, given_opt_state = params, opt_state  # for the checkpoint's fingerprint
    check_call(tm, loss_fn, optimizer, x, y)
    init_runs, run_chunk, finish = _programs(
        tm, optimizer, loss_fn, batch_size, int(unroll), chunk_epochs, partial
    )
    limits = _Limits(
        np.int32(min(int(patience), np.iinfo(np.int32).max)),
        np.float32(min_delta),
        np.int32(min(int(max_epochs), np.iinfo(np.int32).max)),
    )
    params, other = given_variables(tm, params, n_runs)
    n_rows = _width(n_runs)  # a multiple of the devices (seed sharding), padded with copies
    state, final = init_runs(keys, params, opt_state, other, x, n_rows)
    rows = np.where(np.arange(n_rows) < n_runs, np.arange(n_rows), -1)  # seed of each row
    usage = np.zeros(2, np.int64)  # idle and all row-epochs at this width (see _next_width)
    history: list[list] = [
        [] for _ in range(n_runs)
    ]  # per seed: epoch losses of this process's chunks
    ckpt = None
    if checkpoint is not None:
        fingerprint = run_fields(
            "fit",
            tm,
            state.train,
            optimizer=optimizer,
            loss=loss,
            data=(x, y),
            keys=keys,
            params=given_params,
            opt_state=given_opt_state,
            batch_size=batch_size,
            partial=partial,
            patience=int(patience),
            max_epochs=int(max_epochs),
            min_delta=float(min_delta),
            chunk_epochs=chunk_epochs,
            unroll=int(unroll),
        )
        ckpt = Checkpoints(checkpoint, fingerprint)

        def tree():
            return {
                "state": state,
                "final": final,
                "rows": rows,
                "usage": usage,
                "history": _history_tree(history),
            }

        saved = ckpt.restore(tree())
        if saved is not None:
            state, final, rows = saved["state"], saved["final"], np.asarray(saved["rows"])
            usage = np.array(saved["usage"], np.int64)
            curves, lengths = (np.asarray(saved["history"][k]) for k in ("loss", "epochs"))
            history = [list(c[:n]) for c, n in zip(curves, lengths, strict=True)]
    state = _place_seeds(state)
    bar = Progress("fit", None, progress)
    chunks = 0
    try:
        while rows.size:
            state, losses = run_chunk(state, x, y, limits)
            chunks += 1
            done = np.asarray(state.stopping.done)  # one small host read per chunk
            losses = np.asarray(losses)
            real = rows >= 0
            for r in np.flatnonzero(real):
                history[rows[r]].extend(v for v in losses[r] if not np.isnan(v))
            active = np.flatnonzero(real & ~done)
            bar.update(chunk_epochs, active=f"{active.size}/{n_runs} runs")
            usage += (np.isnan(losses[real]).sum() + (~real).sum() * chunk_epochs, losses.size)
            size = _next_width(active.size, rows.size, *usage)
            if size < rows.size or not active.size:
                usage[:] = 0
                dest = np.where(real & done, rows, n_runs)
                take = np.concatenate(
                    [active, np.full(size - active.size, active[0] if size else 0)]
                )
                final, state = _compact(
                    final,
                    state,
                    dest,
                    take,
                    _shards_seeds(final.epoch.shape[0]),  # as padded (when saved)
                    _shards_seeds(size),
                )
                rows = np.concatenate([rows[active], np.full(size - active.size, -1)])
            if ckpt is not None and (not rows.size or chunks % checkpoint_every == 0):
                ckpt.save(tree())
    finally:  # pending writes are finished even on an exception (Ctrl-C)
        if ckpt is not None:
            ckpt.close()
    bar.close()
    width = max(len(h) for h in history)
    curve = np.full((n_runs, width), np.nan, np.float32)
    for i, h in enumerate(history):
        curve[i, : len(h)] = h
    out = finish(final, limits.patience, bool(restore_best), single, n_runs)
    return FitResult(
        # the user's form of the variables, built outside the program: an equinox module holds
        # functions (an MLP's activation), which no jitted or vmapped function can return
        variables=tm.variables(out["params"], out["state"]),
        **out,
        history={"loss": jnp.asarray(curve[0] if single else curve)},
        seconds=time.perf_counter() - start,
    )
