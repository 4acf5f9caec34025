"""A rewritten linen model's submodules, rebuilt with their narrowed constructor fields.

A pruned linen model runs the original's program on narrower variables, so the original's
modules keep their attributes (``num_heads=4`` after half the heads went). This module captures
the original's submodule instances by path from one abstract call
(``flax.linen.intercept_methods``), maps the pruned parameter shapes of each to its constructor
fields with an explicit table of flax's own layers (:data:`FIELDS`), and verifies each clone: the
shapes of ``jax.eval_shape(clone.init, ...)`` must equal the pruned shapes. A module not in the
table, or whose clone does not verify, is recorded with the reason, never guessed.

Adding a layer: write ``fields(module, shapes, args) -> (fields, init_args)`` (``shapes``: the
module's variables' shapes, ``{collection: nested dict of tuples}``; ``args``: the abstract
positional arguments of its first ``__call__``; ``init_args``: arguments to initialize a clone
with at those shapes) and add it to :data:`FIELDS` under the class.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["FIELDS", "Narrowed", "linen_only", "narrowed_submodules"]


def linen_only(kind: str, path: str):
    """The error of ``submodule(path)`` on a narrow NNX or equinox model."""
    return TypeError(
        f"submodule: linen narrow models only; this {kind} one holds its narrowed arrays in the "
        f"original's structure (read {path!r}'s sizes from their shapes, e.g. the head axis of "
        "an attention's kernels)"
    )


def _resized(aval, sizes: dict[int, int]):
    shape = list(aval.shape)
    for axis, n in sizes.items():
        shape[axis] = n
    return jax.ShapeDtypeStruct(tuple(shape), aval.dtype)


def _first(args, default=None):
    return args[0] if args else default


def _dense(m, s, args):
    k = s["params"]["kernel"]
    return {"features": k[-1]}, (_resized(args[0], {-1: k[0]}),)


def _dense_general(m, s, args):
    k = s["params"]["kernel"]
    axis = (m.axis,) if isinstance(m.axis, int) else tuple(m.axis)
    x = args[0]
    sizes = {a % len(x.shape): k[i] for i, a in enumerate(axis)}
    features = tuple(k[len(axis) :])
    if isinstance(m.features, int):
        (features,) = features
    return {"features": features}, (_resized(x, sizes),)


def _conv(m, s, args):
    k = s["params"]["kernel"]
    return {"features": k[-1]}, (_resized(args[0], {-1: k[-2] * m.feature_group_count}),)


def _embed(m, s, args):
    e = s["params"]["embedding"]
    ids = _first(args, jax.ShapeDtypeStruct((1,), jnp.int32))
    return {"num_embeddings": e[0], "features": e[1]}, (ids,)


def _norm(m, s, args):
    p = s.get("params", {})
    width = (p.get("scale") or p.get("bias") or (None,))[-1]
    stats = s.get("batch_stats", {}).get("mean")
    width = width if width is not None else (stats[-1] if stats else args[0].shape[-1])
    return {}, (_resized(args[0], {-1: width}),)


def _attention(m, s, args):
    p = s["params"]
    q = p["query"]["kernel"]
    fields = {
        "num_heads": q[-2],
        "qkv_features": q[-2] * q[-1],
        "out_features": p["out"]["kernel"][-1],
    }
    inputs_q = _resized(args[0], {-1: q[0]})
    if isinstance(m, nn.SelfAttention):
        return fields, (inputs_q,)
    inputs_k = args[1] if len(args) > 1 and args[1] is not None else args[0]
    inputs_v = args[2] if len(args) > 2 and args[2] is not None else inputs_k
    inputs_k = _resized(inputs_k, {-1: p["key"]["kernel"][0]})
    inputs_v = _resized(inputs_v, {-1: p["value"]["kernel"][0]})
    return fields, (inputs_q, inputs_k, inputs_v)


#: flax's own layers and how their pruned shapes set their constructor fields.
FIELDS: dict[type, Any] = {
    nn.Dense: _dense,
    nn.DenseGeneral: _dense_general,
    nn.Conv: _conv,
    nn.ConvTranspose: _conv,
    nn.Embed: _embed,
    nn.LayerNorm: _norm,
    nn.RMSNorm: _norm,
    nn.BatchNorm: _norm,
    nn.MultiHeadDotProductAttention: _attention,
    nn.SelfAttention: _attention,
}


@dataclasses.dataclass(frozen=True)
class Narrowed:
    """One captured submodule of a rewritten linen model.

    Attributes:
      path: its path (``"Block_0/MultiHeadDotProductAttention_0"``).
      module: the unbound clone with its narrowed fields, or None when it could not be built.
      changes: ``((field, old, new), ...)``, the fields the rewrite changed.
      error: why ``module`` is None (class, path and shapes), else ``""``.
    """

    path: str
    module: Any
    changes: tuple = ()
    error: str = ""

    def line(self) -> str:
        """The report line: ``"Attention_0: num_heads 4 -> 2, qkv_features 8 -> 4"``."""
        return f"{self.path}: " + ", ".join(f"{f} {a} -> {b}" for f, a, b in self.changes)


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


def _subtree(variables, path):
    out = {}
    for col, tree in variables.items():
        node = tree
        for name in path:
            if not isinstance(node, dict) or name not in node:
                node = None
                break
            node = node[name]
        if node is not None:
            out[col] = node
    return out


def _capture(apply, variables, args, kwargs):
    """``{path: (module, abstract positional args of its first __call__)}``, in call order."""
    seen: dict[tuple, list] = {}

    def interceptor(next_fun, a, kw, context):
        m = context.module
        path = tuple(m.scope.path) if m.scope is not None else ()
        if path:
            entry = seen.setdefault(path, [m, None])
            if context.method_name == "__call__" and entry[1] is None:
                entry[1] = jax.tree.map(
                    lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype) if hasattr(v, "shape") else v,
                    tuple(a),
                )
        return next_fun(*a, **kw)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda v, *a: apply(v, *a, **kwargs), variables, *args)
    return seen


def _verify(clone, args, want, kwargs):
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(0)}
    try:
        got = jax.eval_shape(lambda *a: clone.init(rngs, *a, **kwargs), *args)
    except Exception:  # the clone's own checks refuse these shapes: it does not verify
        return False
    got = {c: _shapes(got[c]) for c in want if c in got}
    return got == want


def _narrow(path, m, args, old, new) -> Narrowed:
    name = "/".join(path)
    fn = FIELDS.get(type(m))
    where = f"{type(m).__name__} at {name!r} (its variables' shapes {old} -> {new})"
    if fn is None:
        return Narrowed(
            name,
            None,
            error=f"{where}: not a layer whose fields jaxprune can narrow; the "
            f"narrowed flax layers are {', '.join(sorted(c.__name__ for c in FIELDS))}",
        )
    if args is None and fn is not _embed:
        return Narrowed(name, None, error=f"{where}: its __call__ was not seen in the trace")
    try:
        before, _ = fn(m, old, args)
        after, init_args = fn(m, new, args)
    except (KeyError, IndexError, TypeError) as e:
        return Narrowed(name, None, error=f"{where}: its variables are not the layer's ({e!r})")
    changes = tuple((f, before[f], after[f]) for f in after if before[f] != after[f])
    kwargs = {"use_running_average": True} if isinstance(m, nn.BatchNorm) else {}
    for fields in ({f: b for f, _, b in changes}, after):  # the changed fields, else every one
        clone = m.clone(parent=None, name=None, **fields)
        if _verify(clone, init_args, new, kwargs):
            return Narrowed(name, clone, changes)
    return Narrowed(
        name, None, error=f"{where}: a clone with {after} does not initialize to these shapes"
    )


def narrowed_submodules(model, variables, new_variables, args, kwargs) -> tuple[Narrowed, ...]:
    """Every submodule of a linen ``model`` called on ``args``, rebuilt for ``new_variables``.

    Args:
      model: the original linen Module.
      variables: its variables.
      new_variables: the rewritten variables (same nesting, narrower leaves).
      args: the call's arguments; kwargs: its keywords (``model.apply``'s).

    Returns:
      One :class:`Narrowed` per submodule path, in call order: the original's clone where no
      variable under it changed, the narrowed clone for a layer of :data:`FIELDS`, else None
      with the reason.
    """
    out = []
    for path, (m, a) in _capture(model.apply, variables, args, kwargs).items():
        old = _shapes(_subtree(variables, path))
        new = _shapes(_subtree(new_variables, path))
        if old == new:
            out.append(Narrowed("/".join(path), m.clone(parent=None, name=None)))
        else:
            out.append(_narrow(path, m, a, old, new))
    return tuple(out)
