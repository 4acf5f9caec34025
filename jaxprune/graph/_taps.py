"""Stream intermediate values of a traced model over batches (taps on program variables)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp

from jaxprune.graph._evaluate import run_program

__all__ = ["first_input", "peek", "stream_taps"]


def first_input(batch):
    x = batch[0] if isinstance(batch, tuple | list) else batch
    return jnp.asarray(x)


def peek(data: Iterable):
    """``(first x, an iterable over all batches)`` without consuming a one-shot iterator."""
    it = iter(data)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("data: expected at least one batch, got none") from None
    return first_input(first), itertools.chain([first], it)


def stream_taps(trace_at: Callable, leaves, batches: Iterable, step: Callable, state):
    """Folds ``state = step(state, taps)`` over ``batches``; one jitted program per shape.

    Args:
      trace_at: ``x -> (analysis, [variable ids])``: the traced program at ``x``'s shape and
        the variables to tap (the same roles at every shape).
      leaves: the model's variables' leaves.
      batches: iterable of ``x`` or ``(x, ...)``.
      step: ``(state, [tap values]) -> state`` (traced under ``jit``).
      state: the initial state, or a function ``[tap avals] -> state``.
    """
    compiled: dict = {}
    for batch in batches:
        x = first_input(batch)
        key = (x.shape, x.dtype)
        if key not in compiled:
            an, taps = trace_at(x)

            def taps_fn(leaves, x, an=an, taps=taps):
                _, got = run_program(an, list(leaves) + [x], capture=taps)
                return [got[v] for v in taps]

            compiled[key] = (taps_fn, jax.jit(lambda s, lv, x, f=taps_fn: step(s, f(lv, x))))
        taps_fn, run = compiled[key]
        if callable(state):
            state = state(jax.eval_shape(taps_fn, leaves, x))
        previous, state = state, run(state, leaves, x)
        jax.block_until_ready(previous)  # at most two batches in flight
    return state
