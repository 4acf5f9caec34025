"""The one train step and epoch under every loop (fit, train_epochs, rounds, parallel, steps).

:func:`make_core` turns any model (see :mod:`jaxprune.training._model`), a per-example loss and
an optax transformation into pure functions over a :class:`TrainState`:

* ``train_step(state, batch, key) -> (state, metrics)``: one optimizer step on
  ``batch = (x, y)`` or ``(x, y, weights)`` in training mode (``x`` one array, or a tuple of a
  model's several inputs sharing the leading example axis, called as ``model(*x)``); the
  model's other variables (BatchNorm statistics...) are updated, and the step's randomness is
  ``fold_in(key, state.step)``, so passing a run's key every step gives every step (and every
  seed, under ``vmap``) its own dropout mask; ``key=None`` gives the model no RNG at all;
* ``eval_step(state, batch) -> metrics``: the loss in evaluation mode (``train=False``);
* ``epoch(state, key, x, y) -> (state, mean_loss)``: one shuffled pass
  (:func:`~jaxprune.training.feistel_permutation` of ``key``; the steps get the key
  ``fold_in(key, 1)``) as a ``lax.scan`` of
  ``train_step``; ``partial`` says what happens to the last ``n % batch_size`` examples:
  ``"keep"`` (default, as Keras: one more step on the smaller batch, so nothing is dropped),
  ``"drop"``, or ``"pad"`` (one shape for every step: the last batch is filled with rows of
  weight 0, so its loss is the mean over its real rows).

Nothing else in the library writes a minibatch step, and every loop compiles its programs with
:func:`jit` (``jax.jit`` plus the XLA:CPU options that suit many tiny steps).
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune._data_checks import n_rows, rows
from jaxprune._losses import LossFn
from jaxprune.training._cpu_rewrite import cpu_rewrite
from jaxprune.training._model import TrainModel
from jaxprune.training._shuffle import feistel_permutation

__all__ = ["Core", "TrainState", "jit", "make_core"]

PARTIAL = ("keep", "drop", "pad")


# XLA:CPU options for the training programs (measured on model 2 of paper 000, 1 and 30 vmapped
# runs; benchmarks/bench_vs_torch.py). XLA:CPU hands small matrix products, and the reductions
# of their gradients, to YNNPACK library calls: for narrow layers, and for their batched form
# under ``vmap`` over runs, that took 1.5-2x the time of XLA's own kernels, so it is off. LLVM
# optimization level 1 instead of the default halves the compile time of these programs (a
# large part of a short experiment) and did not change their run time measurably.
CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "", "xla_backend_optimization_level": 1}

# ... and for the programs that run once per call of a loop (the runs' first states, dropping
# finished runs from a batch): they are compiled for compile time, not run time. LLVM level 0
# and XLA:CPU's older kernel emitters (``xla_cpu_use_fusion_emitters=False``) compile them in
# about half the time (Table 1's four fits on 2 host devices, from the compile log: the init
# programs 1.75 -> 0.76-0.78 s, the compactions 1.60 -> 1.17-1.35 s). Not for the training
# programs: the older emitters compile those 2x faster too and run model 2 of paper 000 as
# fast, but ran a 2-64-1 MLP 2x and LeNet-300-100 1.9x slower (reductions, wide elementwise).
# Only ``fit`` uses them: its init program was at level 0 already, and level 0 can round a
# drawn initial value 1 ulp apart from level 1, so other loops' inits stay as they were.
ONCE_OPTIONS = {
    **CPU_OPTIONS,
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
}


def jit(fn, *, once: bool = False, **kwargs):
    """``jax.jit(fn, **kwargs)``; on the CPU backend with :data:`CPU_OPTIONS` and
    :func:`~jaxprune.training.cpu_rewrite` (convolutions in loops 30x faster, narrow layers
    fused with their neighbours). ``once``: a program that runs once per call of a loop,
    compiled with :data:`ONCE_OPTIONS` instead (faster to compile, slower to run)."""
    if jax.default_backend() != "cpu":
        return jax.jit(fn, **kwargs)
    kwargs.setdefault("compiler_options", dict(ONCE_OPTIONS if once else CPU_OPTIONS))
    return jax.jit(cpu_rewrite(fn), **kwargs)


class TrainState(NamedTuple):
    """What a run carries between steps (a leading seed axis when batched)."""

    params: Any  # trainable leaves
    state: Any  # every other variable collection (BatchNorm statistics, ...); {} if none
    opt_state: Any
    step: jax.Array | int  # optimizer steps taken (int32)


class Core(NamedTuple):
    """Pure functions of one model, loss and optimizer; see the module docstring."""

    model: TrainModel
    init: Any  # init(key, x1, params=None, opt_state=None, state=None) -> TrainState
    train_step: Any
    eval_step: Any
    epoch: Any  # epoch(state, key, x, y) -> (state, mean loss over examples)
    loss: Any  # loss(params, state, batch, key, train) -> (mean loss, new state)


def _weight_dtype(x):
    """The dtype of ``"pad"``'s row weights: that of ``x`` (of its first floating-point input
    when ``x`` holds several; float32 when none is)."""
    if not isinstance(x, tuple | list | dict):
        return x.dtype
    floats = [a.dtype for a in jax.tree.leaves(x) if jnp.issubdtype(a.dtype, jnp.inexact)]
    return floats[0] if floats else jnp.float32


def _mean(per_example, weights):
    if weights is None:
        return jnp.mean(per_example)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1)


def make_core(
    model: TrainModel,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    batch_size: int | None = None,
    partial: str = "keep",
    regularizer=None,
    unroll: int = 1,
    trainable=None,
) -> Core:
    """Builds the :class:`Core` (unjitted; callers ``jit``/``vmap``/``scan`` it).

    Args:
      model: a :class:`~jaxprune.training._model.TrainModel`.
      loss_fn: per-example ``loss(pred, target)``.
      optimizer: any optax transformation (receives ``params``).
      batch_size: minibatch size of ``epoch`` (None: the full batch).
      partial: ``"keep"``, ``"drop"`` or ``"pad"`` the last partial batch of an epoch.
      regularizer: optional ``fn(params) -> scalar`` added to the training loss.
      unroll: ``lax.scan`` unroll of the epoch's steps.
      trainable: optional ``(path, leaf) -> bool`` over the params (evaluated while tracing):
        only the selected leaves are differentiated and updated, the others pass through
        unchanged; the optimizer sees the whole tree with zero gradients for them.
    """
    if partial not in PARTIAL:
        raise ValueError(f"partial: expected one of {PARTIAL}, got {partial!r}")

    def loss(params, state, batch, key, train):
        x, y, *w = batch
        out, new_state = model.apply(params, state, x, train=train, key=key)
        value = _mean(loss_fn(out, y), w[0] if w else None)
        if train and regularizer is not None:
            value = value + regularizer(params)
        return value, new_state

    def init(key, x1, params=None, opt_state=None, state=None):
        drawn = None
        if params is None:
            if model.init is None:
                params, drawn = model.params, model.state
            else:
                params, drawn = model.init(key, x1)
        if state is None:
            if drawn is None:
                drawn = model.state if model.init is None else model.init(key, x1)[1]
            state = drawn
        opt_state = optimizer.init(params) if opt_state is None else opt_state
        return TrainState(params, state, opt_state, jnp.zeros((), jnp.int32))

    def train_step(ts: TrainState, batch, key):
        k = None if key is None else jax.random.fold_in(key, ts.step)  # None: no RNG at all
        if trainable is None:
            (value, new_state), grads = jax.value_and_grad(loss, has_aux=True)(
                ts.params, ts.state, batch, k, True
            )
            updates, opt_state = optimizer.update(grads, ts.opt_state, ts.params)
            params = optax.apply_updates(ts.params, updates)
        else:
            flat, treedef = jax.tree_util.tree_flatten_with_path(ts.params)
            keep = [bool(trainable(path, leaf)) for path, leaf in flat]
            if not any(keep):
                raise ValueError(
                    "trainable: expected a predicate selecting at least one parameter, "
                    f"got none of {len(keep)} selected"
                )
            leaves = [leaf for _, leaf in flat]
            train = [a for a, t in zip(leaves, keep, strict=True) if t]

            def full(t, fill):
                it = iter(t)
                return jax.tree.unflatten(
                    treedef, [next(it) if c else f for c, f in zip(keep, fill, strict=True)]
                )

            (value, new_state), g = jax.value_and_grad(
                lambda t: loss(full(t, leaves), ts.state, batch, k, True), has_aux=True
            )(train)
            grads = full(g, [jnp.zeros_like(a) for a in leaves])
            updates, opt_state = optimizer.update(grads, ts.opt_state, ts.params)
            flat = treedef.flatten_up_to(updates)  # type: ignore[attr-defined]
            ups = [u for u, c in zip(flat, keep, strict=True) if c]
            params = full(optax.apply_updates(train, ups), leaves)
        return TrainState(params, new_state, opt_state, ts.step + 1), {"loss": value}

    def eval_step(ts: TrainState, batch):
        return {"loss": loss(ts.params, ts.state, batch, None, False)[0]}

    def epoch(ts: TrainState, key, x, y):
        n = n_rows(x)
        bs = n if batch_size is None else min(int(batch_size), n)
        n_full, rem = divmod(n, bs)
        perm = feistel_permutation(n, key=key)
        k_step = jax.random.fold_in(key, 1)
        # each step gathers its own rows: no shuffled copy of the data per epoch (under vmap
        # over runs that copy was also transposed into scan order, 14% of an epoch of model 2)

        def body(t, batch):
            t, m = train_step(t, batch, k_step)
            return t, m["loss"] * (batch[2].sum() if len(batch) == 3 else n_rows(batch[0]))

        if partial == "pad" and rem:
            n_b = n_full + 1
            idx = jnp.concatenate([perm, jnp.zeros(n_b * bs - n, perm.dtype)])
            dtype = _weight_dtype(x)
            w = jnp.concatenate([jnp.ones(n, dtype), jnp.zeros(n_b * bs - n, dtype)])
            ts, sums = jax.lax.scan(
                lambda t, iw: body(t, (rows(x, iw[0]), y[iw[0]], iw[1])),
                ts,
                (idx.reshape(n_b, bs), w.reshape(n_b, bs)),
                unroll=unroll,
            )
            return ts, jnp.sum(sums) / n

        ts, sums = jax.lax.scan(
            lambda t, i: body(t, (rows(x, i), y[i])),
            ts,
            perm[: n_full * bs].reshape(n_full, bs),
            unroll=unroll,
        )
        total, count = jnp.sum(sums), n_full * bs
        if rem and partial == "keep":
            last_rows = perm[n_full * bs :]
            ts, last = body(ts, (rows(x, last_rows), y[last_rows]))
            total, count = total + last, n
        return ts, total / count

    return Core(model, init, train_step, eval_step, epoch, loss)


class ProgramCache:
    """A small cache of compiled programs that accepts unhashable models (equinox, NNX).

    Hashable keys are looked up by value; a key holding an unhashable object falls back to that
    object's identity (the object is kept alive by the entry, so its id cannot be reused). Safe
    to use from several threads (loops called side by side): one lock guards lookups and builds.
    """

    def __init__(self, size: int = 32):
        self.entries: dict = {}
        self.size, self.hits = size, 0
        self.lock = threading.RLock()

    @staticmethod
    def _key(parts):
        out = []
        parts = [q for p in parts for q in (p.cache_key() if hasattr(p, "cache_key") else (p,))]
        for p in parts:
            try:
                hash(p)
                out.append(("v", p))
            except TypeError:
                out.append(("id", id(p)))
        return tuple(out)

    def get(self, parts, build):
        k = self._key(parts)
        with self.lock:
            if k in self.entries:
                self.hits += 1
                return self.entries[k][1]
            if len(self.entries) >= self.size:
                self.entries.pop(next(iter(self.entries)))
            value = build()
            self.entries[k] = (parts, value)
            return value

    def clear(self):
        with self.lock:
            self.entries.clear()
            self.hits = 0
