"""Streaming moments of a fusable pair's input rows and outputs, read from taps on the traced
program (shared by ``jaxprune.analysis.fusion_candidates`` and ``jaxprune.fuse``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp

from jaxprune._moments import moments_init, moments_update
from jaxprune.graph._adapters import as_model
from jaxprune.graph._graph import trace
from jaxprune.graph._pairs import Pair, pair_of
from jaxprune.graph._taps import peek, stream_taps

__all__ = ["pair_moments", "pair_rows"]


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
        padding or pair.padding,  # type: ignore[arg-type]  # a string or explicit pads
        dimension_numbers=pair.dimension_numbers,
        precision=jax.lax.Precision.HIGHEST,
    )  # features ordered (C, k_1, ..., k_nd)
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
    graph = trace(model, variables, x, model_kwargs=kwargs)
    pairs = list(pick(graph))
    options = options or [{} for _ in pairs]
    if not pairs:
        return graph, [], [], []
    leaves = jax.tree.leaves(adapter.variables)

    def trace_at(xb):
        an = trace(model, variables, xb, model_kwargs=kwargs).analysis
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
