"""Evaluation of a traced program, with interventions on unit channels.

The interpreter binds each primitive of the flat program in order. A unit mask multiplies the
unit's channels where they are *read*: at the input of every kernel layer and every reduction
over channels, and at the outputs. So a 0 removes the unit from everything downstream (the
next layer, skip projections, concatenations, the head), exactly as pruning it would, and for
a unit followed by its nonlinearity it equals multiplying the nonlinearity's output by 0.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxprune.graph._inline import Literal
from jaxprune.graph._layout import Act

__all__ = ["channel_vector", "evaluate_from", "run_program"]


def channel_vector(act: Act, masks: dict, locate, dtype, fill: float = 1.0):
    """Per-group values laid out along ``act``'s channel axis (length ``outer * C * inner``),
    ``fill`` on channels of groups without a value; None if no group of ``act`` has one."""
    parts, any_mask = [], False
    for s, a, b in act.segs:
        root, start = locate(s)
        m = masks.get(root)
        if m is None:
            parts.append(jnp.full((b - a,), fill, dtype))
        else:
            any_mask = True
            parts.append(jnp.asarray(m[start + a : start + b], dtype))
    if not any_mask:
        return None
    vec = jnp.concatenate(parts) if len(parts) > 1 else parts[0]
    if act.inner > 1:
        vec = jnp.repeat(vec, act.inner)
    if act.outer > 1:
        vec = jnp.tile(vec, act.outer)
    return vec


def _apply_mask(x, act: Act, masks, locate):
    vec = channel_vector(act, masks, locate, x.dtype)
    if vec is None:
        return x
    shape = [1] * x.ndim
    shape[act.axis] = vec.shape[0]  # type: ignore[index]  # a masked layout has an axis
    return x * vec.reshape(shape)


def _check_inputs(analysis, flat_inputs) -> None:
    """The inputs are the traced variables' leaves then the arguments' (counts checked)."""
    program = analysis.program
    n_args = len(analysis.arg_vars)
    n_vars = len(program.invars) - n_args
    got = len(flat_inputs)
    if got == n_vars + n_args:
        return
    shapes = [tuple(program.avals[v].shape) for v in program.invars[:n_vars]]
    leading = [tuple(jnp.shape(a)) for a in flat_inputs[:n_vars]]
    if got < n_vars or leading != shapes:
        raise ValueError(
            f"variables: expected the {n_vars} arrays of the variables the graph was traced "
            f"with, got {max(got - n_args, 0)} (or other shapes); pass them "
            "(graph.model.variables for an NNX or equinox model traced with variables=None)"
        )
    raise ValueError(
        f"args: expected {n_args} argument array(s) of the traced call's shapes after the "
        f"{n_vars} variable arrays, got {got - n_vars}; pass the same arguments as to jp.trace"
    )


def run_program(analysis, flat_inputs, masks: dict | None = None, capture=None):
    """Evaluates the analysed program on ``flat_inputs`` (leaves then arguments).

    Args:
      analysis: the channel analysis of the program.
      flat_inputs: one array per program input.
      masks: ``{root space id: float[width]}`` multiplied onto those channels where read.
      capture: program variable ids whose values to return as well (taps on intermediate
        values), or ``True`` for every value.

    Returns:
      The list of outputs; with ``capture``, ``(outputs, {variable id: value})``.
    """
    program = analysis.program
    masks = masks or {}
    _check_inputs(analysis, flat_inputs)
    env = dict(zip(program.invars, flat_inputs, strict=True))
    points: dict[int, list] = {}
    if masks:
        for node_i, operand, act in analysis.mask_points:
            points.setdefault(node_i, []).append((operand, act))

    def read(v):
        return v.value if isinstance(v, Literal) else env[v]

    for i, node in enumerate(program.nodes):
        vals = [read(v) for v in node.ins]
        for operand, act in points.get(i, ()):
            vals[operand] = _apply_mask(vals[operand], act, masks, analysis.locate)
        outs = node.primitive.bind(*vals, **node.params)
        if not node.primitive.multiple_results:
            outs = (outs,)
        for o, val in zip(node.outs, outs, strict=True):
            env[o] = val
    results = []
    for v, act in zip(program.outvars, analysis.output_layouts, strict=True):
        val = read(v)
        if masks and isinstance(act, Act) and act.axis is not None:
            val = _apply_mask(jnp.asarray(val), act, masks, analysis.locate)
        results.append(val)
    if capture is None:
        return results
    if capture is True:
        return results, env
    return results, {v: env[v] for v in capture}


def evaluate_from(program, known: dict, targets) -> list:
    """The values of ``targets`` computed from ``known`` (``{variable id: value}``) alone.

    Only the nodes the targets depend on are evaluated; a known variable stands for its value
    whatever node produced it (so ``known`` may replace an intermediate value, e.g. a layer's
    output, to evaluate what follows it as a function of that value).

    Raises:
      KeyError: naming the first variable needed that is neither known nor computable.
    """
    producer = {o: i for i, node in enumerate(program.nodes) for o in node.outs}
    needed, stack = set(), [v for v in targets if not isinstance(v, Literal)]
    while stack:
        v = stack.pop()
        if v in known or v in needed:
            continue
        if v not in producer:
            raise KeyError(f"variable {v} is neither given nor computed from given values")
        needed.add(v)
        stack.extend(u for u in program.nodes[producer[v]].ins if not isinstance(u, Literal))
    env = dict(known)
    for i in sorted({producer[v] for v in needed}):
        node = program.nodes[i]
        vals = [u.value if isinstance(u, Literal) else env[u] for u in node.ins]
        outs = node.primitive.bind(*vals, **node.params)
        if not node.primitive.multiple_results:
            outs = (outs,)
        for o, val in zip(node.outs, outs, strict=True):
            env.setdefault(o, val)
    return [v.value if isinstance(v, Literal) else env[v] for v in targets]
