"""Masks ``m(t) = 1[t > 0]`` and sign flips ``f(t) = sign(t)`` with straight-through gradients
(private core shared by models, transforms, analysis and training; ``gate``, ``effective_params``,
``init_scores`` and ``is_score`` are public through ``jaxprune.models``, ``minimal_penalty``
through ``jaxprune.training``).

Each fixed weight ``w`` gets a trainable score ``t``; the forward pass uses ``w * m(t)`` (prune)
or ``w * f(t)`` (flip) and the backward pass treats ``m`` and ``f`` as the identity, so
``d loss / d t = d loss / d w_eff * w``. These are pure functions usable with any Flax model:
``model.apply({"params": effective_params(weights, scores, kind)}, x)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune._types import Params, PyTree

__all__ = [
    "KINDS",
    "SCORE_INIT_HIGH",
    "effective_params",
    "gate",
    "init_scores",
    "is_score",
    "minimal_penalty",
]

KINDS = ("mask", "flip")
"""``"mask"``: prune with ``m(t) = 1[t > 0]``; ``"flip"``: flip signs with ``f(t) = sign(t)``."""

SCORE_INIT_HIGH = 0.1
"""Scores start uniform in ``(0, 0.1]`` (paper 003, sec. 2), so every mask starts at 1."""


def check_kind(kind: str) -> str:
    """Returns ``kind`` if it is one of :data:`KINDS`, else raises ``ValueError``."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    return kind


@jax.custom_vjp
def _mask(t: jax.Array) -> jax.Array:
    return (t > 0).astype(t.dtype)


@jax.custom_vjp
def _flip(t: jax.Array) -> jax.Array:
    return jnp.where(t >= 0, 1, -1).astype(t.dtype)


def _identity_fwd(fn):
    return lambda t: (fn(t), None)


def _identity_bwd(_, g):
    return (g,)


_mask.defvjp(_identity_fwd(lambda t: (t > 0).astype(t.dtype)), _identity_bwd)
_flip.defvjp(_identity_fwd(lambda t: jnp.where(t >= 0, 1, -1).astype(t.dtype)), _identity_bwd)


def gate(scores: jax.Array, kind: str) -> jax.Array:
    """The mask ``m(t)`` or the sign filter ``f(t)`` of one score array, straight-through.

    Forward: ``m(t) = 1[t > 0]`` (Eq. 1) or ``f(t) = sign(t)`` with ``f(0) = +1`` (a choice: the
    paper states that ``F`` has elements in ``{-1, 1}``, while ``jnp.sign(0) = 0`` would prune;
    scores start in ``(0, 0.1]`` so 0 is only hit by chance). Backward: the identity (the
    straight-through estimator of Bengio et al. / Hinton), so the gradient is always 1.

    Args:
      scores: float array of scores ``t``.
      kind: ``"mask"`` or ``"flip"``.

    Returns:
      An array of ``scores``' shape and dtype with values in ``{0, 1}`` or ``{-1, 1}``.

    Raises:
      ValueError: on an unknown ``kind`` or non-float scores.

    >>> import jax, jax.numpy as jnp
    >>> t = jnp.array([-0.5, 0.0, 0.2])
    >>> gate(t, "mask").tolist(), gate(t, "flip").tolist()
    ([0.0, 0.0, 1.0], [-1.0, 1.0, 1.0])
    >>> jax.grad(lambda t: gate(t, "mask").sum())(t).tolist()  # straight-through
    [1.0, 1.0, 1.0]

    References:
      Paper 003, Eq. 1 (mask), sec. 3 (sign filter), sec. 2 (straight-through estimator).
    """
    check_kind(kind)
    scores = jnp.asarray(scores)
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        raise ValueError(f"scores: expected a float array, got dtype {scores.dtype}")
    return _mask(scores) if kind == "mask" else _flip(scores)


def is_score(path: tuple, leaf: object) -> bool:
    """Default predicate: a leaf is a score if any key on its path is ``"scores"``.

    That is the parameter name used by :class:`~jaxprune.models.MaskedDense` and
    :class:`~jaxprune.models.MaskedConv` (``{layer}/scores``) and by
    :class:`~jaxprune.models.Scored` (``scores/{inner path}``). A model with a layer named
    ``scores`` needs its own predicate.

    >>> import jax
    >>> is_score((jax.tree_util.DictKey("dense_0"), jax.tree_util.DictKey("scores")), None)
    True
    """
    del leaf
    return any(getattr(k, "key", getattr(k, "name", None)) == "scores" for k in path)


def _check_same_structure(weights: PyTree, scores: PyTree) -> None:
    if jax.tree.structure(weights) != jax.tree.structure(scores):  # type: ignore[operator]
        raise ValueError(
            "scores: expected the structure of weights "
            f"{jax.tree.structure(weights)}, got {jax.tree.structure(scores)}"
        )
    paths = jax.tree_util.tree_flatten_with_path(weights)[0]
    for (path, w), t in zip(paths, jax.tree.leaves(scores), strict=True):
        if jnp.shape(w) != jnp.shape(t):
            raise ValueError(
                f"scores: shape {jnp.shape(t)} at {jax.tree_util.keystr(path)} does not match "
                f"the weight's shape {jnp.shape(w)}"
            )


