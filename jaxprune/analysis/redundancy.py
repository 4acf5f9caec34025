"""Trivially redundant units and kernels (paper 000, sec. 4.1 step 5b and sec. 5)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxprune._types import Params
from jaxprune._units import unit_layers

__all__ = [
    "REDUNDANCY_THRESHOLD",
    "redundancy_groups",
    "redundant_units",
    "unit_similarity",
]

REDUNDANCY_THRESHOLD = 0.99
"""Paper 000's normalized-dot-product threshold for a trivially redundant pair."""


def _check_threshold(threshold) -> None:
    if isinstance(threshold, jax.core.Tracer):  # traced (a jit argument): checked by the caller
        return
    if not float(threshold) > 0:
        raise ValueError(f"threshold: expected a value in (0, inf), got {threshold}")


def _normalize(v: jax.Array) -> jax.Array:
    norm = jnp.linalg.norm(v, axis=-1, keepdims=True)
    # A zero vector (e.g. a pruned unit) is similar to nothing: its normalized form is 0.
    return jnp.where(norm > 0, v / jnp.where(norm > 0, norm, 1), 0)


def unit_similarity(
    kernel: jax.Array, bias: jax.Array | None = None, *, circular: bool = False
) -> jax.Array:
    """Normalized dot products between the units' incoming weight vectors (bias included).

    Unit ``u``'s vector is ``concat(kernel[..., u].ravel(), [bias[u]])``. For a conv kernel
    ``(k, k, in, w)`` with ``circular=True``, the similarity of ``u`` and ``v`` is the maximum
    over all ``k*k`` circular permutations of ``u``'s kernel (``jnp.roll`` along both spatial
    axes, the bias unchanged): a kernel is also redundant with its circular permutations, whose
    outputs on large inputs are close to shifted copies (sec. 5). The result is symmetric, with
    ones on the diagonal (zero for an all-zero unit, which is similar to nothing).

    Args:
      kernel: ``(in, w)`` dense or ``(k, k, in, w)`` conv kernel.
      bias: ``(w,)`` or ``None`` (no bias).
      circular: also compare circular permutations (conv kernels only).

    Returns:
      ``(w, w)`` similarities in ``[-1, 1]``.

    Raises:
      ValueError: for ``circular`` on a non-4-D kernel or a bias of the wrong shape.

    >>> import jax.numpy as jnp
    >>> k = jnp.array([[1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])   # units 0 and 1 parallel
    >>> unit_similarity(k, jnp.array([1.0, 2.0, 0.0])).round(3).tolist()
    [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]

    References:
      Paper 000, sec. 4.1 step 5b (normalized dot product of weights incl. bias) and sec. 5
      (trivially redundant and circularly permuted kernels).
    """
    kernel = jnp.asarray(kernel)
    w = kernel.shape[-1]
    if bias is not None and jnp.shape(bias) != (w,):
        raise ValueError(f"bias: expected shape ({w},), got {jnp.shape(bias)}")
    if circular and kernel.ndim != 4:
        raise ValueError(f"circular: needs a conv kernel (k, k, in, w), got shape {kernel.shape}")

    def vectors(k):
        v = jnp.moveaxis(k, -1, 0).reshape(w, -1)
        return v if bias is None else jnp.concatenate([v, jnp.asarray(bias)[:, None]], axis=1)

    ref = _normalize(vectors(kernel))
    if not circular:
        return ref @ ref.T
    kh, kw = kernel.shape[:2]
    shifts = jnp.array([(a, b) for a in range(kh) for b in range(kw)])

    def rolled(shift):
        k = jnp.roll(kernel, shift[0], axis=0)
        return _normalize(vectors(jnp.roll(k, shift[1], axis=1))) @ ref.T

    sims = jax.vmap(rolled)(shifts)  # [shift, u (rolled), v]
    return jnp.max(sims, axis=0)


