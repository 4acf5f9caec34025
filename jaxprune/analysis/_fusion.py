"""Rank every fusable pair of layers of any model by its fusion MSE (paper 001, Corollary 1)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxprune._data_checks import check_finite
from jaxprune._fusion_solve import FusionWarning, fusion_weights
from jaxprune._types import Model, Variables
from jaxprune.graph.extend import (
    check_model_kwargs,
    fusable_pairs,
    pair_moments,
    pair_rows,
    peek,
)

__all__ = ["FusionCandidate", "fusion_candidates", "pair_moments", "pair_rows"]

RANK_BY = ("mse", "relative_mse")


class FusionCandidate(NamedTuple):
    """One fusable pair and what fusing it would cost.

    Attributes:
      layers: the two layer names (param paths), e.g. ``("Conv_2", "Dense_0")``.
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


def _checked(data: Iterable):
    """The batches of ``data``, each input checked for NaN/inf as it is read (one pass)."""
    for i, batch in enumerate(data):
        if isinstance(batch, tuple | list):
            check_finite(f"data[{i}][0]", batch[0])
        else:
            check_finite(f"data[{i}]", batch)
        yield batch


def fusion_candidates(
    model: Model,
    variables: Variables,
    data: Iterable,
    *,
    by: str = "mse",
    method: str = "auto",
    model_kwargs: Mapping[str, Any] | None = None,
) -> list[FusionCandidate]:
    """Fusion MSE of every fusable pair of the model, cheapest first, from one pass over ``data``.

    A pair is a dense-act-dense, conv-act-dense or conv-act-conv pair: the first layer's output
    goes only through elementwise operations (bias, BatchNorm, one nonlinearity), a flatten or
    pooling, to the second layer and nothing else. The paper leaves choosing layers to future
    work (sec. II-B, IV); this ranks the pairs by Corollary 1 (``by="mse"``) or by the MSE
    relative to the target's variance (``by="relative_mse"``). Conv-conv pairs use the receptive
    field as fused kernel and the joint estimator; pairs whose fused convolution cannot
    reproduce the output shape, or whose paddings differ, are left out. Warnings about
    singular covariances are suppressed (the minimum-norm solution is used).

    Args:
      model: a ``flax.linen`` Module, an ``nnx.Module``, an ``eqx.Module`` or a function
        ``f(params, x)``.
      variables: its variables (``None`` for NNX/equinox: the module's own state).
      data: iterable of batches (``x`` or ``(x, y, ...)``), read once.
      by: ``"mse"`` or ``"relative_mse"``.
      method: linear solver: ``"auto"``, ``"cholesky"``, ``"lstsq"`` or ``"cg"``.
      model_kwargs: keyword arguments of the model's own call (``{"train": False}``).

    Returns:
      A list of :class:`FusionCandidate`, ascending by ``by``.

    Raises:
      ValueError: bad ``by``, empty data, non-finite activations; naming the batch
        (``data[i]``, ``data[i][0]``) or ``variables`` for NaN/inf in them.

    >>> import jax, flax.linen as nn, jaxprune as jp
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.Dense(6)(x)                      # linear: Dense_0 -> Dense_1 is exact
    ...         h = nn.tanh(nn.Dense(6)(h))
    ...         return nn.Dense(2)(h)
    >>> x = jax.random.normal(jax.random.key(0), (128, 3)); net = Net()
    >>> v = net.init(jax.random.key(1), x)
    >>> [c.layers for c in jp.analysis.fusion_candidates(net, v, [x])]
    [('Dense_0', 'Dense_1'), ('Dense_1', 'Dense_2')]

    References:
      Paper 001, Corollary 1 (Eq. 8) and its remark that it "can be used to determine which
      layers in a network to fuse".
    """
    if by not in RANK_BY:
        raise ValueError(f"by: expected one of {RANK_BY}, got {by!r}")
    check_finite("variables", variables)
    x, data = peek(_checked(data))

    def pick(graph):
        out = []
        for p in fusable_pairs(graph.analysis):
            if p.kind == "conv":
                if p.padding is None:
                    continue
                an = graph.analysis
                a0, y = (an.program.avals[v] for v in (p.a0, p.y))
                try:
                    jax.eval_shape(lambda a, b, p=p: pair_rows(p, a, b), a0, y)
                except ValueError:
                    continue
            out.append(p)
        return out

    graph, pairs, states, per_example = pair_moments(
        model, variables, data, pick, check_model_kwargs(model_kwargs)
    )
    names = list(graph.layers)
    out = []
    for p, m, rows in zip(pairs, states, per_example, strict=True):
        layers = (names[p.first], names[p.second])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FusionWarning)
            kernel, _, mse = fusion_weights(m, method=method, context=f"layers {layers}")
        total = float(jnp.sum(m.var_y()))
        mse = float(mse) * rows
        rel = mse / (total * rows) if total > 0 else 0.0
        n_params = int(kernel.size + kernel.shape[-1])
        out.append(FusionCandidate(layers, mse, rel, p.kind, n_params))
    return sorted(out, key=lambda c: getattr(c, by))
