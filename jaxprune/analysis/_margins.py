"""Margins, sharpness and weight size of a trained classifier (paper 002, sec. 4, App. D)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._data_checks import check_data, check_finite, check_xy
from jaxprune._losses import LossFn, accuracy, get_loss
from jaxprune._types import Model, PyTree

__all__ = ["head_weight_product", "sharpness", "softmax_margins"]


def softmax_margins(model: Model, variables: PyTree, x: jax.Array, y: jax.Array) -> jax.Array:
    """Softmax margins ``p_y - max_{j != y} p_j`` of every example, sorted ascending.

    Fig. 6 plots the smallest 400 of these on the training set (take ``[:400]``); a margin is in
    ``[-1, 1]`` and positive exactly when the example is classified correctly.

    Args:
      model: classifier returning logits.
      variables: its variables (``{"params": ...}`` plus any other collections).
      x: inputs; y: integer labels ``(n,)`` or ``(n, 1)``.

    Returns:
      float array ``(n,)``, ascending.

    Raises:
      ValueError: naming ``x, y`` for different lengths, ``x``, ``y`` or ``variables`` for
        NaN/inf (values traced under ``jit`` are not inspected), ``y`` for labels that are not
        integers of one per example, ``model`` for outputs that are not ``(n, classes >= 2)``.

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> m = jp.models.BlockMLP(hidden=(4,), out=3)
    >>> v = m.init(jax.random.key(0), jnp.zeros((1, 2)))
    >>> marg = softmax_margins(m, v, jnp.ones((5, 2)), jnp.array([0, 1, 2, 0, 1]))
    >>> marg.shape, bool((jnp.diff(marg) >= 0).all())
    ((5,), True)

    References:
      Paper 002, sec. 4.1 and Fig. 6 ("we use the margin of the softmax output").
    """
    check_xy(x, y, "x, y", names=("x", "y"))
    check_finite("variables", variables)
    logits = model.apply(variables, x)
    n = jnp.shape(x)[0]
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.integer) or y.shape not in ((n,), (n, 1)):
        raise ValueError(
            f"y: expected integer class labels of shape ({n},) (or ({n}, 1)), got {y.dtype} of "
            f"shape {y.shape}"
        )
    if jnp.ndim(logits) != 2 or jnp.shape(logits)[-1] < 2:
        raise ValueError(
            f"model: expected logits of shape ({n}, classes >= 2), got {jnp.shape(logits)}"
        )
    p = jax.nn.softmax(logits, axis=-1)
    y = y.reshape(-1)
    true = jnp.take_along_axis(p, y[:, None], axis=-1)[:, 0]
    other = jnp.max(jnp.where(jax.nn.one_hot(y, p.shape[-1], dtype=bool), -jnp.inf, p), axis=-1)
    return jnp.sort(true - other)


def sharpness(
    model: Model,
    variables: PyTree,
    data: tuple[jax.Array, jax.Array],
    sigmas: Sequence[float],
    key: jax.Array,
    *,
    draws: int = 8,
    loss: str | LossFn = "cross_entropy",
) -> dict[str, jax.Array]:
    """Change of the training loss and accuracy under Gaussian parameter noise ``N(0, s^2 I)``.

    For each ``s`` in ``sigmas`` (``lax.map``) and each of ``draws`` noise draws (``vmap``), every
    entry of ``variables["params"]`` gets independent ``N(0, s^2)`` noise (draw ``i`` uses
    ``jax.random.split(key, draws)[i]`` for one standard-normal vector over all leaves in
    ``jax.tree.leaves`` order, scaled by ``s``) (other collections,
    e.g. LW normalization slots, are left alone); the result is the mean over draws of
    ``loss(perturbed) - loss(trained)`` and ``accuracy(trained) - accuracy(perturbed)``.
    Accuracy reads the outputs as ``loss`` does: probabilities above 0.5 for
    ``"binary_cross_entropy"``, else the argmax of ``C >= 2`` logits.
    Lower curves mean a flatter minimum (Fig. 5).

    Args:
      model: classifier returning logits.
      variables: trained variables.
      data: ``(x, y)`` (the training set in the paper).
      sigmas: noise standard deviations (a concrete sequence).
      key: PRNG key.
      draws: noise draws per sigma.
      loss: loss name or per-example callable.

    Returns:
      ``{"sigma": (S,), "loss_increase": (S,), "accuracy_drop": (S,)}``.

    Raises:
      ValueError: on a negative sigma or ``draws < 1``; naming ``data`` for ``x`` and ``y`` of
        different lengths, ``data[0]``/``data[1]``/``variables`` for NaN/inf (values traced
        under ``jit`` are not inspected), ``loss`` for outputs whose accuracy it does not define
        (one output under a loss other than ``"binary_cross_entropy"``) or shapes it refuses.

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> m = jp.models.BlockMLP(hidden=(4,), out=2)
    >>> v = m.init(jax.random.key(0), jnp.zeros((1, 3)))
    >>> x, y = jnp.ones((4, 3)), jnp.array([0, 1, 0, 1])
    >>> s = sharpness(m, v, (x, y), [0.0, 0.1], jax.random.key(1), draws=2)
    >>> float(s["loss_increase"][0])
    0.0

    References:
      Paper 002, sec. 4.2 and Fig. 5 (perturbation by N(0, sigma^2 I)).
    """
    sig_np = np.asarray(sigmas, np.float32).reshape(-1)
    if int(draws) < 1:
        raise ValueError(f"draws: must be >= 1, got {draws}")
    if (sig_np < 0).any():
        raise ValueError(f"sigmas: expected values >= 0, got {list(sigmas)}")
    sig = jnp.asarray(sig_np)
    x, y = check_data(data)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_finite("variables", variables)
    loss_fn = get_loss(loss)

    def measure(params):
        logits = model.apply({**variables, "params": params}, x)
        return jnp.mean(loss_fn(logits, y)), accuracy(logits, y, loss)

    base_loss, base_acc = measure(variables["params"])
    leaves, treedef = jax.tree.flatten(variables["params"])

    sizes = [int(np.size(w)) for w in leaves]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)

    def perturbed(s, k):
        # one normal draw for all leaves (in leaf order): a threefry call per leaf would make
        # the compile time grow with the number of tensors (minutes for a CNN on CPU)
        z = jax.random.normal(k, (max(int(starts[-1]), 1),), jnp.float32)
        noisy = [
            w + (s * z[a:b].reshape(w.shape)).astype(w.dtype)
            for w, a, b in zip(leaves, starts[:-1], starts[1:], strict=True)
        ]
        return measure(jax.tree.unflatten(treedef, noisy))

    keys = jax.random.split(key, int(draws))
    # vmap over the draws, lax.map over sigma: with sigma batched too, XLA:CPU takes minutes
    # to compile a small CNN's perturbed forward pass (seconds this way)
    losses, accs = jax.lax.map(lambda s: jax.vmap(lambda k: perturbed(s, k))(keys), sig)
    return {
        "sigma": sig,
        "loss_increase": jnp.mean(losses, 1) - base_loss,
        "accuracy_drop": base_acc - jnp.mean(accs, 1),
    }


def head_weight_product(
    model: Model, variables: PyTree, x: jax.Array, head: str = "out"
) -> jax.Array:
    """``||input to the head|| * ||head kernel||_F``: App. D's size of the weights.

    The input to the classifier head (the activations, after any normalization layers) is
    captured while ``model`` runs on ``x`` (App. D: a random training sample of 256). Its size is
    the root-mean-square per-example norm ``sqrt(mean_i ||a_i||^2)`` (our choice: the paper does
    not say how the sample is reduced; a constant factor cancels in App. D's ratios to BL).

    Args:
      model: a Flax module with a submodule named ``head``.
      variables: its variables.
      x: the sample.
      head: name of the head submodule (``"out"`` for BlockMLP and SCNN).

    Returns:
      A scalar.

    Raises:
      ValueError: when no submodule named ``head`` is called; naming ``x`` or ``variables``
        for NaN/inf (values traced under ``jit`` are not inspected).

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> m = jp.models.BlockMLP(hidden=(4,), out=2)
    >>> v = m.init(jax.random.key(0), jnp.zeros((1, 3)))
    >>> float(head_weight_product(m, v, jnp.zeros((8, 3)))) >= 0.0
    True

    References:
      Paper 002, sec. 4.1 and App. D ("Size of the Weights").
    """
    check_finite("x", x)
    check_finite("variables", variables)
    seen = []

    def grab(next_fun, args, kwargs, context):
        if context.module.name == head and context.method_name == "__call__":
            seen.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(grab):
        model.apply(variables, x)
    if not seen:
        raise ValueError(f"head: no submodule named {head!r} was called by {type(model).__name__}")
    a = seen[-1].reshape(seen[-1].shape[0], -1)
    act = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(a), axis=-1)))
    return act * jnp.linalg.norm(variables["params"][head]["kernel"])
