"""Rank every fusable pair of neighbouring layers by its fusion MSE (paper 001, Corollary 1)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxprune._types import Params
from jaxprune.models.cnn import CNN, DenseLayer
from jaxprune.rewrites.fuse import _peek, _plan_moments, _rows, check_cnn_params, fusion_plan
from jaxprune.rewrites.fusion_solve import FusionWarning, fusion_weights

__all__ = ["FusionCandidate", "fusion_candidates"]

RANK_BY = ("mse", "relative_mse")


class FusionCandidate(NamedTuple):
    """One neighbouring pair and what fusing it would cost.

    Attributes:
      layers: the two layer names, e.g. ``("conv_2", "dense_0")``.
      mse: Corollary-1 MSE per example (summed over the second layer's outputs/positions).
      relative_mse: ``mse`` divided by the target's total variance ``tr(C_y)`` per example
        (0 = exact fusion, 1 = no better than the constant mean); scale-free across layers.
      kind: ``"dense"`` (dense-dense or conv-dense) or ``"conv"`` (conv-conv).
      n_params: parameters of the fused layer.
    """

    layers: tuple[str, str]
    mse: float
    relative_mse: float
    kind: str
    n_params: int


def fusion_candidates(
    model: CNN,
    params: Params,
    data: Iterable,
    *,
    by: str = "mse",
    method: str = "auto",
) -> list[FusionCandidate]:
    """Fusion MSE of every neighbouring pair, cheapest first, from one pass over ``data``.

    The paper leaves choosing layers to future work (sec. II-B, IV); this ranks the pairs by
    Corollary 1 (``by="mse"``) or by the MSE relative to the target's variance
    (``by="relative_mse"``, comparable across layers of different scale). Conv-conv pairs use
    the default fused kernel (receptive field) and the joint estimator; pairs whose fused
    convolution cannot reproduce the output shape are left out. Moments of all pairs are held at
    once (``O(sum L0^2)`` memory). Warnings about singular covariances are suppressed here (the
    minimum-norm solution is used); :func:`~jaxprune.fuse` reports them.

    Args:
      model: a :class:`~jaxprune.models.CNN`.
      params: its parameters.
      data: iterable of batches (``x`` or ``(x, y, ...)``), read once.
      by: ``"mse"`` or ``"relative_mse"``.
      method: linear solver (see :func:`~jaxprune.rewrites.fusion_weights`).

    Returns:
      A list of :class:`FusionCandidate`, ascending by ``by``.

    Raises:
      ValueError: bad ``by``, parameter shapes, empty data, or non-finite activations.

    >>> import jax, jaxprune as jp
    >>> from jaxprune.models import CNN, DenseLayer
    >>> net = CNN((DenseLayer(6, "identity"), DenseLayer(6, "tanh"), DenseLayer(2, "identity")))
    >>> x = jax.random.normal(jax.random.key(0), (128, 3))
    >>> p = net.init(jax.random.key(1), x)["params"]
    >>> ranking = jp.analysis.fusion_candidates(net, p, [x])
    >>> [c.layers for c in ranking]      # the linear dense_0 fuses exactly, so it comes first
    [('dense_0', 'dense_1'), ('dense_1', 'dense_2')]

    References:
      Paper 001, Corollary 1 (Eq. 8) and its remark that it "can be used to determine which
      layers in a network to fuse".
    """
    if by not in RANK_BY:
        raise ValueError(f"by: expected one of {RANK_BY}, got {by!r}")
    if not isinstance(model, CNN):
        raise TypeError(f"model: expected jaxprune.models.CNN, got {type(model).__name__}")
    x, data = _peek(data)
    check_cnn_params(model, params, x)
    names = model.layer_names()
    plans = []
    for a, b in zip(names[:-1], names[1:], strict=True):
        plan = fusion_plan(model, (a, b))
        try:  # the fused conv must reproduce the run's output shape
            jax.eval_shape(lambda p, z, plan=plan: _rows(model, plan, p, z)[:2], params, x[:1])
        except ValueError:
            continue
        plans.append(plan)
    if not plans:
        return []
    states, per_example = _plan_moments(model, plans, params, data)
    out = []
    for plan, m, rows in zip(plans, states, per_example, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FusionWarning)
            kernel, _, mse = fusion_weights(m, method=method, context=f"layers {plan.names}")
        total = float(jnp.sum(m.var_y()))
        mse = float(mse) * rows
        rel = mse / (total * rows) if total > 0 else 0.0
        kind = "dense" if isinstance(plan.spec, DenseLayer) else "conv"
        n_params = int(kernel.size + kernel.shape[-1])
        out.append(FusionCandidate(plan.names, mse, rel, kind, n_params))
    return sorted(out, key=lambda c: getattr(c, by))
