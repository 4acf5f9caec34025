"""Rank every fusable pair of layers of any model by its fusion MSE (paper 001, Corollary 1)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxprune.analysis.moments import moments_init, moments_update
from jaxprune.graph import as_model, trace
from jaxprune.graph._pairs import Pair, fusable_pairs, pair_of
from jaxprune.graph._taps import peek, stream_taps
from jaxprune.rewrites.fusion_solve import FusionWarning, fusion_weights

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


def pair_rows(pair: Pair, a0, y, kernel_size=None, padding=None):
    """``(x rows, y rows)`` of one batch: the fused layer's inputs and its target."""
    if pair.kind == "dense":
        if pair.flatten:
            return a0.reshape(a0.shape[0], -1), y.reshape(y.shape[0], -1)
        return a0.reshape(-1, a0.shape[-1]), y.reshape(-1, y.shape[-1])
    ks = pair.kernel_size if kernel_size is None else (int(kernel_size),) * len(pair.kernel_size)
    patches = jax.lax.conv_general_dilated_patches(
        a0,
        ks,
        pair.strides,
        padding or pair.padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )  # features ordered (C, kh, kw)
    if patches.shape[1:-1] != y.shape[1:-1]:
        raise ValueError(
            f"the fused convolution (k~={ks}, s~={pair.strides}, {padding or pair.padding}) maps "
            f"{a0.shape[1:-1]} to {patches.shape[1:-1]}, but the pair outputs {y.shape[1:-1]}; "
            "choose kernel_size/padding or an input size divisible by the strides"
        )
    return patches.reshape(-1, patches.shape[-1]), y.reshape(-1, y.shape[-1])


def pair_moments(
    model, variables, data: Iterable, pick: Callable, kwargs: dict, options=None
) -> tuple:
    """Streams the moments of every pair ``pick(graph)`` chooses over ``data`` (one pass).

    Returns ``(graph, pairs, moments, rows per example)``.
    """
    x, data = peek(data)
    adapter = as_model(model, variables)
    graph = trace(model, variables, x, **kwargs)
    pairs = list(pick(graph))
    options = options or [{} for _ in pairs]
    if not pairs:
        return graph, [], [], []
    leaves = jax.tree.leaves(adapter.variables)

    def trace_at(xb):
        an = trace(model, variables, xb, **kwargs).analysis
        taps = []
        for p in pairs:
            q, _ = pair_of(an, p.first)
            taps += [q.a0, q.y]
        return an, taps

    def rows(taps):
        return [
            pair_rows(p, taps[2 * i], taps[2 * i + 1], **o)
            for i, (p, o) in enumerate(zip(pairs, options, strict=True))
        ]

    def init(avals):
        shapes = jax.eval_shape(rows, avals)
        return [moments_init(a.shape[1], b.shape[1]) for a, b in shapes]

    def step(states, taps):
        return [moments_update(s, *r) for s, r in zip(states, rows(taps), strict=True)]

    states = stream_taps(trace_at, leaves, data, step, init)
    an = graph.analysis
    avals = [an.program.avals[v] for p in pairs for v in (p.a0, p.y)]
    per_example = [
        a.shape[0] // x.shape[0]
        for a, _ in jax.eval_shape(rows, [jnp.zeros(s.shape) for s in avals])
    ]
    return graph, pairs, states, per_example


def fusion_candidates(
    model, variables, data: Iterable, *, by: str = "mse", method: str = "auto", **kwargs
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
      model: a ``flax.linen`` Module or a function ``f(params, x)``.
      variables: its variables.
      data: iterable of batches (``x`` or ``(x, y, ...)``), read once.
      by: ``"mse"`` or ``"relative_mse"``.
      method: linear solver (see :func:`~jaxprune.rewrites.fusion_weights`).
      **kwargs: keyword arguments of the call (``train=False``).

    Returns:
      A list of :class:`FusionCandidate`, ascending by ``by``.

    Raises:
      ValueError: bad ``by``, empty data, or non-finite activations.

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
    x, data = peek(data)

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

    graph, pairs, states, per_example = pair_moments(model, variables, data, pick, kwargs)
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