def redundancy_groups(similarity: jax.Array, threshold: float = REDUNDANCY_THRESHOLD) -> jax.Array:
    """Connected components of the relation ``similarity >= threshold``.

    Two units are in one group when a chain of pairs, each at or above ``threshold``, links
    them (paper: "as long as each node in the group is trivially redundant with at least one
    other"). Computed by repeated boolean squaring of the adjacency matrix (``ceil(log2 w)``
    matmuls), so it is jittable and ``vmap``-able.

    Args:
      similarity: ``(w, w)`` symmetric similarities (e.g. :func:`unit_similarity`).
      threshold: in ``(0, inf)``; pairs at or above it are linked.

    Returns:
      ``(w,)`` int labels: the smallest unit index of each unit's group.

    >>> import jax.numpy as jnp
    >>> s = jnp.array([[1, .995, 0, 0], [.995, 1, 0, .992], [0, 0, 1, 0], [0, .992, 0, 1]])
    >>> redundancy_groups(s).tolist()
    [0, 0, 2, 0]

    References:
      Paper 000, sec. 4.1 step 5b.
    """
    _check_threshold(threshold)
    similarity = jnp.asarray(similarity)
    w = similarity.shape[0]
    if similarity.shape != (w, w):
        raise ValueError(f"similarity: expected a square matrix, got {similarity.shape}")
    reach = (similarity >= threshold) | jnp.eye(w, dtype=bool)
    reach = reach | reach.T
    for _ in range(max(1, math.ceil(math.log2(max(w, 2))))):
        r = reach.astype(jnp.float32)
        reach = (r @ r) > 0
    return jnp.argmax(reach, axis=1).astype(jnp.int32)


def _redundant_in_layer(similarity, threshold, scores) -> jax.Array:
    w = similarity.shape[0]
    labels = redundancy_groups(similarity, threshold)
    same = labels[:, None] == labels[None, :]
    idx = jnp.arange(w)
    s = jnp.zeros(w) if scores is None else jnp.asarray(scores, jnp.float32)
    if s.shape != (w,):
        raise ValueError(f"scores: expected shape ({w},) per layer, got {s.shape}")
    # better[i, j]: unit j is preferred over unit i (higher score, ties to the lower index).
    si, sj = s[:, None], s[None, :]
    better = (sj > si) | ((sj == si) & (idx[None, :] < idx[:, None]))
    return jnp.any(same & better, axis=1)


def redundant_units(
    params: Params,
    threshold: float = REDUNDANCY_THRESHOLD,
    *,
    scores: dict[str, jax.Array] | None = None,
    circular: bool = False,
) -> dict[str, jax.Array]:
    """Trivially redundant units of every ReLU layer: all but one member of each group.

    Groups are the connected components of :func:`redundancy_groups` on
    :func:`unit_similarity`. One member of each group is **kept** (not redundant): the one with
    the highest ``scores`` value (e.g. the ablation loss ratio, so the most contributing member
    stays), ties and ``scores=None`` going to the lowest unit index. The other members are
    redundant; a unit alone in its group is never redundant. Jittable.

    Args:
      params: params of a :class:`~jaxprune.models.MLP` or :class:`~jaxprune.models.ConvNet`.
      threshold: similarity at or above which a pair is redundant (paper: 0.99), in
        ``(0, inf)``.
      scores: optional ``{layer: float[width]}`` preference for the member to keep.
      circular: for conv layers, also match circular permutations of kernels (sec. 5).

    Returns:
      ``{layer: bool[width]}``, True for a redundant unit.

    >>> import jax.numpy as jnp
    >>> p = {"relu_0": {"kernel": jnp.array([[1.0, 2.0, 0.0]]), "bias": jnp.array([1.0, 2.0, 1.0])},
    ...      "out": {"kernel": jnp.ones((3, 1)), "bias": jnp.zeros(1)}}
    >>> redundant_units(p)["relu_0"].tolist()
    [False, True, False]
    >>> redundant_units(p, scores={"relu_0": jnp.array([0.5, 3.0, 1.0])})["relu_0"].tolist()
    [True, False, False]

    References:
      Paper 000, sec. 4.1 step 5b and sec. 5.
    """
    _check_threshold(threshold)
    out = {}
    for name in unit_layers(params):
        layer = params[name]
        circ = circular and jnp.ndim(layer["kernel"]) == 4
        sim = unit_similarity(layer["kernel"], layer.get("bias"), circular=circ)
        out[name] = _redundant_in_layer(sim, threshold, None if scores is None else scores[name])
    return out
