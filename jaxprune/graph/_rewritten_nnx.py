"""The rewritten NNX model: a module-level ``nnx.Module`` holding the rewritten state."""

from __future__ import annotations

import types

from flax import nnx

from jaxprune.graph._rewritten import (
    RewriteSpec,
    _leaf_paths,
    held_leaves,
    run_rewritten,
    signed_call,
)
from jaxprune.graph._submodules import linen_only

__all__ = ["Node", "Rewritten"]


class Node(nnx.Module):
    """A node of the rewritten NNX model's state tree (an attribute per key)."""


class _SignedCall:
    """``model.__call__`` with the original's signature (a per-model bound method)."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return Rewritten._call
        return types.MethodType(signed_call(obj.spec, Rewritten._call), obj)


class Rewritten(nnx.Module):
    """A rewritten NNX model: the original's program run on its (smaller) variables.

    Its state has the original's structure (``nnx.state(m)`` has the same paths and
    variable types, ``nnx.Param``, ``nnx.BatchStat``, ...) with the new shapes. It runs
    the original as it was rewritten (its train/eval mode at that time), with the original's
    call signature. It pickles when the original's class is importable by name (a module-level
    class) and its attributes pickle; otherwise :func:`jaxprune.graph.save_rewritten` and
    :func:`jaxprune.graph.load_rewritten` save it without pickle and rebuild it on the original
    constructed again (in eval mode). Two rewrites of equal definitions have equal graph
    definitions.

    >>> import jax, jax.numpy as jnp, numpy as np, jaxprune as jp
    >>> from flax import nnx
    >>> class Net(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.fc1, self.fc2 = nnx.Linear(5, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)
    ...     def __call__(self, x):
    ...         return self.fc2(nnx.relu(self.fc1(x)))
    >>> x = jnp.ones((3, 5)); keep = {"fc1": np.array([1, 0, 1, 1], bool)}
    >>> a = jp.prune_units(Net(nnx.Rngs(0)), keep, x).model
    >>> b = jp.prune_units(Net(nnx.Rngs(0)), keep, x).model
    >>> nnx.graphdef(a) == nnx.graphdef(b), a(x).shape     # one nnx.jit compilation for both
    (True, (3, 2))
    """

    def __init__(self, spec: RewriteSpec, leaves):
        self.spec = spec
        types = {
            "/".join(str(k) for k in path): (path, type(var))
            for path, var in nnx.to_flat_state(nnx.state(spec.model))
        }
        for name, value in zip(_leaf_paths(spec), leaves, strict=True):
            path, kind = types.get(name, (None, nnx.Param))  # new leaves are parameters
            if path is None:
                path = tuple(int(k) if k.isdigit() else k for k in name.split("/"))
            node = self
            for k, nxt in zip(path[:-1], path[1:], strict=True):
                child = _get(node, k)
                if child is None:
                    child = nnx.List([]) if isinstance(nxt, int) else Node()
                    _set(node, k, child)
                node = child
            _set(node, path[-1], kind(value))

    def _call(self, *args, **kwargs):
        leaves = held_leaves(self)
        return (self.spec.runner or run_rewritten)(self.spec, leaves, args, kwargs)

    __call__ = _SignedCall()

    def submodule(self, path: str):
        """Linen narrow models only (``Rewritten.submodule`` there): raises ``TypeError``."""
        raise linen_only("NNX", path)

    def __reduce__(self):
        return _rebuild, (self.spec, held_leaves(self))


def _rebuild(spec, leaves):
    return Rewritten(spec, leaves)


def _get(node, k):
    if isinstance(k, int):
        return node[k] if k < len(node) else None
    return getattr(node, k, None)


def _set(node, k, value):
    if isinstance(k, int):
        while len(node) < k:  # stateless entries (nnx.Sequential's activations): empty nodes
            node.append(Node())
        if k != len(node):
            raise NotImplementedError(f"NNX state: list index {k} set twice")
        node.append(value)
    else:
        setattr(node, k, value)
