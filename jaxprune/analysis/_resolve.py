"""The graph and variables an analysis works on: a user's model traced, or a given Graph."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.graph import Graph, as_model, trace
from jaxprune.graph.extend import check_model_kwargs

__all__ = ["resolve"]


def resolve(model, variables, args, model_kwargs) -> tuple[Graph, object]:
    """``(graph, variables)`` for ``model`` (any kind, or a :class:`Graph`) at ``args``.

    For a Graph, ``variables=None`` means the traced model's own; ``args`` must have the shapes
    it was traced at and ``model_kwargs`` must be empty (they are part of the traced call).
    """
    kwargs = check_model_kwargs(model_kwargs)
    if isinstance(model, Graph):
        if kwargs:
            raise ValueError(
                f"model_kwargs: {sorted(kwargs)} given with a Graph; keyword arguments of the "
                "model call are fixed when tracing (pass them to jp.trace)"
            )
        graph = model
        if variables is None:
            variables = graph.model.variables
        elif jax.tree.structure(variables) != jax.tree.structure(graph.model.variables):  # type: ignore[operator]
            variables = as_model(graph.model.model, variables).variables
        if args is not None:
            want = jax.tree.map(jnp.shape, graph.args)
            got = jax.tree.map(jnp.shape, tuple(args))
            if want != got:
                raise ValueError(
                    f"data: the inputs have shapes {got}, the graph was traced at {want}; "
                    "trace it at the data's shapes or pass the model instead"
                )
        return graph, variables
    if args is None:
        raise ValueError("x: the model's example input is needed to trace it")
    adapter = as_model(model, variables)
    return trace(adapter, adapter.variables, *args, model_kwargs=kwargs), adapter.variables
