"""In-training partial reinitialization (paper 000, sec. 4.1 steps 1-14), many seeds at once."""

from __future__ import annotations

import functools
import itertools
import time
from typing import Any, NamedTuple, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune._losses import LossFn, get_loss
from jaxprune._types import Model, Outgoing, Params, PyTree, UnitMask
from jaxprune.analysis import ACTIVE_THRESHOLD, REDUNDANCY_THRESHOLD, redundant_units, unit_ablation
from jaxprune.graph import trace
from jaxprune.rewrites import (
    RewriteResult,
    prune_units,
    reinit_units,
    reset_optimizer_state,
)
from jaxprune.training._checks import check_finite, device_data
from jaxprune.training._core import TrainState, jit, make_core
from jaxprune.training._fit import fit
from jaxprune.training._freeze_state import set_frozen_units
from jaxprune.training._model import require_linen, training_model
from jaxprune.transforms import freeze_units

__all__ = ["REVERT_THRESHOLD", "ReinitResult", "pruned_model", "train_with_reinit"]

REVERT_THRESHOLD = 1.25
"""Paper 000's step 9: revert when the loss after sub-training exceeds 1.25 x baseline."""


class ReinitResult(NamedTuple):
    """Result of :func:`train_with_reinit`; a leading seed axis when ``keys`` is a batch.

    The fields shared with :class:`FitResult` and :class:`RoundsResult` (``variables``,
    ``params``, ``state``, ``history``, ``loss``, ``seconds``) mean the same things.
    """

    variables: PyTree  # {"params": params}: the model's variables
    params: Params  # final params, full width; pruned units have all-zero weights
    state: PyTree  # every other variable collection: {} (the model has none)
    # per round R: "baseline" loss of each round (step 3), "sub_loss" after the partially
    # frozen sub-training (step 9), "reverted" True where the round was reverted to its
    # snapshot, "reinitialized" the number of units reinitialized
    history: dict[str, jax.Array]
    loss: jax.Array  # [seeds] full-batch training loss after the final training (step 14)
    keep: UnitMask  # {layer: bool[seeds, width]}: units kept by the final prune (step 13)
    epochs: jax.Array  # [seeds] epochs trained in all phases together
    seconds: float  # wall time of the whole call (all seeds), compile included


class _Programs(NamedTuple):
    tx: optax.GradientTransformation  # the optimizer chained with freeze_units
    init: Any  # keys -> (params, opt_state, keys)
    start_round: Any  # steps 3-7: (params, opt_state, keys, x, y) -> (..., baseline, n_reinit)
    end_round: Any  # steps 9-10: (params, opt_state, snap_p, snap_s, baseline, x, y) -> ...
    prune: Any  # step 13: (params, opt_state, keys, x, y) -> (params, opt_state, keep)
    loss: Any  # (params, x, y) -> full-batch loss


