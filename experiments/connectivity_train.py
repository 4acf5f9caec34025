"""Many-seed training with per-epoch curves (test accuracy, pruned/flipped fractions) for paper 003.

The paper's figures need a value per epoch: :func:`jaxprune.training.train_epochs` records the
test accuracy and :func:`jaxprune.analysis.layer_fractions` after every epoch, with the seeds
``vmap``-ed into one compiled program per (network, method). On CPU the library's ``jit``
splits the vmapped convolutions per seed (``jaxprune.training.cpu_rewrite``), so conv
nets train vmapped as fast as one seed after another.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprune as jp

__all__ = ["Curves", "initial_params", "params_for", "train_curves"]


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
) -> Curves:
    """Trains one run per key for ``epochs`` epochs and records the curves.

    :func:`jaxprune.training.train_epochs` with the seeds vmapped into one program: each epoch
    shuffles the training set with the run's key (Feistel permutation) and drops the last
    incomplete batch (``partial="drop"``, a different one every epoch); masked runs train only
    the scores (``trainable=is_score``), so their weights stay bit-identical.

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

    Returns:
      :class:`Curves`.
    """
    x, y = jnp.asarray(train[0]), jnp.asarray(train[1])
    xt, yt = jnp.asarray(test[0]), jnp.asarray(test[1])
    if x.shape[0] < batch_size:
        raise ValueError(f"batch_size: {batch_size} exceeds the {x.shape[0]} training examples")
    r = jp.training.train_epochs(
        model,
        (x, y),
        keys=keys,
        loss="cross_entropy",
        optimizer=tx,
        epochs=epochs,
        batch_size=batch_size,
        partial="drop",
        params=params,
        trainable=None if kind is None else jp.models.is_score,
        metrics=_metrics(model, xt, yt, kind),
        progress=False,
    )
    h = {k: np.asarray(v) for k, v in r.history.items()}
    if kind is None:
        return Curves(h["accuracy"], None, None, r.params, params, r.seconds)
    layers = {k[len("layer/") :]: v for k, v in h.items() if k.startswith("layer/")}
    return Curves(h["accuracy"], h["changed"], layers, r.params, params, r.seconds)


def _metrics(model, xt, yt, kind):
    """Test accuracy, and for masked runs the changed fraction overall and per layer."""

    def metrics(variables):
        out = {"accuracy": jnp.mean(jnp.argmax(model.apply(variables, xt), -1) == yt)}
        if kind is not None:
            p = variables["params"]
            out["changed"] = jp.analysis.changed_fraction(p, kind)
            fractions = jp.analysis.layer_fractions(p, kind)
            out.update({f"layer/{name}": f for name, f in fractions.items()})
        return out

    return metrics
