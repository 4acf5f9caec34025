"""The trainable tree of a zoo case, and a way back to the full variables (test helper)."""

from __future__ import annotations

import jax


def _merge(full, part):
    if isinstance(full, dict):
        return {k: _merge(v, part[k]) if k in part else v for k, v in full.items()}
    return part


def trainable(case, graph):
    """``(params, combine)``: the tree an optimizer trains and ``params -> variables``."""
    kind = graph.model.kind
    if kind == "linen":
        v = case.variables
        return v["params"], lambda p: {**v, "params": p}
    if kind == "nnx":
        from flax import nnx

        params = nnx.to_pure_dict(nnx.state(case.model, nnx.Param))
        full = graph.model.variables
        return params, lambda p: _merge(full, p)
    return graph.model.variables, lambda p: p  # equinox arrays (all float), function params


def loss_fn(case, graph, combine):
    def f(p):
        out = graph.model.apply(combine(p), case.x, **case.kwargs)
        return sum(jax.numpy.sum(o**2) for o in jax.tree.leaves(out))

    return f