@functools.lru_cache(maxsize=16)
def _programs(model, optimizer, loss_fn, x_shape, x_dtype, circular, outgoing) -> _Programs:
    # Thresholds are data arguments: changing them does not recompile. The training phases
    # are fit calls (their programs are cached by fit).
    x0 = jnp.zeros((1, *x_shape[1:]), x_dtype)
    graph = trace(model, model.init(jax.random.key(0), x0), x0)  # units and their entries
    widths = {name: u.width for name, u in graph.units.items()}
    none = {name: jnp.zeros(w, bool) for name, w in widths.items()}
    tx = optax.chain(optimizer, freeze_units(graph, none))
    evaluation = make_core(training_model(model), loss_fn, tx).eval_step
    full_loss = lambda p, x, y: evaluation(TrainState(p, {}, (), 0), (x, y))["loss"]

    def noncontributing(p, x, y, thresholds):  # step 5: low-loss (a) or redundant (b) units
        ablation_threshold, redundancy_threshold = thresholds
        g = trace(model, {"params": p}, x)  # traced once for both analyses
        ratios = unit_ablation(g, {"params": p}, (x, y), loss_fn)
        red = redundant_units(
            g, {"params": p}, threshold=redundancy_threshold, scores=ratios, circular=circular
        )
        return {k: ~(ratios[k] >= ablation_threshold) | red[k] for k in widths}, ratios

    def init(key):  # step 1
        k_init, key = jax.random.split(key)
        p = model.init(k_init, jnp.zeros((1, *x_shape[1:]), x_dtype))["params"]
        return p, tx.init(p), key

    def start_round(p, s, key, x, y, thresholds):  # steps 3, 5, 6, 7 (step 4: the input)
        baseline = full_loss(p, x, y)
        nc, _ = noncontributing(p, x, y, thresholds)
        s = set_frozen_units(s, {k: ~m for k, m in nc.items()})
        key, k_re = jax.random.split(key)
        p, s = reinit_units(graph, p, nc, k_re, optimizer=tx, opt_state=s, outgoing=outgoing)
        return p, s, key, baseline, sum(jnp.sum(m) for m in nc.values())

    def end_round(p, s, snap_p, snap_s, baseline, x, y, revert_threshold):  # steps 9, 10
        sub = full_loss(p, x, y)
        revert = ~(sub <= revert_threshold * baseline)  # a NaN loss reverts too
        p, s = jax.tree.map(lambda old, new: jnp.where(revert, old, new), (snap_p, snap_s), (p, s))
        return p, set_frozen_units(s, none), sub, revert

    def prune(p, s, key, x, y, thresholds):  # step 13 as a mask: zero, freeze pruned units
        del key
        nc, ratios = noncontributing(p, x, y, thresholds)
        keep = {}
        for k, m in nc.items():  # a layer keeps at least its most contributing unit
            best = jnp.arange(m.shape[0]) == jnp.argmax(ratios[k])
            keep[k] = ~m | (jnp.all(m) & best)
        pruned = {k: ~m for k, m in keep.items()}
        dead = graph.unit_param_mask(p, pruned)  # incoming and outgoing entries
        p = jax.tree.map(lambda a, m: jnp.where(m, jnp.zeros_like(a), a), p, dead)
        s = reset_optimizer_state(tx, s, p, dead)
        return p, set_frozen_units(s, pruned), keep

    data = (None, None)
    return _Programs(
        tx=tx,
        init=jit(jax.vmap(init)),
        start_round=jit(jax.vmap(start_round, in_axes=(0, 0, 0, *data, None))),
        end_round=jit(jax.vmap(end_round, in_axes=(0, 0, 0, 0, 0, *data, None))),
        prune=jit(jax.vmap(prune, in_axes=(0, 0, 0, *data, None))),
        loss=jit(jax.vmap(full_loss, in_axes=(0, *data))),
    )


def _positive(name: str, value) -> float:
    value = float(value)
    if not (value > 0 and np.isfinite(value)):
        raise ValueError(f"{name}: expected a value in (0, inf), got {value}")
    return value


