"""Flatten a closed jaxpr into one list of equations, looking inside nested calls.

The call primitives of :data:`._primitives.CALLS` (``jit``, ``closed_call``,
``custom_jvp_call``, ``custom_vjp_call``, ``checkpoint``/remat ...) are inlined: the layer graph
and its interpreter see one flat program. Each inlined equation keeps its source info and the
names of the calls it came from (``("relu",)`` for the ``max`` inside ``jax.nn.relu``), which
label nonlinearities.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from jax.extend import core as jcore

from jaxprune.graph._primitives import CALLS

__all__ = ["Literal", "Node", "Program", "inline"]


@dataclasses.dataclass(frozen=True)
class Literal:
    """A constant operand (a jaxpr literal or a closed-over constant)."""

    value: Any

    @property
    def shape(self):
        return np.shape(self.value)


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
    """One primitive application: ``outs = primitive.bind(*ins, **params)``.

    ``ins`` are variable ids (``int``) or :class:`Literal`; ``outs`` are variable ids.
    """

    primitive: Any
    params: dict
    ins: tuple
    outs: tuple[int, ...]
    source_info: Any
    context: tuple[str, ...]
    call_sites: tuple = ()  # source info of the enclosing calls, outermost first

    @property
    def name(self) -> str:
        return self.primitive.name


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
    """A flat program: inputs, nodes in order, outputs, and every variable's aval."""

    invars: tuple[int, ...]
    nodes: tuple[Node, ...]
    outvars: tuple  # ids or Literal
    avals: dict[int, Any]


def _sub_jaxpr(eqn):
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in eqn.params:
            j = eqn.params[key]
            if isinstance(j, jcore.ClosedJaxpr):
                return j.jaxpr, list(j.consts)
            if isinstance(j, jcore.Jaxpr):
                return j, []
    return None, None


def inline(closed) -> Program:
    """Flattens ``closed`` (a ``ClosedJaxpr``) into a :class:`Program`."""
    counter = [0]
    avals: dict[int, Any] = {}
    nodes: list[Node] = []

    def fresh(aval) -> int:
        counter[0] += 1
        avals[counter[0]] = aval
        return counter[0]

    def read(env, v):
        if isinstance(v, jcore.Literal):
            return Literal(v.val)
        return env[v]

    def run(jaxpr, consts, args, context, sites):
        env = {}
        for v, c in zip(jaxpr.constvars, consts, strict=True):
            env[v] = c if isinstance(c, (int, Literal)) else Literal(c)
        for v, a in zip(jaxpr.invars, args, strict=True):
            env[v] = a
        for eqn in jaxpr.eqns:
            ins = [read(env, v) for v in eqn.invars]
            sub, sub_consts = _sub_jaxpr(eqn) if eqn.primitive.name in CALLS else (None, None)
            if sub is not None:
                name = str(eqn.params.get("name", eqn.primitive.name))
                n_consts = int(eqn.params.get("num_consts", 0) or 0)
                if eqn.primitive.name.startswith("custom_vjp") and n_consts:
                    n_consts = 0  # custom_vjp passes its consts as ordinary operands
                del n_consts
                outs = run(sub, sub_consts, ins, (*context, name), (*sites, eqn.source_info))
                for v, o in zip(eqn.outvars, outs, strict=True):
                    env[v] = o
                continue
            outs = tuple(fresh(v.aval) for v in eqn.outvars)
            nodes.append(
                Node(
                    eqn.primitive,
                    dict(eqn.params),
                    tuple(ins),
                    outs,
                    eqn.source_info,
                    context,
                    sites,
                )
            )
            for v, o in zip(eqn.outvars, outs, strict=True):
                env[v] = o
        return [read(env, v) for v in jaxpr.outvars]

    invars = tuple(fresh(v.aval) for v in closed.jaxpr.invars)
    outs = run(closed.jaxpr, list(closed.consts), list(invars), (), ())
    return Program(invars=invars, nodes=tuple(nodes), outvars=tuple(outs), avals=avals)