def effective_params(weights: Params, scores: Params, kind: str) -> Params:
    """The weights a network actually uses: ``w * m(t)`` or ``w * f(t)``, leaf by leaf.

    The gradient w.r.t. ``scores`` is the straight-through one, ``g * w`` where ``g`` is the
    gradient w.r.t. the effective weights (Eq. 2 with ``dm/dt := 1``); the gradient w.r.t.
    ``weights`` is the exact ``g * m(t)`` (freeze them with
    :func:`~jaxprune.transforms.train_scores` to train only the connectivity).

    Args:
      weights: any pytree of float arrays (e.g. a Flax model's ``params`` without biases).
      scores: a pytree of the same structure and shapes.
      kind: ``"mask"`` or ``"flip"``.

    Returns:
      A pytree of ``weights``' structure.

    Raises:
      ValueError: if the structures or shapes differ, or ``kind`` is unknown.

    >>> import jax, jax.numpy as jnp
    >>> w = {"kernel": jnp.array([2.0, -3.0])}
    >>> t = {"kernel": jnp.array([0.1, -0.1])}
    >>> effective_params(w, t, "mask")["kernel"].tolist()
    [2.0, -0.0]
    >>> effective_params(w, t, "flip")["kernel"].tolist()
    [2.0, 3.0]
    >>> jax.grad(lambda t: effective_params(w, t, "mask")["kernel"].sum())(t)["kernel"].tolist()
    [2.0, -3.0]

    References:
      Paper 003, Eqs. 1-2 and sec. 3 (``f(t) = sign(t)``).
    """
    check_kind(kind)
    _check_same_structure(weights, scores)
    return jax.tree.map(lambda w, t: w * gate(t, kind).astype(jnp.result_type(w)), weights, scores)


def init_scores(key: jax.Array, weights: Params, high: float = SCORE_INIT_HIGH) -> Params:
    """Scores drawn uniformly from ``(0, high]``, one per weight, so that every gate starts at 1.

    ``jax.random.uniform`` samples ``[0, high)``; returning ``high - u`` gives ``(0, high]``.

    Args:
      key: a PRNG key.
      weights: the pytree of weights to score (only shapes and dtypes are used).
      high: upper end of the interval (paper: 0.1).

    Returns:
      A pytree of ``weights``' structure with strictly positive scores.

    Raises:
      ValueError: if ``high`` is not positive.

    >>> import jax, jax.numpy as jnp
    >>> t = init_scores(jax.random.key(0), {"w": jnp.zeros((100,))})
    >>> bool((t["w"] > 0).all() and (t["w"] <= 0.1).all())
    True

    References:
      Paper 003, sec. 2 (``T`` uniform in ``(0, 0.1]``).
    """
    if not high > 0:
        raise ValueError(f"high: expected a positive upper bound, got {high}")
    leaves, treedef = jax.tree.flatten(weights)
    keys = jax.random.split(key, max(len(leaves), 1))
    scores = [
        (high - jax.random.uniform(k, jnp.shape(w), jnp.result_type(w), 0.0, high))
        for k, w in zip(keys, leaves, strict=False)
    ]
    return jax.tree.unflatten(treedef, scores)


def minimal_penalty(scores: Params, kind: str) -> jax.Array:
    """The minimal pruning/flipping term of Eq. 4: minus the mean gate over all ``M`` weights.

    ``"mask"``: ``-(1/M) sum m(t)``, minus the fraction of kept connections.
    ``"flip"``: ``-(1/M) sum (1 + f(t)) / 2``, minus the fraction of unflipped signs (a choice:
    the paper only says "analogously"; with the straight-through gradient this term pushes each
    score up by ``1 / (2M)`` per unit of loss, half the pruning push).

    Minimal pruning minimises ``task_loss + minimal_penalty(scores, "mask")``; free pruning the
    task loss alone (Eq. 3). Under straight-through the gradient is the constant ``-1/M``
    (``-1/(2M)``) for every score, which is what
    :func:`~jaxprune.transforms.add_minimal_penalty` adds inside an optax chain.

    Args:
      scores: pytree of all scores of the network.
      kind: ``"mask"`` or ``"flip"``.

    Returns:
      A scalar in ``[-1, 0]``.

    Raises:
      ValueError: on an unknown ``kind`` or an empty pytree.

    >>> import jax.numpy as jnp
    >>> float(minimal_penalty({"a": jnp.array([1.0, -1.0]), "b": jnp.array([0.5, 0.5])}, "mask"))
    -0.75

    References:
      Paper 003, Eq. 4 (minimal pruning) and sec. 3 (minimal flipping).
    """
    check_kind(kind)
    leaves = jax.tree.leaves(scores)
    if not leaves:
        raise ValueError("scores: expected at least one score array, got an empty pytree")
    total = jnp.sum(jnp.stack([jnp.sum(gate(t, kind)) for t in leaves]))
    count = sum(jnp.size(t) for t in leaves)
    if kind == "flip":
        total = (total + count) / 2
    return -total / count