def train_with_reinit(
    model: Model,
    data: tuple[Any, Any],
    *,
    keys: jax.Array,
    loss: str | LossFn,
    optimizer: optax.GradientTransformation,
    reinits: int = 1,
    batch_size: int = 128,
    patience: int = 20,
    sub_patience: int = 10,
    ablation_threshold: float = ACTIVE_THRESHOLD,
    redundancy_threshold: float = REDUNDANCY_THRESHOLD,
    revert_threshold: float = REVERT_THRESHOLD,
    max_epochs: int = 100_000,
    min_delta: float = 0.0,
    circular: bool = False,
    outgoing: Outgoing = "redraw",
) -> ReinitResult:
    """Trains with in-training partial reinitialization, one run per key, all in one program.

    Per run (paper 000, sec. 4.1): (1) init; (2) train to early stop (``patience``); then
    ``reinits`` rounds of: (3) baseline = full-batch training loss; (4) snapshot params and
    optimizer state; (5) noncontributing units = ablation loss ratio ``< ablation_threshold``
    (:func:`~jaxprune.analysis.unit_ablation`) or trivially redundant
    (:func:`~jaxprune.analysis.redundant_units` at ``redundancy_threshold``, keeping the group
    member with the highest ablation ratio); (6) freeze the contributing units
    (:func:`~jaxprune.transforms.freeze_units`, on the final updates); (7) reinitialize the
    others (:func:`~jaxprune.rewrites.reinit_units`, optimizer state reset); (8) sub-train
    (``sub_patience``); (9) revert to the snapshot if the loss exceeds ``revert_threshold x``
    baseline; (10) unfreeze; (11) train (``patience``). Then (13) prune the units found
    noncontributing by the step-5 criteria, by zeroing their weights and freezing them (a masked
    network of the original width, so seeds can stay batched; :func:`pruned_model` returns the
    physically narrower network of one seed); a layer keeps at least its most contributing unit
    so the narrow network exists; (14) train (``patience``).

    Every run is ``vmap``-ed: each seed takes its own early stopping, its own units to freeze
    and reinitialize and its own revert decision (``jnp.where`` on the seed axis). Only the R
    rounds are a host loop. Every training phase is a :func:`~jaxprune.training.fit` of all
    seeds (minibatches of ``batch_size``, the last one padded with rows of weight 0), so seeds
    that stop early leave the batch and do not wait for the slowest; its programs are cached,
    so compile time does not grow with R. The phase keys are ``fold_in(key, phase index)``.

    Choices where the paper is silent: the optimizer state carries over between phases (as a
    Keras optimizer does across ``fit`` calls), except that reinitialized and pruned entries are
    reset; each phase restores its best-epoch params (as :func:`~jaxprune.training.fit`); the
    losses compared in steps 3 and 9 are full-batch losses of those params; reinitialized units
    are redrawn from the model's own initializer (``model.init`` with a new key), outgoing weights
    included (``outgoing``); the units and their entries come from :func:`jaxprune.trace`.

    Args:
      model: :class:`~jaxprune.models.MLP` or :class:`~jaxprune.models.ConvNet`.
      keys: a 1-D batch of keys (``jax.random.split``) or one key.
      data: ``(x, y)``, non-empty, same length.
      optimizer: any optax transformation; :func:`freeze_units` is chained after it.
      loss: loss name or per-example callable; required.
      reinits: R, the number of reinitialization rounds (``>= 0``).
      batch_size: minibatch size (paper: 128).
      patience: patience of steps 2, 11, 14 (paper: 20).
      sub_patience: patience of the sub-training, step 8 (paper: 10).
      ablation_threshold: step 5a loss ratio (paper: 1.5), in ``(0, inf)``.
      redundancy_threshold: step 5b normalized dot product (paper: 0.99), in ``(0, inf)``.
      revert_threshold: step 9 loss ratio (paper: 1.25), in ``(0, inf)``.
      max_epochs: cap on the epochs of each phase.
      min_delta: early-stopping minimum improvement.
      circular: conv layers also count circularly permuted kernels as redundant (sec. 5).
      outgoing: ``"redraw"``, ``"zero"`` or ``"keep"``: reinitialized units' outgoing weights.

    Returns:
      A :class:`ReinitResult` (leading seed axis; no seed axis for a single key).

    Raises:
      ValueError: for thresholds outside ``(0, inf)``, ``reinits < 0``, non-positive sizes or
        patiences, empty or inconsistent data, NaN/inf in the data, or bad keys.
      TypeError: a model that is not a flax.linen module (rounds redraw with ``model.init``).

    >>> import jax, optax, jaxprune as jp
    >>> x, y = jp.data.paint("square", size=12)
    >>> model = jp.models.MLP(hidden=(4,), linear_after=((4,),))
    >>> keys = jax.random.split(jax.random.key(0), 2)
    >>> r = jp.training.train_with_reinit(model, (x, y), keys=keys, loss="mse",
    ...     optimizer=optax.adam(1e-2), reinits=1, patience=3, sub_patience=2, max_epochs=10)
    >>> r.history["reverted"].shape, r.keep["relu_0"].shape, r.loss.shape
    ((2, 1), (2, 4), (2,))

    References:
      Paper 000, sec. 4.1 steps 1-14 (Fig. 5) and sec. 5 (kernels).
    """
    start = time.perf_counter()
    require_linen(model, "train_with_reinit")
    x, y = device_data(data)
    check_finite("data", (x, y))
    if int(reinits) != reinits or reinits < 0:
        raise ValueError(f"reinits: expected an integer >= 0, got {reinits}")
    for name, value in (
        ("batch_size", batch_size),
        ("patience", patience),
        ("sub_patience", sub_patience),
        ("max_epochs", max_epochs),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value}")
    thresholds = [
        _positive(n, v)
        for n, v in (
            ("ablation_threshold", ablation_threshold),
            ("redundancy_threshold", redundancy_threshold),
            ("revert_threshold", revert_threshold),
        )
    ]
    if outgoing not in get_args(Outgoing):
        raise ValueError(f"outgoing: expected one of {get_args(Outgoing)}, got {outgoing!r}")
    if not 0.0 <= float(min_delta) < float("inf"):
        raise ValueError(f"min_delta: expected a finite value >= 0, got {min_delta}")
    keys = jnp.asarray(keys)
    if not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) or keys.ndim > 1:
        raise ValueError(
            f"keys: expected jax.random.key(...) or a 1-D batch of keys, got "
            f"dtype {keys.dtype} shape {keys.shape}"
        )
    single = keys.ndim == 0
    loss_fn = get_loss(loss)
    progs = _programs(model, optimizer, loss_fn, tuple(x.shape), x.dtype, bool(circular), outgoing)
    unit_thresholds = (jnp.float32(thresholds[0]), jnp.float32(thresholds[1]))
    revert_at = jnp.float32(thresholds[2])
    keys = keys[None] if single else keys
    phases = itertools.count()

    def phase(p, s, keys, patience):  # one fit per phase: finished seeds leave the batch
        k = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, next(phases))
        r = fit(
            model,
            (x, y),
            keys=k,
            loss=loss_fn,
            optimizer=progs.tx,
            params=p,
            opt_state=s,
            batch_size=batch_size,
            partial="pad",
            patience=patience,
            max_epochs=max_epochs,
            min_delta=min_delta,
            progress=False,
        )
        return r.params, r.opt_state, r.epochs

    p, s, keys = progs.init(keys)
    p, s, epochs = phase(p, s, keys, patience)  # step 2
    rounds = []
    for _ in range(int(reinits)):  # step 12 (a host loop over rounds; seeds stay batched)
        snapshot = (p, s)  # step 4
        p, s, keys, baseline, n_re = progs.start_round(p, s, keys, x, y, unit_thresholds)
        p, s, e1 = phase(p, s, keys, sub_patience)  # step 8
        p, s, sub, revert = progs.end_round(p, s, *snapshot, baseline, x, y, revert_at)
        p, s, e2 = phase(p, s, keys, patience)  # step 11
        epochs = epochs + e1 + e2
        rounds.append((baseline, sub, revert, n_re))
    p, s, keep = progs.prune(p, s, keys, x, y, unit_thresholds)
    p, s, e3 = phase(p, s, keys, patience)  # step 14
    n_runs = keys.shape[0]
    stack = lambda i, dtype: (
        jnp.stack([r[i] for r in rounds], axis=1) if rounds else jnp.zeros((n_runs, 0), dtype)
    )
    history = {
        "baseline": stack(0, jnp.float32),
        "sub_loss": stack(1, jnp.float32),
        "reverted": stack(2, bool),
        "reinitialized": stack(3, jnp.int32),
    }
    result = ReinitResult(
        variables={"params": p},
        params=p,
        state={},
        history=history,
        loss=progs.loss(p, x, y),
        keep=keep,
        epochs=epochs + e3,
        seconds=0.0,
    )
    jax.block_until_ready(result)
    result = result._replace(seconds=time.perf_counter() - start)
    if single:
        result = result._replace(
            **{
                f: jax.tree.map(lambda a: a[0], getattr(result, f))
                for f in ReinitResult._fields
                if f not in ("seconds", "state")
            }
        )
    return result


