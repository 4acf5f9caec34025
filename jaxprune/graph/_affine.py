"""Per-channel affine runs on a program's activations: a layer's bias, a BatchNorm with running
statistics, scales and shifts, as ``z = A * h + D`` channel by channel.

A *run* starts at a value ``h`` with a channel axis and follows the single reader of each value
while it is a per-channel affine step: ``add``/``sub``/``mul``/``div`` with operands computed
from parameters and constants only (a bias, ``(h - mean) * scale / sqrt(var + eps) + shift``),
a transpose or a dtype conversion. :func:`affine_runs` lists the run starting at every layer's
output and every other run whose steps read parameters (a BatchNorm after a residual join);
:func:`run_scale_shift` evaluates ``A`` and ``D`` per channel from the variables. Steps that
are part of an activation (``where(h >= 0, h, a * h)``: the run's result joins its own start
again) are not a run: they are the activation's parameters.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxprune.graph._evaluate import evaluate_from
from jaxprune.graph._inline import Literal
from jaxprune.graph._layout import Act, PVal
from jaxprune.graph._pairs import _readers
from jaxprune.graph._primitives import AFFINE_ARITH, CHANNEL_MOVES

__all__ = ["AffineRun", "affine_runs", "run_scale_shift"]


@dataclasses.dataclass(frozen=True)
class AffineRun:
    """One run ``end = A * start + D`` (per channel of ``act``, the end's layout).

    Attributes:
      start, end: program variables.
      act: the end value's layout (its channel axis and segments).
      leaves: the parameter leaves the steps read.
      layer: index of the layer whose output starts the run, or None.
      activation: the steps belong to an activation (its result joins ``start`` again).
    """

    start: int
    end: int
    act: Act
    leaves: frozenset[str]
    layer: int | None
    activation: bool = False


def _step(an, node, k) -> frozenset[str] | None:
    """The leaves a per-channel affine step reads (None if ``node`` is not one at operand k)."""
    ann, avals = an.annotations, an.program.avals
    if node.name in CHANNEL_MOVES:
        return frozenset()
    if node.name not in AFFINE_ARITH or (node.name == "div" and k != 0):
        return None
    others = [v for q, v in enumerate(node.ins) if q != k]
    if not all(isinstance(v, Literal) or isinstance(ann[v], PVal) for v in others):
        return None
    if len(avals[node.outs[0]].shape) != len(avals[node.ins[k]].shape):
        return None
    return frozenset().union(*(ann[v].leaves for v in others if not isinstance(v, Literal)))


def _walk(an, readers, start, first=None):
    """``(end, leaves, nodes)`` of the run from ``start`` (through ``first`` if given)."""
    program = an.program
    outs = {v for v in program.outvars if not isinstance(v, Literal)}
    cur, leaves, nodes = start, frozenset(), []
    while cur not in outs:
        if first is not None:
            (j, k), first = first, None
        elif len(readers.get(cur, ())) == 1:
            j, k = readers[cur][0]
        else:
            break
        got = _step(an, program.nodes[j], k)
        if got is None:
            break
        leaves |= got
        nodes.append(j)
        cur = program.nodes[j].outs[0]
    return cur, leaves, nodes


def affine_runs(an) -> list[AffineRun]:
    """Every layer's output run, then every other run whose steps read parameters."""
    program, ann = an.program, an.annotations
    readers = _readers(program)
    runs, covered = [], set()
    shapes = set()
    for info in an.layers:
        h = program.nodes[info.node].outs[0]
        end, leaves, nodes = _walk(an, readers, h)
        covered.update(nodes)
        if isinstance(ann[end], Act) and ann[end].axis is not None:
            runs.append(AffineRun(h, end, ann[end], leaves, info.index))
            shapes.add(tuple(program.avals[h].shape))
    for i, node in enumerate(program.nodes):
        if i in covered or node.name not in AFFINE_ARITH:
            continue
        for k, v in enumerate(node.ins):
            a = None if isinstance(v, Literal) else ann[v]
            if not isinstance(a, Act) or a.axis is None:
                continue
            # a run on the units' own values (the shape of a layer's output), not on
            # statistics of them (a batch mean of shape (1, C))
            if tuple(program.avals[v].shape) not in shapes or _step(an, node, k) is None:
                continue
            end, leaves, nodes = _walk(an, readers, v, first=(i, k))
            if not leaves or not isinstance(ann[end], Act) or ann[end].axis is None:
                continue
            covered.update(nodes)
            joins_start = any(v in program.nodes[j].ins for j, _ in readers.get(end, ()))
            runs.append(AffineRun(v, end, ann[end], leaves, None, activation=joins_start))
            break
    return runs


def run_scale_shift(an, leaf_values: dict, run: AffineRun) -> tuple[jax.Array, jax.Array]:
    """``(A, D)``: the run's per-channel scale and shift along its end's channel axis
    (``end = A * start + D``), computed from ``leaf_values`` (``{leaf path: array}``)."""
    program = an.program
    known = {v: leaf_values[p] for v, p in an.leaf_of_var.items() if p in leaf_values}
    aval = program.avals[run.start]

    def f(h):
        return evaluate_from(program, {**known, run.start: h}, [run.end])[0]

    zeros = jnp.zeros(aval.shape, jnp.float32).astype(aval.dtype)
    d, a = jax.jvp(f, (zeros,), (jnp.ones_like(zeros),))
    axis = run.act.axis

    def channel(x):
        x = jnp.moveaxis(jnp.asarray(x, jnp.float32), axis, -1)
        return x.reshape(-1, x.shape[-1])[0]

    return channel(jnp.broadcast_to(a, jnp.shape(d))), channel(d)
