"""A jitted train step built from any Flax model, loss and optax transformation."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxprune._losses import LossFn, get_loss
from jaxprune._types import Params
from jaxprune.training.shuffle import feistel_permutation

__all__ = ["batch_loss", "evaluate", "make_epoch", "make_train_step"]

TrainablePredicate = Callable[[tuple, jax.Array], bool]


def batch_loss(
    apply_fn: Callable,
    loss_fn: LossFn,
    params: Params,
    x: jax.Array,
    y: jax.Array,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Weighted mean of per-example losses (``weights`` 0 marks padding rows)."""
    per_example = loss_fn(apply_fn({"params": params}, x), y)
    if weights is None:
        return jnp.mean(per_example)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1)


def _step_fn(model, loss_fn: LossFn, optimizer: optax.GradientTransformation):
    """The pure (unjitted) step shared by the single-device and data-parallel builders."""

    def step(params, opt_state, batch):
        value, grads = jax.value_and_grad(lambda p: batch_loss(model.apply, loss_fn, p, *batch))(
            params
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": value}

    return step


def _partial_step_fn(model, loss_fn: LossFn, optimizer: optax.GradientTransformation):
    """The step with some leaves frozen: ``(treedef, keep, train, frozen, opt_state, batch)``.

    ``keep[i]`` says whether leaf ``i`` of ``treedef`` is trainable; ``train`` and ``frozen`` are
    the two lists of leaves. Only ``train`` is differentiated and updated; the optimizer sees the
    whole tree (zero gradients for the frozen leaves, so its state from ``init(params)`` fits).
    """

    def step(treedef, keep, train, frozen, opt_state, batch):
        def full(t, f):
            return _merge(treedef, keep, t, f)

        value, grads = jax.value_and_grad(
            lambda t: batch_loss(model.apply, loss_fn, full(t, frozen), *batch)
        )(train)
        zeros = [jnp.zeros_like(f) for f in frozen]
        updates, opt_state = optimizer.update(full(grads, zeros), opt_state, full(train, frozen))
        updates = [u for u, k in zip(treedef.flatten_up_to(updates), keep, strict=True) if k]
        return optax.apply_updates(train, updates), opt_state, {"loss": value}

    return step


def _merge(treedef, keep, train, frozen):
    train, frozen = iter(train), iter(frozen)
    return jax.tree.unflatten(treedef, [next(train) if k else next(frozen) for k in keep])


def _splitter(trainable: TrainablePredicate):
    """``params -> (treedef, keep, train_leaves, frozen_leaves)``, ``keep`` cached per structure."""
    cache: dict = {}

    def split(params):
        leaves, treedef = jax.tree.flatten(params)
        keep = cache.get(treedef)
        if keep is None:
            flat = jax.tree_util.tree_flatten_with_path(params)[0]
            keep = tuple(bool(trainable(path, leaf)) for path, leaf in flat)
            if not any(keep):
                raise ValueError(
                    "trainable: expected a predicate selecting at least one parameter, "
                    f"got none of {len(keep)} selected"
                )
            cache[treedef] = keep
        train = [x for x, k in zip(leaves, keep, strict=True) if k]
        frozen = [x for x, k in zip(leaves, keep, strict=True) if not k]
        return treedef, keep, train, frozen

    return split


def make_train_step(
    model,
    loss: str | LossFn,
    optimizer: optax.GradientTransformation,
    *,
    jit: bool = True,
    trainable: TrainablePredicate | None = None,
):
    """Builds ``step(params, opt_state, batch) -> (params, opt_state, metrics)``.

    The step computes the mean loss on ``batch = (x, y)`` (or ``(x, y, weights)``), its gradient,
    runs ``optimizer`` and applies the updates. It has no side effects, so it can be ``vmap``-ed
    over seeds or ``scan``-ned over batches; ``metrics`` is ``{"loss": loss_before_update}``.

    With ``trainable``, only the selected leaves are differentiated and updated; the others are
    returned as they came in (the same arrays, not copies, under ``jit``). The optimizer still
    receives the whole tree, with zero gradients for the frozen leaves, so state made by
    ``optimizer.init(params)`` fits; an optimizer that ignores those leaves (e.g.
    :func:`~jaxprune.transforms.train_scores`) then costs nothing for them. This is the cheap
    way to train only the scores of a masked network (paper 003): the fixed weights get no
    gradient and are neither touched nor copied, and the scores' trajectory is exactly that of
    the step without ``trainable``.

    Args:
      model: a Flax linen module (anything with ``.apply({"params": p}, x)``).
      loss: a loss name (see :func:`get_loss`) or ``fn(pred, target) -> per-example losses``.
      optimizer: any optax transformation; transforms that need ``params`` receive them.
      jit: wrap the step in ``jax.jit`` (donating nothing, so inputs remain valid).
      trainable: optional ``(path, leaf) -> bool`` choosing the leaves to train (e.g.
        :func:`~jaxprune.transforms.is_score`); evaluated once per parameter structure.

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
    ...     layer, "mse", tx, trainable=jp.transforms.is_score)
    >>> new, _, _ = step(params, tx.init(params), (x, jax.numpy.zeros((len(x), 2))))
    >>> new["weights"] is params["weights"], bool((new["scores"] != params["scores"]).any())
    (True, True)

    References:
      Paper 003, sec. 2 ("the network weights are kept fixed and only T is updated").
    """
    if trainable is None:
        step = _step_fn(model, get_loss(loss), optimizer)
        return jax.jit(step) if jit else step
    partial = _partial_step_fn(model, get_loss(loss), optimizer)
    if jit:
        partial = jax.jit(partial, static_argnums=(0, 1))
    split = _splitter(trainable)

    def step(params, opt_state, batch):
        treedef, keep, train, frozen = split(params)
        train, opt_state, metrics = partial(treedef, keep, train, frozen, opt_state, batch)
        return _merge(treedef, keep, train, frozen), opt_state, metrics

    return step


def evaluate(model, params: Params, data, loss: str | LossFn = "mse") -> jax.Array:
    """Mean loss of ``model`` with ``params`` on ``data = (x, y)`` (one full batch)."""
    x, y = data
    return batch_loss(model.apply, get_loss(loss), params, jnp.asarray(x), jnp.asarray(y))


def make_epoch(
    model,
    optimizer: optax.GradientTransformation,
    loss_fn: LossFn,
    batch_size: int,
    *,
    unroll: int = 1,
):
    """``epoch(params, opt_state, key, x, y) -> (params, opt_state, mean_loss)``, unjitted.

    One pass over ``(x, y)`` in an order drawn from ``key`` (:func:`feistel_permutation`, no
    sort), as a ``lax.scan`` of minibatch steps; the last, smaller batch is kept (one more step
    on its own static shape, as Keras does), so no example is dropped. ``mean_loss`` is the
    mean over examples of the per-batch losses before each update. ``unroll`` is passed to the
    ``lax.scan`` over batches. :func:`~jaxprune.training.fit` and
    :func:`~jaxprune.training.train_epochs` are built on it.
    """

    def step(carry, batch):
        p, s = carry
        xb, yb = batch
        value, grads = jax.value_and_grad(lambda q: batch_loss(model.apply, loss_fn, q, xb, yb))(p)
        updates, s = optimizer.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), value * xb.shape[0]

    def epoch(p, s, key, x, y):
        n = x.shape[0]
        n_full, rem = divmod(n, batch_size)
        perm = feistel_permutation(key, n)
        xs, ys = x[perm], y[perm]
        full = lambda a: a[: n_full * batch_size].reshape(n_full, batch_size, *a.shape[1:])
        (p, s), sums = jax.lax.scan(step, (p, s), (full(xs), full(ys)), unroll=unroll)
        total = jnp.sum(sums)
        if rem:
            (p, s), last = step((p, s), (xs[n_full * batch_size :], ys[n_full * batch_size :]))
            total = total + last
        return p, s, total / n

    return epoch