def pruned_model(model: Model, result: ReinitResult, seed: int, x: jax.Array) -> RewriteResult:
    """The physically narrower model of run ``seed`` of a batched result.

    Removes the pruned units with :func:`jaxprune.prune_units` (any model kind; the
    returned model is of the same kind, its variables hold only the kept units).

    Args:
      model: the model given to :func:`train_with_reinit`.
      result: its result (params with a leading seed axis).
      seed: which run.
      x: example inputs (shapes for tracing).

    Returns:
      The :class:`~jaxprune.rewrites.RewriteResult` of :func:`jaxprune.prune_units`.

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> model = jp.models.MLP(hidden=(4,))
    >>> p = jax.vmap(lambda k: model.init(k, jnp.zeros((1, 2)))["params"])(
    ...     jax.random.split(jax.random.key(0), 2))  # stands in for train_with_reinit(...).params
    >>> keep = {"relu_0": jnp.array([[True, True, False, True], [False, True, False, False]])}
    >>> r = ReinitResult({"params": p}, p, {}, {}, None, keep, None, seconds=0.0)
    >>> narrow = pruned_model(model, r, 1, jnp.zeros((1, 2)))
    >>> narrow.variables["params"]["relu_0"]["kernel"].shape, narrow.report.changes
    ((2, 1), ('relu_0: 4 -> 1 units',))

    References:
      Paper 000, sec. 4.1 step 13.
    """
    pick = lambda a: np.asarray(a)[seed]
    params = jax.tree.map(pick, result.params)
    keep = {k: pick(m).astype(bool) for k, m in result.keep.items()}
    return prune_units(model, {"params": params}, keep, x)
