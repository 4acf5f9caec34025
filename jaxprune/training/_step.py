"""One jitted train step of any model, and a full-batch evaluation: thin views of the core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from jaxprune._losses import LossFn, get_loss
from jaxprune._types import Batch, Model, Params
from jaxprune.training._core import TrainState, make_core
from jaxprune.training._core import jit as _jit
from jaxprune.training._model import training_model

__all__ = ["evaluate", "make_epoch", "make_train_step"]

TrainablePredicate = Callable[[tuple, jax.Array], bool]


def _core(model, loss, optimizer, **kw):
    return make_core(training_model(model), get_loss(loss), optimizer, **kw)


def make_train_step(
    model: Model,
    loss: str | LossFn,
    optimizer: optax.GradientTransformation,
    *,
    jit: bool = True,
    trainable: TrainablePredicate | None = None,
) -> Callable[..., Any]:
    """Builds ``step(params, opt_state, batch, *, key=None) -> (params, opt_state, metrics)``.

    The library's one train step (:func:`~jaxprune.training._core.make_core`) seen on params
    alone, for models without other variable collections: the mean loss on ``batch = (x, y)``
    (or ``(x, y, weights)``), its gradient, the optimizer and the updates, in training mode
    (``train=True`` when the model takes it). ``key`` (keyword-only) feeds dropout; without it
    the model gets no RNG, so a model that draws randomness in training raises its own error
    (flax: ``InvalidRngError``) instead of silently reusing one fixed key. It has
    no side effects, so it can be ``vmap``-ed over seeds or ``scan``-ned over batches;
    ``metrics`` is ``{"loss": loss_before_update}``. For models with BatchNorm use
    :func:`~jaxprune.training.fit` / :func:`~jaxprune.training.train_epochs`, which carry
    every collection.

    With ``trainable``, only the selected leaves are differentiated and updated; the others are
    returned as they came in (the same arrays, not copies, under ``jit``). The optimizer still
    receives the whole tree, with zero gradients for the frozen leaves, so state made by
    ``optimizer.init(params)`` fits; an optimizer that ignores those leaves (e.g.
    :func:`~jaxprune.transforms.train_scores`) then costs nothing for them. This is the cheap
    way to train only the scores of a masked network (paper 003): the fixed weights get no
    gradient and are not touched, and the scores' trajectory is exactly that of the step
    without ``trainable``.

    Args:
      model: any model :func:`~jaxprune.training.fit` takes.
      loss: a loss name (see :func:`get_loss`) or ``fn(pred, target) -> per-example losses``.
      optimizer: any optax transformation; transforms that need ``params`` receive them.
      jit: wrap the step in ``jax.jit`` (donating nothing, so inputs remain valid).
      trainable: optional ``(path, leaf) -> bool`` choosing the leaves to train (e.g.
        :func:`~jaxprune.models.is_score`); evaluated while tracing.

    Raises:
      ValueError: (when stepping) if ``trainable`` selects no leaf.

    >>> import jax, optax, jaxprune as jp
    >>> x, y = jp.data.paint("square", size=8)
    >>> model = jp.models.MLP(hidden=(3,))
    >>> params = model.init(jax.random.key(0), x)["params"]
    >>> tx = optax.adam(1e-2)
    >>> step = jp.training.make_train_step(model, "mse", tx)
    >>> state = (params, tx.init(params))
    >>> for _ in range(50):
    ...     *state, metrics = step(*state, (x, y))
    >>> bool(metrics["loss"] < jp.training.evaluate(model, params, (x, y), "mse"))
    True

    Training only the scores of a masked layer:

    >>> layer = jp.models.MaskedDense(2, kind="mask")
    >>> params = layer.init(jax.random.key(0), x)["params"]
    >>> tx = jp.transforms.train_scores(optax.adam(1e-2))
    >>> step = jp.training.make_train_step(
    ...     layer, "mse", tx, trainable=jp.models.is_score)
    >>> new, _, _ = step(params, tx.init(params), (x, jax.numpy.zeros((len(x), 2))))
    >>> new["weights"] is params["weights"], bool((new["scores"] != params["scores"]).any())
    (True, True)

    References:
      Paper 003, sec. 2 ("the network weights are kept fixed and only T is updated").
    """
    core = _core(model, loss, optimizer, trainable=trainable)

    def pure(params, opt_state, batch, *, key=None):
        ts = TrainState(params, {}, opt_state, 0)
        ts, metrics = core.train_step(ts, tuple(batch), key)
        return ts.params, ts.opt_state, metrics

    if not jit:
        return pure
    jitted = _jit(pure)
    if trainable is None:
        return jitted

    def step(params, opt_state, batch, *, key=None):
        new, opt_state, metrics = jitted(params, opt_state, batch, key=key)
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        keep = [bool(trainable(p, a)) for p, a in flat]
        new_leaves = jax.tree.leaves(new)
        leaves = [n if k else a for (_, a), n, k in zip(flat, new_leaves, keep, strict=True)]
        return jax.tree.unflatten(jax.tree.structure(params), leaves), opt_state, metrics

    return step


def evaluate(model: Model, params: Params, data: Batch, loss: str | LossFn) -> jax.Array:
    """Mean loss of ``model`` on ``data = (x, y)`` in evaluation mode (one full batch); ``x``
    may be a tuple of a model's several inputs.

    ``params`` is the model's params, or (linen) its whole variables dict with every
    collection (``{"params": ..., "batch_stats": ...}``).
    """
    tm = training_model(model, params)
    core = make_core(tm, get_loss(loss), optax.identity())
    ts = TrainState(tm.params, tm.state, (), 0)
    return core.eval_step(ts, jax.tree.map(jax.numpy.asarray, tuple(data)))["loss"]


def make_epoch(
    model: Model,
    loss: str | LossFn,
    optimizer: optax.GradientTransformation,
    *,
    batch_size: int,
    unroll: int = 1,
    partial: str = "keep",
) -> Callable[..., Any]:
    """``epoch(params, opt_state, x, y, *, key) -> (params, opt_state, mean_loss)``, unjitted.

    The core's epoch (:func:`~jaxprune.training._core.make_core`) on params alone: one pass
    over ``(x, y)`` in an order drawn from ``key`` (:func:`feistel_permutation`), a
    ``lax.scan`` of the one train step; ``partial`` (``"keep"``, the default, as Keras;
    ``"drop"``; ``"pad"``) says what happens to the last ``n % batch_size`` examples.

    Args:
      model: any model :func:`~jaxprune.training.fit` takes (params only: no BatchNorm).
      loss: a loss name or ``fn(pred, target) -> per-example losses``.
      optimizer: any optax transformation.
      batch_size: minibatch size (capped at the number of examples).
      unroll: ``lax.scan`` unroll of the steps.
      partial: ``"keep"``, ``"drop"`` or ``"pad"`` the last partial batch.

    >>> import jax, optax, jaxprune as jp
    >>> x, y = jp.data.paint("square", size=8)
    >>> model = jp.models.MLP(hidden=(3,))
    >>> params = model.init(jax.random.key(0), x)["params"]
    >>> tx = optax.sgd(0.1)
    >>> epoch = jax.jit(jp.training.make_epoch(model, "mse", tx, batch_size=64))
    >>> p, s, loss = epoch(params, tx.init(params), x, y, key=jax.random.key(1))
    >>> loss.shape
    ()
    """
    core = _core(model, loss, optimizer, batch_size=batch_size, unroll=unroll, partial=partial)

    def epoch(p, s, x, y, *, key):
        ts, value = core.epoch(TrainState(p, {}, s, 0), key, x, y)
        return ts.params, ts.opt_state, value

    return epoch
