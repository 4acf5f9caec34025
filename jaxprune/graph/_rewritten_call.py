"""How a rewritten model's call reaches the original's program: arguments, keyword arrays
(``rngs=``, ``key=``) lifted into program inputs, a bounded plan cache and content keys.

A call's positional arguments and every keyword argument holding arrays (a dict of PRNG keys
``rngs={"dropout": key}``, equinox's ``key=``) become inputs of the traced program, so one
trace serves every key and no key is baked into the program as a constant; keyword arguments
without arrays (``train=True``, ``mutable=[...]``) are static and part of the cache key.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any

import jax
import numpy as np

__all__ = [
    "PLAN_CACHE_SIZE",
    "Call",
    "PlanCache",
    "Skeleton",
    "content_key",
    "prepare_call",
    "trace_call",
]

PLAN_CACHE_SIZE = 8
"""How many traced plans (one per argument shapes and static keywords) a rewritten model keeps;
the least recently used is dropped beyond it (a retrace, never a wrong result)."""


class PlanCache:
    """A least-recently-used map of at most :data:`PLAN_CACHE_SIZE` plans (thread-safe)."""

    def __init__(self, size: int = PLAN_CACHE_SIZE):
        self.size = size
        self._plans: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        if key is None:
            return None
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
            return plan

    def put(self, key, plan) -> None:
        if key is None:
            return
        with self._lock:
            self._plans[key] = plan
            self._plans.move_to_end(key)
            while len(self._plans) > self.size:
                self._plans.popitem(last=False)

    def __len__(self) -> int:
        return len(self._plans)

    def __contains__(self, key) -> bool:
        return key in self._plans


@dataclasses.dataclass(frozen=True)
class Skeleton:
    """A tree structure as it pickles: the tree itself with ``ShapeDtypeStruct`` leaves (a
    ``PyTreeDef`` of equinox modules does not survive pickling; the modules do)."""

    tree: Any

    @staticmethod
    def of(treedef, avals) -> Skeleton | None:
        return None if treedef is None else Skeleton(jax.tree.unflatten(treedef, list(avals)))

    def treedef(self):
        return jax.tree.structure(self.tree)


class _Ident:
    """Compares and hashes a value that is not hashable by identity (never equal to a copy)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Ident) and other.value is self.value

    def __hash__(self):
        return id(self.value)


def hashable(x):
    """``x`` if it hashes, else an identity wrapper (equal only to itself)."""
    try:
        hash(x)
    except TypeError:
        return _Ident(x)
    return x


def content_key(model, kind: str):
    """A hashable key equal for two copies of the same model definition (no arrays involved):
    the linen module (a dataclass of its fields), the function, the NNX graph definition and
    abstract state, or the equinox static part's structure and non-array leaves."""
    if kind == "nnx":
        from flax import nnx

        graphdef, state = nnx.split(model)
        return ("nnx", hashable(graphdef), tuple(hashable(a) for a in jax.tree.leaves(state)))
    if kind == "equinox":
        leaves, treedef = jax.tree.flatten(model)
        return ("equinox", hashable(treedef), tuple(hashable(a) for a in leaves))
    return (kind, hashable(model))


def _freeze(x):
    if isinstance(x, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v) for v in x)
    return x


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic)) or isinstance(x, jax.core.Tracer)


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key)


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of a rewritten model, as the original's program takes it.

    Attributes:
      args: the positional arguments, abstract (``ShapeDtypeStruct`` leaves).
      static: keyword arguments without arrays.
      dynamic: ``((name, treedef, (key impl or None, ...)), ...)`` of keyword arguments with
        arrays; PRNG keys travel as their key data.
      dyn_args: their abstract leaves, one list per keyword.
      leaves: the concrete inputs in program order (positional leaves, then keyword leaves).
      key: the plan cache key (None when a static keyword does not hash: no caching).
    """

    args: Any
    static: dict
    dynamic: tuple
    dyn_args: tuple
    leaves: list
    key: Any

    def kwargs(self, dyn_leaves) -> dict:
        """The keyword arguments rebuilt from the program's keyword inputs."""
        out = dict(self.static)
        for (name, treedef, impls), leaves in zip(self.dynamic, dyn_leaves, strict=True):
            vals = [
                v if impl is None else jax.random.wrap_key_data(v, impl=impl)
                for v, impl in zip(leaves, impls, strict=True)
            ]
            out[name] = jax.tree.unflatten(treedef, vals)
        return out


def _abstract(a):
    return jax.ShapeDtypeStruct(np.shape(a), jax.numpy.result_type(a))


def prepare_call(args, kwargs) -> Call:
    """Splits a call into abstract arguments, static keywords and keyword arrays (lifted)."""
    arg_leaves, arg_tree = jax.tree.flatten(args)
    abstract = [_abstract(a) for a in arg_leaves]
    static, dynamic, dyn_args, dyn_leaves = {}, [], [], []
    for name, value in kwargs.items():
        leaves, treedef = jax.tree.flatten(value)
        if not any(_is_array(v) for v in leaves):
            static[name] = value
            continue
        bad = [type(v).__name__ for v in leaves if not _is_array(v)]
        if bad:
            raise TypeError(
                f"{name}=: expected a value of arrays only or of no arrays (it is passed to the "
                f"original model's program), got arrays mixed with {bad}"
            )
        impls = tuple(jax.random.key_impl(v) if _is_key(v) else None for v in leaves)
        data = [jax.random.key_data(v) if _is_key(v) else v for v in leaves]
        dynamic.append((name, treedef, impls))
        dyn_args.append([_abstract(v) for v in data])
        dyn_leaves.extend(data)
    try:
        key = (
            arg_tree,
            tuple((s.shape, s.dtype) for s in abstract),
            _freeze(static),
            tuple((n, t, i) for n, t, i in dynamic),
            tuple((s.shape, s.dtype) for leaves in dyn_args for s in leaves),
        )
        hash(key)
    except TypeError:
        key = None
    return Call(
        args=jax.tree.unflatten(arg_tree, abstract),
        static=static,
        dynamic=tuple(dynamic),
        dyn_args=tuple(dyn_args),
        leaves=list(arg_leaves) + dyn_leaves,
        key=key,
    )


def _equinox_apply(static):
    import equinox as eqx

    def apply(arrays, *args, **kwargs):
        return eqx.combine(arrays, static)(*args, **kwargs)

    return apply


def trace_call(model, kind: str, treedef, avals, call: Call):
    """The layer graph of a rewrite's original model (as kept by ``abstract_model``) for
    ``call``, with variables of structure ``treedef`` and shapes ``avals``; the program's
    inputs are the variables, then ``call.leaves``."""
    from jaxprune.graph._adapters import as_model
    from jaxprune.graph._graph import trace

    variables = jax.tree.unflatten(treedef, list(avals))
    if kind == "nnx":
        variables = None  # the abstract model carries its own (abstract) state
    elif kind == "equinox":
        model = _equinox_apply(model)
    adapter = as_model(model, variables)
    if not call.dynamic:
        return trace(adapter, None, *call.args, model_kwargs=call.static)
    base = adapter.apply

    def apply(v, *args, **kwargs):
        *args, dyn = args
        return base(v, *args, **{**kwargs, **call.kwargs(dyn)})

    adapter = dataclasses.replace(adapter, apply=apply)
    return trace(adapter, None, *call.args, call.dyn_args, model_kwargs=call.static)
