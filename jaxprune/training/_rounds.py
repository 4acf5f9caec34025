"""Reinitialization rounds as a schedule: BL, WELSR, DSD, WELS, FC and LW (paper 002).

One compiled program trains many seeds at once (``vmap``) through all rounds (``lax.scan`` over
rounds, each a ``lax.scan`` of the library's one train step): no host round-trip per step or per
round. It carries the model's non-``params`` variable collections: BatchNorm statistics are
updated while a round trains; the LW normalization slots are only set between rounds.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxprune._data_checks import check_fraction
from jaxprune._losses import LossFn, get_loss
from jaxprune._types import Model, Params, PyTree
from jaxprune.analysis import above_block_mask, layer_mask, layer_norms, magnitude_mask, random_mask
from jaxprune.graph import trace
from jaxprune.graph.extend import check_blocks, default_blocks
from jaxprune.models import NORM_COLLECTION
from jaxprune.rewrites import (
    lw_slots,
    reinit_round,
    rescale_blocks,
    update_normalization,
)
from jaxprune.training._checks import device_data
from jaxprune.training._core import TrainState, jit, make_core
from jaxprune.training._early_stopping import early_stopping_init, early_stopping_update
from jaxprune.training._model import require_linen, training_model
from jaxprune.training._shuffle import feistel_permutation

__all__ = ["METHODS", "RoundsResult", "lw_schedule", "train_rounds"]

METHODS = ("bl", "welsr", "dsd", "wels", "fc", "lw")
"""Method names of paper 002: baseline, random subset, magnitudes, fixed subset, FC, layerwise."""


class RoundsResult(NamedTuple):
    """Result of :func:`train_rounds`; a leading seed axis when ``keys`` is a batch.

    The fields shared with :class:`FitResult` and :class:`ReinitResult` (``variables``,
    ``params``, ``state``, ``history``, ``loss``, ``seconds``) mean the same things.
    """

    variables: PyTree  # final {"params": ..., other collections} (best params if early stopping)
    params: Params  # the trainable part of ``variables``
    state: PyTree  # every other variable collection (the LW slots, ...), {} if none
    # per round: "loss" [seeds, rounds] training loss (eval mode, full set) after each round,
    # "val_loss" the validation loss (only with ``validation``), "steps" the steps trained
    history: dict[str, jax.Array]
    loss: jax.Array  # [seeds] training loss of the final ``variables`` (the last round's)
    seconds: float  # wall time, compile included
    model: Any = None  # the module ``variables`` belong to: the given one, or it with LW slots


def lw_schedule(num_blocks: int, n: int) -> tuple[int, ...]:
    """Algorithm 1's loop order: block ``k = 1..K``, each ``N`` times.

    >>> lw_schedule(3, 2)
    (1, 1, 2, 2, 3, 3)
    """
    if int(num_blocks) < 1 or int(n) < 1:
        raise ValueError(f"num_blocks, n: must be >= 1, got {num_blocks}, {n}")
    return tuple(k for k in range(1, int(num_blocks) + 1) for _ in range(int(n)))


def _accepts_train(model) -> bool:
    try:
        return "train" in inspect.signature(model.__call__).parameters
    except (TypeError, ValueError):
        return False


L2_FORMS = ("sum", "half_sum", "mean")


def l2_penalty(params: Params, *, form: str = "sum", biases: bool = False) -> jax.Array:
    """The App. A weight-decay penalty without its factor: ``sum(w**2)`` in one of three forms.

    Args:
      params: a parameter tree.
      form: ``"sum"``, ``sum(w**2)`` over all entries (Keras' ``regularizers.l2``, the default);
        ``"half_sum"``, ``sum(w**2) / 2`` (the textbook ``lambda/2 ||w||^2``, whose gradient is
        ``lambda * w``: SGD's coupled weight decay); ``"mean"``, the mean of ``w**2`` per
        tensor, summed over tensors.
      biases: also penalize leaves with ``ndim < 2`` (biases, norm scales); default kernels only
        (leaves with ``ndim >= 2``), as Keras' ``kernel_regularizer``.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: unknown ``form``.

    >>> import jax.numpy as jnp, jaxprune as jp
    >>> p = {"kernel": jnp.array([[1.0, 2.0]]), "bias": jnp.array([3.0])}
    >>> [float(jp.training.l2_penalty(p, form=f)) for f in jp.training.L2_FORMS]
    [5.0, 2.5, 2.5]
    >>> float(jp.training.l2_penalty(p, biases=True))
    14.0
    """
    if form not in L2_FORMS:
        raise ValueError(f"form: expected one of {L2_FORMS}, got {form!r}")
    leaves = [w for w in jax.tree.leaves(params) if biases or w.ndim >= 2]
    reduce = jnp.mean if form == "mean" else jnp.sum
    total = sum((reduce(jnp.square(w)) for w in leaves), jnp.zeros((), jnp.float32))
    return total / 2 if form == "half_sum" else total


@functools.lru_cache(maxsize=32)
def _program(model, optimizer, loss_fn: LossFn, method: str, config: tuple) -> Any:
    (
        rounds,
        steps,
        batch_size,
        n,
        fraction,
        fc_layers,
        blocks,
        schedule,
        rescale,
        normalize,
        reinit,
        lw_include_biases,
        sample_size,
        l2,
        l2_form,
        l2_biases,
        eval_every,
        patience,
        has_val,
        lr_patience,
        lr_factor,
    ) = config
    train_kw = _accepts_train(model)
    plateau = None
    if lr_patience:  # Keras' ReduceLROnPlateau on the validation loss, one value per evaluation
        plateau = optax.contrib.reduce_on_plateau(factor=lr_factor, patience=lr_patience)
        # the current rate's multiplier sits in the state, so every step reads it
        optimizer = optax.chain(optimizer, optax.inject_hyperparams(optax.scale)(step_size=1.0))
    n_batches = max(n // batch_size, 1)
    regularizer = (lambda p: l2 * l2_penalty(p, form=l2_form, biases=l2_biases)) if l2 else None
    # The library's one step; non-params collections (BatchNorm statistics) are updated in
    # training, the LW slots are only read there (update_normalization sets them).
    core = make_core(training_model(model), loss_fn, optimizer, regularizer=regularizer)

    def eval_loss(params, extra, x, y):
        return core.eval_step(TrainState(params, extra, (), 0), (x, y))["loss"]

    def step(carry, t, x, y, key):
        params, extra, opt_state = carry
        k_drop, k_shuffle = jax.random.split(key)
        if batch_size >= n:
            xb, yb = x, y
        else:  # step-indexed: epoch t // n_batches, the last partial batch dropped
            perm = feistel_permutation(jax.random.fold_in(k_shuffle, t // n_batches), n)
            idx = jax.lax.dynamic_slice(perm, ((t % n_batches) * batch_size,), (batch_size,))
            xb, yb = x[idx], y[idx]
        ts, _ = core.train_step(TrainState(params, extra, opt_state, t), (xb, yb), k_drop)
        return (ts.params, ts.state, ts.opt_state), None

    def train_phase(params, extra, opt_state, key, x, y, xv, yv, budget):
        body = functools.partial(step, x=x, y=y, key=key)
        if not has_val:
            carry, _ = jax.lax.scan(body, (params, extra, opt_state), jnp.arange(budget))
            return (*carry, jnp.asarray(budget, jnp.int32))
        n_evals = math.ceil(budget / eval_every)

        def chunk(carry, e):
            params, extra, opt_state, es, pl = carry
            ts = e * eval_every + jnp.arange(eval_every)
            (p, x_, s), _ = jax.lax.scan(body, (params, extra, opt_state), ts)
            value = eval_loss(p, x_, xv, yv)
            es_new = early_stopping_update(es, value, (p, x_), e, patience=patience)
            if plateau is not None:
                _, pl = plateau.update(jnp.zeros(()), pl, value=value)
                s = _with_rate_scale(s, pl.scale)
            keep = lambda old, new: jax.tree.map(lambda a, b: jnp.where(es.done, a, b), old, new)
            new = (keep(params, p), keep(extra, x_), keep(opt_state, s), keep(es, es_new), pl)
            return new, None

        pl = None
        if plateau is not None:  # each round starts at the optimizer's own rate
            pl = plateau.init(jnp.zeros(()))
            opt_state = _with_rate_scale(opt_state, pl.scale)
        carry = (params, extra, opt_state, early_stopping_init((params, extra)), pl)
        (params, extra, opt_state, es, _), _ = jax.lax.scan(chunk, carry, jnp.arange(n_evals))
        used = jnp.where(es.done, (es.best_epoch + 1 + patience), n_evals) * eval_every
        best_params, best_extra = es.best_params
        return best_params, best_extra, opt_state, jnp.minimum(used, budget).astype(jnp.int32)

    sched = jnp.asarray(schedule or (1,), jnp.int32)

    def run(key, draws, x, y, xv, yv):
        k_fixed, k_rounds = jax.random.split(key)
        blank = jax.tree.map(lambda a: jnp.zeros(a.shape[1:], a.dtype), draws)
        sample = x[:sample_size]

        def one_round(carry, xs):
            r, fresh = xs  # fresh: this round's eta; in round 0 the initialization itself
            params, extra, opt_state, init_norms = carry
            _, k_mask, k_train = jax.random.split(jax.random.fold_in(k_rounds, r), 3)
            first = r == 0
            pick = lambda new, old: jax.tree.map(lambda u, v: jnp.where(first, u, v), new, old)
            params = pick(fresh["params"], params)
            extra = pick({c: v for c, v in fresh.items() if c != "params"}, extra)
            opt_state = pick(optimizer.init(fresh["params"]), opt_state)
            init_norms = pick(
                layer_norms(fresh["params"], include_biases=lw_include_biases), init_norms
            )
            init_fn = lambda _: fresh["params"]
            if method in ("welsr", "wels", "dsd", "fc"):
                if method == "welsr":
                    mask = random_mask(params, k_mask, fraction)
                elif method == "wels":
                    mask = random_mask(params, k_fixed, fraction)
                elif method == "dsd":
                    mask = magnitude_mask(params, fraction)
                else:
                    mask = layer_mask(params, fc_layers)
                mask = jax.tree.map(lambda m: m & (r > 0), mask)  # round 1 trains from init
                params, opt_state = reinit_round(
                    params, mask, None, init_fn, optimizer=optimizer, opt_state=opt_state
                )
            elif method == "lw":
                k = sched[r]
                if rescale:
                    params = rescale_blocks(
                        params, init_norms, blocks, k, include_biases=lw_include_biases
                    )
                if normalize:
                    kw = {"train": False} if train_kw else {}
                    new = update_normalization(
                        model, {"params": params, **extra}, sample, k, model_kwargs=kw
                    )
                    extra = {c: v for c, v in new.items() if c != "params"}
                if reinit:
                    params, opt_state = reinit_round(
                        params,
                        above_block_mask(params, blocks, k),
                        None,
                        init_fn,
                        optimizer=optimizer,
                        opt_state=opt_state,
                    )
            budget = steps * rounds if method == "bl" else steps
            params, extra, opt_state, used = train_phase(
                params, extra, opt_state, k_train, x, y, xv, yv, budget
            )
            losses = (
                eval_loss(params, extra, x, y),
                eval_loss(params, extra, xv, yv) if has_val else jnp.zeros(()),
            )
            return (params, extra, opt_state, init_norms), (*losses, used)

        params = blank["params"]
        carry = (
            params,
            {c: v for c, v in blank.items() if c != "params"},
            optimizer.init(params),
            layer_norms(params, include_biases=lw_include_biases),
        )
        n_rounds = 1 if method == "bl" else rounds
        xs = (jnp.arange(n_rounds), jax.tree.map(lambda a: a[:n_rounds], draws))
        (params, extra, _, _), (tl, vl, used) = jax.lax.scan(one_round, carry, xs)
        return {"params": params, **extra}, tl, vl, used

    return jit(jax.vmap(run, in_axes=(0, 0, None, None, None, None)))


def _with_rate_scale(opt_state, scale):
    """``opt_state`` of ``chain(optimizer, inject_hyperparams(scale))`` with the scale set."""
    inner, injected = opt_state
    hyper = {**injected.hyperparams, "step_size": jnp.asarray(scale, jnp.float32)}
    return inner, injected._replace(hyperparams=hyper)


def _eta_key(key: jax.Array, r) -> jax.Array:
    """The key of run ``key``'s round-``r`` draw (round 0: the initialization)."""
    return jax.random.split(jax.random.fold_in(jax.random.split(key)[1], r), 3)[0]


@functools.lru_cache(maxsize=16)
def _draw_program(model, x_shape: tuple[int, ...], x_dtype) -> Any:
    """Jitted ``(keys[seeds], arange(rounds)) -> variables[seeds, rounds]``, shared by methods.

    Drawing all rounds' ``eta`` in a separate program keeps ``model.init`` (slow to compile on
    CPU: threefry and truncated normals) out of the per-method programs, so the six methods on
    one model compile it once.
    """
    x1 = jnp.zeros((1, *x_shape[1:]), x_dtype)

    def draw(keys, rounds):
        ks = jax.vmap(lambda k: jax.vmap(lambda r: _eta_key(k, r))(rounds))(keys)
        return jax.vmap(jax.vmap(lambda k: model.init(k, x1)))(ks)

    return jit(draw)


def _lw_blocks(model, x):
    """``model.lw_blocks()``, or the blocks derived from the traced graph."""
    if hasattr(model, "lw_blocks"):
        return model.lw_blocks()
    variables = model.init(jax.random.key(0), x[:1])
    return default_blocks(trace(model, variables, x[:1]))


def train_rounds(
    model: Model,
    data: tuple[jax.Array, jax.Array],
    *,
    keys: jax.Array,
    method: str,
    optimizer: optax.GradientTransformation,
    steps_per_round: int,
    rounds: int | None = None,
    loss: str | LossFn,
    batch_size: int | None = None,
    fraction: float = 0.2,
    fc_layers: tuple[str, ...] | None = None,
    blocks: tuple[tuple[str, ...], ...] | None = None,
    schedule: tuple[int, ...] | None = None,
    rescale: bool = True,
    normalize: bool = True,
    reinit: bool = True,
    lw_include_biases: bool = False,
    sample_size: int = 256,
    l2: float = 0.0,
    l2_form: str = "sum",
    l2_biases: bool = False,
    validation: tuple[jax.Array, jax.Array] | None = None,
    eval_every: int | None = None,
    patience: int = 20,
    lr_patience: int | None = None,
    lr_factor: float = 0.5,
) -> RoundsResult:
    """Trains one run per key with a reinitialization method, all seeds in one compiled program.

    Every method but BL runs ``rounds`` training phases of ``steps_per_round`` optimizer steps;
    before phase ``r``:

    * ``"welsr"``: :func:`~jaxprune.analysis.random_mask` with a fresh key (``fraction``);
    * ``"wels"``: the same with one key fixed before training;
    * ``"dsd"``: :func:`~jaxprune.analysis.magnitude_mask` (``fraction`` per tensor);
    * ``"fc"``: :func:`~jaxprune.analysis.layer_mask` of ``fc_layers`` (``model.fc_layers()``);

    Choices where paper 002 is silent: WELSR, WELS and DSD redraw ``fraction`` of *every* tensor
    (per tensor, as Han et al.'s DSD prunes per layer), biases and normalization parameters
    included (the paper's ``w`` is "all of the parameters"; it says only "the smallest
    parameters in terms of their absolute magnitudes" and "20% of the parameters"). FC's
    "last fully-connected layers" are ``model.fc_layers()``: the dense layer, its layer norm and
    the head for :class:`~jaxprune.models.SCNN`, the head only for
    :class:`~jaxprune.models.BlockMLP` (every layer of an MLP is fully connected; sec. 1 names
    Zhao et al.'s head-only variant); pass ``fc_layers`` for another choice.

    each followed by :func:`~jaxprune.rewrites.reinit_round` (optimizer state reset under the
    mask). Phase 1 trains from the initialization (no round before it). Each run draws its
    initialization and every round's ``eta`` from its key with ``model.init`` (round 0's draw is
    the initialization); all ``rounds`` draws are made up front by one shared program (memory:
    ``seeds x rounds`` copies of the variables). ``"lw"`` follows
    Algorithm 1 literally, before *every* phase including the first: with ``k = schedule[r]``
    rescale blocks ``1..k`` to their initial norms, set the normalization slot after block ``k``
    from ``sample_size`` training rows, reinitialize everything above block ``k`` (each step can
    be switched off for ablations: ``rescale``, ``normalize``, ``reinit``). ``"bl"`` trains once
    for ``rounds * steps_per_round`` steps (the same budget).

    With ``validation``, each phase evaluates the validation loss every ``eval_every`` steps,
    stops after ``patience`` evaluations without improvement and restores its best params
    (paper 002, sec. 3: 10% of the training split held out); otherwise each phase runs exactly
    its budget. With ``lr_patience`` as well, the learning rate is multiplied by ``lr_factor``
    whenever the validation loss has not improved for ``lr_patience`` evaluations (Keras'
    ``ReduceLROnPlateau``, here ``optax.contrib.reduce_on_plateau``; paper 002, App. B: halved
    after 20 epochs without improvement); every round starts again at the optimizer's rate. The
    multiplier scales the optimizer's final updates, which for SGD (with or without momentum)
    and Adam is the learning rate. ``batch_size=None`` is full-batch gradient descent (sec.
    1.1); otherwise minibatches come from a per-epoch shuffle, the last partial batch dropped.

    Args:
      model: Flax module; ``model.init(key, x[:1])`` gives the variables. Modules with a
        ``train`` argument get ``train=True`` (and a ``"dropout"`` rng) while training.
      keys: a 1-D batch of PRNG keys (one run each) or a single key.
      data: ``(x, y)`` training data.
      method: one of :data:`METHODS`.
      optimizer: any optax transformation.
      steps_per_round: optimizer steps per phase (the maximum, with early stopping).
      rounds: number of phases ``K * N``; for ``"lw"`` defaults to ``len(schedule)``.
      loss: loss name or per-example callable (see :func:`~jaxprune.training.get_loss`);
        required.
      batch_size: minibatch size, or None for the full batch.
      fraction: share of each tensor redrawn by WELSR/WELS/DSD (paper: 0.2).
      fc_layers: top-level names for FC (default ``model.fc_layers()``).
      blocks: LW blocks (default ``model.lw_blocks()`` where the model defines it, else the
        blocks derived from its traced graph, :func:`~jaxprune.graph.extend.default_blocks`). A
        model without :func:`~jaxprune.models.norm_slot` calls is wrapped by
        :func:`~jaxprune.rewrites.lw_slots` (slots placed from its graph); the result's
        ``model`` is the wrapper, which ``variables`` belong to.
      schedule: LW block index per round (default :func:`lw_schedule` with ``N = rounds / K``).
      rescale, normalize, reinit: the three LW steps (ablations of App. A and F).
      lw_include_biases: LW's rescaling uses (and scales) biases too; the default, False, is
        the paper's "rescale the weights": norms of the non-bias leaves (kernels, norm scales),
        biases unchanged.
      sample_size: rows of ``x`` used for the LW normalization statistics.
      l2: penalty ``l2 * sum(w**2)`` over kernels (leaves with ndim >= 2), App. A.
      l2_form, l2_biases: the penalty's convention, see :func:`l2_penalty` (default: the sum
        over kernels, as Keras' ``kernel_regularizer=l2(l2)``).
      validation: optional ``(x_val, y_val)`` for per-round early stopping.
      eval_every: steps between validation checks (default one epoch).
      patience: evaluations without improvement before a phase stops.
      lr_patience: evaluations without improvement before the learning rate is multiplied by
        ``lr_factor`` (needs ``validation``); None: a constant rate.
      lr_factor: the multiplier, in (0, 1) (paper 002: 0.5).

    Returns:
      A :class:`RoundsResult`.

    Raises:
      ValueError: unknown method, bad sizes or fraction, blocks/layers not in the params, a
        schedule entry outside ``1..K``.
      TypeError: a model that is not a flax.linen module (every draw is ``model.init``).

    >>> import jax, optax, jaxprune as jp
    >>> (x, y), _ = jp.data.signal_task(jax.random.key(0), n_train=64, n_test=8)
    >>> model = jp.models.BlockMLP(hidden=(4,), out=8)
    >>> res = jp.training.train_rounds(model, (x, y), keys=jax.random.split(jax.random.key(1), 2),
    ...     method="lw", loss="cross_entropy", optimizer=optax.sgd(0.05), steps_per_round=5,
    ...     rounds=2)
    >>> res.history["loss"].shape, res.loss.shape, sorted(res.variables), sorted(res.state)
    ((2, 2), (2,), ['lw_norm', 'params'], ['lw_norm'])

    References:
      Paper 002, sec. 1 (Eq. 1 and the four methods), sec. 1.1 (budgets: BL 1,800 steps vs
      K x N rounds of 200), Algorithm 1 (LW), sec. 3 (early stopping on a 10% validation split).
    """
    start = time.perf_counter()
    require_linen(model, "train_rounds")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if l2_form not in L2_FORMS:
        raise ValueError(f"l2_form: expected one of {L2_FORMS}, got {l2_form!r}")
    keys = jnp.asarray(keys)
    if not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        raise ValueError(f"keys: expected jax.random.key(s), got dtype {keys.dtype}")
    single = keys.ndim == 0
    keys = keys[None] if single else keys
    x, y = device_data(data)
    n = x.shape[0]
    if int(steps_per_round) < 1:
        raise ValueError(f"steps_per_round: must be >= 1, got {steps_per_round}")
    batch_size = n if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1 or None, got {batch_size}")
    fraction = check_fraction(fraction)
    shapes0 = jax.eval_shape(lambda k: model.init(k, x[:1]), jax.random.key(0))
    params0 = shapes0["params"]
    if method == "lw":
        blocks = check_blocks(params0, blocks if blocks is not None else _lw_blocks(model, x))
        if normalize and NORM_COLLECTION not in shapes0:  # a model without norm_slot calls
            variables = model.init(jax.random.key(0), x[:1])
            model = lw_slots(model, trace(model, variables, x[:1]), blocks)
        if schedule is None:
            if rounds is None or rounds % len(blocks):
                raise ValueError(
                    f"rounds: for lw without a schedule, expected a multiple of the "
                    f"{len(blocks)} blocks (K x N), got {rounds}"
                )
            schedule = lw_schedule(len(blocks), rounds // len(blocks))
        schedule = tuple(int(k) for k in schedule)
        for k in schedule:
            check_blocks(params0, blocks, k)
        if rounds is not None and rounds != len(schedule):
            raise ValueError(f"rounds: {rounds} != len(schedule) {len(schedule)}")
        rounds = len(schedule)
    else:
        blocks, schedule = None, None
    if rounds is None or int(rounds) < 1:
        raise ValueError(f"rounds: must be >= 1, got {rounds}")
    if method == "fc":
        fc_layers = tuple(fc_layers if fc_layers is not None else model.fc_layers())
        layer_mask(params0, fc_layers)  # validates the names
    else:
        fc_layers = None
    if validation is not None:
        xv, yv = jnp.asarray(validation[0]), jnp.asarray(validation[1])
        eval_every = int(eval_every or max(n // batch_size, 1))
        if eval_every < 1 or int(patience) < 1:
            raise ValueError(f"eval_every, patience: must be >= 1, got {eval_every}, {patience}")
    else:
        xv, yv, eval_every = x[:1], y[:1], 1
    if lr_patience is not None:
        if validation is None:
            raise ValueError("lr_patience: the learning-rate plateau rule needs validation data")
        if int(lr_patience) < 1 or not 0.0 < float(lr_factor) < 1.0:
            raise ValueError(
                f"lr_patience, lr_factor: expected >= 1 and in (0, 1), got {lr_patience}, "
                f"{lr_factor}"
            )
    config = (
        int(rounds),
        int(steps_per_round),
        min(batch_size, n),
        n,
        fraction,
        fc_layers,
        blocks,
        schedule,
        bool(rescale),
        bool(normalize),
        bool(reinit),
        bool(lw_include_biases),
        int(sample_size),
        float(l2),
        str(l2_form),
        bool(l2_biases),
        eval_every,
        int(patience),
        validation is not None,
        None if lr_patience is None else int(lr_patience),
        float(lr_factor),
    )
    program = _program(model, optimizer, get_loss(loss), method, config)
    draws = _draw_program(model, tuple(x.shape), x.dtype)(keys, jnp.arange(int(rounds)))
    variables, tl, vl, used = program(keys, draws, x, y, xv, yv)
    history = {"loss": tl, "steps": used}
    if validation is not None:
        history["val_loss"] = vl
    if single:
        variables, history = jax.tree.map(lambda a: a[0], (variables, history))
    state = {k: v for k, v in variables.items() if k != "params"}
    return RoundsResult(
        variables=variables,
        params=variables["params"],
        state=state,
        history=history,
        loss=history["loss"][..., -1],
        seconds=time.perf_counter() - start,
        model=model,
    )
