"""Data-parallel training over a device mesh (``jax.make_mesh`` + ``NamedSharding`` under jit).

The batch is split along its leading axis over the mesh's ``"data"`` axis; params and optimizer
state (masks, scores, frozen-unit state included, whatever the optax transformation keeps) are
replicated. The loss is the mean over the *global* batch, so XLA inserts the gradient all-reduce
and one step on 8 devices equals one step on 1 device with the same global batch (tested).

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

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxprune._losses import LossFn, get_loss
from jaxprune.training._core import TrainState, make_core
from jaxprune.training._model import training_model

__all__ = [
    "data_mesh",
    "make_parallel_epoch",
    "make_parallel_train_step",
    "process_slice",
    "replicate",
    "shard_batch",
]

DATA = "data"


def _step_fn(model, loss_fn, optimizer):
    """The library's one train step (see ``_core``) on ``(params, opt_state, batch)``."""
    core = make_core(training_model(model), loss_fn, optimizer)

    def step(params, opt_state, batch):
        ts, metrics = core.train_step(TrainState(params, {}, opt_state, 0), batch, _KEY)
        return ts.params, ts.opt_state, metrics

    return step


_KEY = jax.random.key(0)  # no dropout key in the data-parallel step (yet)


def data_mesh(devices=None, axis: str = DATA) -> Mesh:
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


def replicate(tree, mesh: Mesh):
    """Places every leaf of ``tree`` on all devices of ``mesh`` (fully replicated)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch, mesh: Mesh, axis: str = DATA, batch_axis: int = 0):
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
    model,
    loss: str | LossFn,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    axis: str = DATA,
):
    """``step(params, opt_state, batch) -> (params, opt_state, metrics)``, data-parallel.

    Params and optimizer state are replicated, ``batch = (x, y)`` is sharded on its leading
    axis; the gradient is the mean over the global batch (XLA inserts the all-reduce).

    Args:
      model: a Flax module.
      loss: loss name or per-example callable.
      optimizer: any optax transformation (freeze masks, scores... live in its state).
      mesh: a mesh from :func:`data_mesh`.
      axis: the mesh axis the batch is split over.

    Returns:
      A jitted step. On a multi-device CPU backend it blocks on its outputs before returning
      (see the module docstring); prefer :func:`make_parallel_epoch` for loops.

    >>> import jax, optax, jaxprune as jp
    >>> mesh = jp.training.data_mesh()
    >>> model = jp.models.MLP(hidden=(3,))
    >>> x, y = jp.data.paint("square", size=8)
    >>> params = model.init(jax.random.key(0), x)["params"]
    >>> tx = optax.adam(1e-2)
    >>> step = jp.training.make_parallel_train_step(model, "mse", tx, mesh)
    >>> params, opt_state, m = step(params, tx.init(params), (x, y))
    >>> m["loss"].shape
    ()
    """
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P(axis))
    jitted = jax.jit(
        _step_fn(model, get_loss(loss), optimizer),
        in_shardings=(replicated, replicated, batch_sharding),
        out_shardings=(replicated, replicated, replicated),
    )
    block = _multi_device_cpu(mesh)

    def step(params, opt_state, batch):
        _check_divisible(jnp.shape(jax.tree.leaves(batch)[0])[0], mesh, "batch")
        out = jitted(params, opt_state, batch)
        return jax.block_until_ready(out) if block else out

    return step


def make_parallel_epoch(
    model,
    loss: str | LossFn,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    axis: str = DATA,
):
    """``epoch(params, opt_state, batches) -> (params, opt_state, losses)`` in one compiled scan.

    ``batches = (xs, ys)`` with shapes ``(steps, global_batch, ...)``; each step's batch is
    sharded over ``axis`` (its second dimension), so no host round-trip or repeated dispatch
    happens inside the epoch. ``losses`` has one entry per step.

    >>> import jax, optax, jaxprune as jp
    >>> mesh = jp.training.data_mesh()
    >>> model = jp.models.MLP(hidden=(3,))
    >>> x, y = jp.data.paint("square", size=16)
    >>> params = model.init(jax.random.key(0), x)["params"]
    >>> tx = optax.adam(1e-2)
    >>> epoch = jp.training.make_parallel_epoch(model, "mse", tx, mesh)
    >>> batches = (x.reshape(4, 64, 2), y.reshape(4, 64, 1))
    >>> params, opt_state, losses = epoch(params, tx.init(params), batches)
    >>> losses.shape
    (4,)
    """
    step = _step_fn(model, get_loss(loss), optimizer)
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P(None, axis))

    def epoch(params, opt_state, batches):
        def body(carry, batch):
            p, s, m = step(*carry, batch)
            return (p, s), m["loss"]

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), batches)
        return params, opt_state, losses

    jitted = jax.jit(
        epoch,
        in_shardings=(replicated, replicated, batch_sharding),
        out_shardings=(replicated, replicated, replicated),
    )

    def run(params, opt_state, batches):
        _check_divisible(jnp.shape(jax.tree.leaves(batches)[0])[1], mesh, "batches")
        out = jitted(params, opt_state, batches)
        return jax.block_until_ready(out) if _multi_device_cpu(mesh) else out

    return run
