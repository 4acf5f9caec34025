"""Data-parallel training over a device mesh (``jax.make_mesh`` + ``NamedSharding`` under jit).

The step is the library's one train step (:func:`~jaxprune.training._core.make_core`) on a
:class:`~jaxprune.training.TrainState`, so every model kind trains data-parallel with its
mutable collections and RNGs. The batch is split along its leading axis over the mesh's
``"data"`` axis; the train state (params, BatchNorm statistics and every other collection,
optimizer state with its masks or scores, step) is replicated. The program is written for the
*global* batch and partitioned by XLA (sharding semantics), so:

* the loss and its gradient are means over the global batch (XLA inserts the all-reduce);
* BatchNorm's batch mean and variance are reductions over the global batch (XLA all-reduces
  them, as a cross-device ``lax.pmean`` would), so the ``batch_stats`` update is that of one
  device seeing the whole batch, identical on every device;
* dropout draws its mask for the global batch from the step's key (``fold_in(key, step)``);
  with JAX's partitionable threefry each device computes the bits of its own rows, so the
  shards get different masks and the mask is the one a single device would draw.

Hence one step on 8 devices equals one step on 1 device with the same global batch and key,
BatchNorm and dropout included (tested).

``jax.pmap`` has been a maintenance-mode shim over this sharding machinery since JAX 0.8, so
there is no separate pmap code path: "a pmapped train step" is this step.

Multi-host: call ``jax.distributed.initialize()`` at the start of every process (e.g.
``JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=<i> python train.py``, or
no arguments on Cloud TPU / SLURM, where they are detected); then ``data_mesh()`` spans all
global devices, :func:`process_slice` gives each process its rows and :func:`shard_batch` assembles
the global array from the process-local rows. The step itself is unchanged.

Hazard avoided by design: on fake multi-device CPU (jax 0.10) a Python loop that dispatches a
sharded jit repeatedly without waiting can deadlock in the all-reduce rendezvous. Use
:func:`make_parallel_epoch`, which runs a whole epoch inside one compiled ``lax.scan``; the
single-step function returned by :func:`make_parallel_train_step` blocks on its result when the
backend is a multi-device CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxprune._losses import LossFn, get_loss
from jaxprune._types import Model, PyTree, Variables
from jaxprune.training._core import TrainState, jit, make_core
from jaxprune.training._model import training_model

__all__ = [
    "data_mesh",
    "make_parallel_epoch",
    "make_parallel_train_step",
    "process_slice",
    "replicate",
    "shard_batch",
    "train_state",
]

DATA = "data"


def _core(model, loss, optimizer, train_kw, mutable, rngs):
    tm = training_model(model, train_kw=train_kw, mutable=mutable, rngs=rngs)
    return make_core(tm, get_loss(loss), optimizer)


def train_state(
    model: Model,
    optimizer: optax.GradientTransformation,
    variables: Variables = None,
    *,
    mutable: Sequence[str] | None = None,
) -> TrainState:
    """The :class:`TrainState` a data-parallel step starts from: ``variables`` split into
    ``params`` and every other collection, ``optimizer.init(params)`` and step 0.

    Args:
      model: any model :func:`~jaxprune.training.fit` takes.
      optimizer: the optax transformation the step will use.
      variables: the model's variables (linen: ``model.init(...)``, every collection;
        NNX/equinox: default the module's own; a function's params).
      mutable: linen collections the step updates (checked to be present).

    Raises:
      ValueError: linen without ``variables`` (draw them with ``model.init``), or a ``mutable``
        collection absent from them.

    >>> import jax, optax, jaxprune as jp
    >>> model = jp.models.MLP(hidden=(3,))
    >>> variables = model.init(jax.random.key(0), jax.numpy.ones((1, 2)))
    >>> ts = jp.training.train_state(model, optax.sgd(0.1), variables)
    >>> sorted(ts.params), ts.state, int(ts.step)
    (['out', 'relu_0'], {}, 0)
    """
    tm = training_model(model, variables, mutable=mutable)
    if tm.params is None:
        raise ValueError(
            "variables: a linen module needs its variables (every collection), e.g. "
            "model.init(key, x, train=False)"
        )
    return TrainState(tm.params, tm.state, optimizer.init(tm.params), jnp.zeros((), jnp.int32))


def data_mesh(devices: Sequence[jax.Device] | None = None, axis: str = DATA) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all global devices) with one named axis.

    >>> mesh = data_mesh()
    >>> mesh.axis_names
    ('data',)
    """
    auto = (AxisType.Auto,)  # XLA's partitioner inserts the gradient all-reduce
    if devices is None:
        return jax.make_mesh((jax.device_count(),), (axis,), axis_types=auto)
    devices = list(devices)
    if not devices:
        raise ValueError("devices: expected at least one device")
    return Mesh(np.array(devices), (axis,), axis_types=auto)


