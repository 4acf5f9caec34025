"""Many-seed training with per-epoch curves (test accuracy, pruned/flipped fractions) for paper 003.

``jaxprune.training.fit`` trains to early stopping and returns the best params only; the paper's
figures need a value per epoch, so this loop scans the epochs itself: seeds are ``vmap``-ed, the
minibatches of an epoch are a ``lax.scan`` of the public ``make_train_step``, and each epoch
ends with the test accuracy and :func:`jaxprune.analysis.layer_fractions`. One compiled program
per (network, method).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprune as jp

__all__ = ["SEED_LOOPS", "Curves", "initial_params", "params_for", "train_curves"]

SEED_LOOPS = ("vmap", "python")


class Curves(NamedTuple):
    """Per-seed, per-epoch results; arrays have shape ``(seeds, epochs)``."""

    accuracy: np.ndarray  # test accuracy after each epoch
    changed: np.ndarray | None  # fraction of pruned / flipped weights (None for the baseline)
    layers: dict[str, np.ndarray] | None  # the same per layer
    params: jp.Params  # params after the last epoch (leading seed axis)
    initial: jp.Params  # params before training (leading seed axis)
    seconds: float  # wall time, compile included


def initial_params(model, x: jax.Array, keys: jax.Array) -> jp.Params:
    """``model.init`` for every key (leading seed axis), one compiled program.

    Build it with the ``kind="mask"`` network: the weights do not depend on ``kind`` (Flax
    derives each parameter's key from its path), so :func:`params_for` turns the same draw into
    the baseline's, the pruning and the flipping runs' initial params. Random-number generation
    is costly to compile on CPU, so sharing one init across the five methods saves most of the
    compile time of a quick run.
    """
    return jax.jit(jax.vmap(lambda k: model.init(k, x[:1])["params"]))(keys)


def params_for(params: jp.Params, kind: str | None) -> jp.Params:
    """Drops the scores for the baseline (``kind=None``); masked runs keep them."""
    if kind is not None:
        return params
    return {k: {"weights": v["weights"]} for k, v in params.items()}


def _python_loop(step, metrics, tx, data, params, keys, epochs, n_batches, batch_size):
    """``seed_loop="python"``: the scanned loop of :func:`train_curves` as Python loops."""
    x, y = data
    take = n_batches * batch_size
    perm = jax.jit(lambda k: jp.training.feistel_permutation(k, x.shape[0])[:take])
    finals, curves = [], []
    for i in range(keys.shape[0]):
        p = jax.tree.map(lambda a, i=i: a[i], params)
        s = tx.init(p)
        per_epoch = []
        for k in jax.random.split(keys[i], epochs):
            idx = perm(k)
            xb = x[idx].reshape(n_batches, batch_size, *x.shape[1:])
            yb = y[idx].reshape(n_batches, batch_size)
            for b in range(n_batches):
                p, s, _ = step(p, s, (xb[b], yb[b]))
            per_epoch.append(metrics(p))
        finals.append(p)
        curves.append(jax.tree.map(lambda *a: jnp.stack(a), *per_epoch))
    stack = lambda *a: jnp.stack(a)  # noqa: E731
    return jax.tree.map(stack, *finals), jax.tree.map(stack, *curves)


def train_curves(
    model,
    tx: optax.GradientTransformation,
    train,
    test,
    params: jp.Params,
    keys: jax.Array,
    *,
    epochs: int,
    batch_size: int = 25,
    kind: str | None = None,
    seed_loop: str = "vmap",
) -> Curves:
    """Trains one run per key for ``epochs`` epochs and records the curves.

    Each epoch shuffles the training set with the run's key (Feistel permutation) and drops the
    last incomplete batch (a different one every epoch).

    Args:
      model: Flax module returning logits.
      tx: optax transformation (for masked models, wrap it in ``train_scores``).
      train: ``(x, y)`` training arrays, integer labels.
      test: ``(x, y)`` test arrays.
      params: initial params with a leading seed axis (see :func:`initial_params`).
      keys: batch of PRNG keys, one per run (shuffles).
      epochs: number of epochs.
      batch_size: minibatch size (paper 003, App. A: 25).
      kind: ``"mask"``/``"flip"`` to record changed fractions, ``None`` for the baseline.
      seed_loop: ``"vmap"``: seeds batched, epochs and minibatches ``lax.scan``-ned, one
        program; ``"python"``: one seed after another, one jitted step per minibatch (the same
        shuffles and updates). On CPU, convolutions are slow both vmapped over per-seed weights
        (a grouped convolution: Conv2 on 8x8 digits, 295 ms per 5-seed step vs 15 ms per seed)
        and inside ``lax.scan`` (453 vs 34 ms per step), so conv nets use ``"python"`` there.

    Returns:
      :class:`Curves`.
    """
    x, y = jnp.asarray(train[0]), jnp.asarray(train[1])
    xt, yt = jnp.asarray(test[0]), jnp.asarray(test[1])
    n = x.shape[0]
    n_batches = n // batch_size
    if n_batches < 1:
        raise ValueError(f"batch_size: {batch_size} exceeds the {n} training examples")
    # Masked runs differentiate and update only the scores; the fixed weights pass through.
    trainable = None if kind is None else jp.transforms.is_score
    step = jp.training.make_train_step(model, "cross_entropy", tx, jit=False, trainable=trainable)

    def metrics(p):
        acc = jnp.mean(jnp.argmax(model.apply({"params": p}, xt), -1) == yt)
        if kind is None:
            return acc, jnp.zeros(()), {}
        return acc, jp.analysis.changed_fraction(p, kind), jp.analysis.layer_fractions(p, kind)

    def run(p0, key):

        def epoch(carry, k):
            p, s = carry
            idx = jp.training.feistel_permutation(k, n)[: n_batches * batch_size]
            batches = (
                x[idx].reshape(n_batches, batch_size, *x.shape[1:]),
                y[idx].reshape(n_batches, batch_size),
            )

            def body(c, batch):
                p, s, _ = step(*c, batch)
                return (p, s), None

            (p, s), _ = jax.lax.scan(body, (p, s), batches)
            return (p, s), metrics(p)

        (p, _), curves = jax.lax.scan(epoch, (p0, tx.init(p0)), jax.random.split(key, epochs))
        return p, curves

    start = time.perf_counter()
    p0 = params
    if seed_loop not in SEED_LOOPS:
        raise ValueError(f"seed_loop: expected one of {SEED_LOOPS}, got {seed_loop!r}")
    if seed_loop == "vmap":
        p, (acc, changed, layers) = jax.jit(jax.vmap(run))(params, keys)
    else:
        # compiled like the vmap path (plain jax.jit), so both run the same numerics
        jstep = jax.jit(
            jp.training.make_train_step(model, "cross_entropy", tx, jit=False, trainable=trainable)
        )
        p, (acc, changed, layers) = _python_loop(
            jstep, jax.jit(metrics), tx, (x, y), params, keys, epochs, n_batches, batch_size
        )
    acc = np.asarray(acc)
    seconds = time.perf_counter() - start
    if kind is None:
        return Curves(acc, None, None, p, p0, seconds)
    return Curves(
        acc, np.asarray(changed), {k: np.asarray(v) for k, v in layers.items()}, p, p0, seconds
    )