def _check_divisible(rows: int, mesh: Mesh, what: str):
    n = mesh.devices.size
    if rows % n:
        raise ValueError(
            f"{what}: {rows} rows do not divide evenly over the {n} devices of the mesh; use a "
            f"multiple of {n} (pad the data or drop the remainder explicitly)"
        )


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Places every leaf of ``tree`` on all devices of ``mesh`` (fully replicated).

    With several processes every process passes the same values (e.g. drawn from the same key);
    each places them on its own devices, and the leaves become global arrays.
    """
    sharding = NamedSharding(mesh, P())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(a):
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            data = put(jax.random.key_data(a))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def shard_batch(batch: PyTree, mesh: Mesh, axis: str = DATA, batch_axis: int = 0) -> PyTree:
    """Splits every array of ``batch`` along ``batch_axis`` over the mesh axis ``axis``.

    With several processes, pass each process's *local* rows (see :func:`process_slice`); the
    global array is assembled with ``jax.make_array_from_process_local_data``.

    Raises:
      ValueError: if the (global) number of rows does not divide over the mesh's devices.
    """
    spec = P(*([None] * batch_axis), axis)
    sharding = NamedSharding(mesh, spec)

    def put(a):
        a = np.asarray(a) if not isinstance(a, jax.Array) else a
        rows = a.shape[batch_axis] * jax.process_count()
        _check_divisible(rows, mesh, "batch")
        if jax.process_count() == 1:
            return jax.device_put(a, sharding)
        return jax.make_array_from_process_local_data(sharding, np.asarray(a))

    return jax.tree.map(put, batch)


def process_slice(n: int) -> slice:
    """Rows ``[start, stop)`` of an ``n``-row data set that this process loads.

    >>> process_slice(10)  # one process: everything
    slice(0, 10, None)
    """
    count, index = jax.process_count(), jax.process_index()
    if n % count:
        raise ValueError(f"n: {n} rows do not divide over {count} processes")
    per = n // count
    return slice(index * per, (index + 1) * per)


def _multi_device_cpu(mesh: Mesh) -> bool:
    return mesh.devices.size > 1 and mesh.devices.flat[0].platform == "cpu"


def make_parallel_train_step(
    model: Model,
    loss: str | LossFn,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    *,
    axis: str = DATA,
    train_kw: str | None = "train",
    mutable: Sequence[str] | None = None,
    rngs: Sequence[str] = ("dropout",),
) -> Callable[..., Any]:
    """``step(state, batch, *, key) -> (state, metrics)``, data-parallel.

    ``state`` is a :class:`TrainState` (see :func:`train_state`), replicated; ``batch = (x, y)``
    is sharded on its leading axis over ``axis``. The step is the library's one train step:
    gradient, BatchNorm statistics and loss over the global batch; dropout keys
    ``fold_in(key, state.step)``, one mask for the global batch whose rows differ per shard (see
    the module docstring). ``key`` is keyword-only; ``None`` gives the model no RNG.

    Args:
      model: any model :func:`~jaxprune.training.fit` takes.
      loss: loss name or per-example callable.
      optimizer: any optax transformation (freeze masks, scores... live in its state).
      mesh: a mesh from :func:`data_mesh`.
      axis: the mesh axis the batch is split over.
      train_kw, mutable, rngs: as for :func:`~jaxprune.training.fit`.

    Returns:
      A jitted step. On a multi-device CPU backend it blocks on its outputs before returning
      (see the module docstring); prefer :func:`make_parallel_epoch` for loops.

    >>> import jax, optax, jaxprune as jp
    >>> mesh = jp.training.data_mesh()
    >>> model = jp.models.MLP(hidden=(3,))
    >>> x, y = jp.data.paint("square", size=8)
    >>> tx = optax.adam(1e-2)
    >>> ts = jp.training.train_state(model, tx, model.init(jax.random.key(0), x))
    >>> step = jp.training.make_parallel_train_step(model, "mse", tx, mesh)
    >>> ts, m = step(ts, (x, y), key=jax.random.key(1))
    >>> int(ts.step), m["loss"].shape
    (1, ())
    """
    core = _core(model, loss, optimizer, train_kw, mutable, rngs)
    replicated = NamedSharding(mesh, P())
    jitted = jit(
        lambda ts, batch, key: core.train_step(ts, tuple(batch), key),
        in_shardings=(replicated, NamedSharding(mesh, P(axis)), replicated),
        out_shardings=(replicated, replicated),
    )
    block = _multi_device_cpu(mesh)

    def step(state: TrainState, batch, *, key=None):
        _check_divisible(jnp.shape(jax.tree.leaves(batch)[0])[0], mesh, "batch")
        out = jitted(TrainState(*state), batch, key)
        return jax.block_until_ready(out) if block else out

    return step


def make_parallel_epoch(
    model: Model,
    loss: str | LossFn,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    *,
    axis: str = DATA,
    train_kw: str | None = "train",
    mutable: Sequence[str] | None = None,
    rngs: Sequence[str] = ("dropout",),
) -> Callable[..., Any]:
    """``epoch(state, batches, *, key) -> (state, losses)`` in one compiled scan.

    ``batches = (xs, ys)`` with shapes ``(steps, global_batch, ...)``; each step's batch is
    sharded over ``axis`` (its second dimension), so no host round-trip or repeated dispatch
    happens inside the epoch. Step ``i`` is :func:`make_parallel_train_step`'s step with the
    same ``key`` (its dropout key is ``fold_in(key, state.step)``, so every step differs).
    ``losses`` has one entry per step.

    >>> import jax, optax, jaxprune as jp
    >>> mesh = jp.training.data_mesh()
    >>> model = jp.models.MLP(hidden=(3,))
    >>> x, y = jp.data.paint("square", size=16)
    >>> tx = optax.adam(1e-2)
    >>> ts = jp.training.train_state(model, tx, model.init(jax.random.key(0), x))
    >>> epoch = jp.training.make_parallel_epoch(model, "mse", tx, mesh)
    >>> batches = (x.reshape(4, 64, 2), y.reshape(4, 64, 1))
    >>> ts, losses = epoch(ts, batches, key=jax.random.key(1))
    >>> int(ts.step), losses.shape
    (4, (4,))
    """
    core = _core(model, loss, optimizer, train_kw, mutable, rngs)
    replicated = NamedSharding(mesh, P())

    def epoch(ts, batches, key):
        def body(t, batch):
            t, m = core.train_step(t, batch, key)
            return t, m["loss"]

        return jax.lax.scan(body, ts, tuple(batches))

    jitted = jit(
        epoch,
        in_shardings=(replicated, NamedSharding(mesh, P(None, axis)), replicated),
        out_shardings=(replicated, replicated),
    )

    def run(state: TrainState, batches, *, key=None):
        _check_divisible(jnp.shape(jax.tree.leaves(batches)[0])[1], mesh, "batches")
        out = jitted(TrainState(*state), batches, key)
        return jax.block_until_ready(out) if _multi_device_cpu(mesh) else out

    return run
