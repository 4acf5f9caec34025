"""Descriptions of a training call's configuration that hold no memory address.

A checkpoint stores its configuration as named fields (``model``, ``optimizer``, ``loss``,
``data``, ``batch_size``...); each is a string that is equal for the same configuration in
any process and differs when the run would differ:

* objects (modules, functions, settings) by :func:`describe`: class path and dataclass fields
  recursively, functions by qualified name and the values they close over, arrays by dtype,
  shape and a digest of their bytes; a class or function defined outside the libraries also by
  a digest of its code (its bytecode: another Python version reads as another configuration);
* an optax optimizer by :func:`describe_optimizer`: the jaxpr of one ``update`` on the params'
  shapes, where hyperparameters are literals (``adam(1e-3)``'s ``-0.001``) or constants (an
  array learning rate), and the scalars of its initial state (``inject_hyperparams``' values).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import re
import types
from typing import Any

import jax
import numpy as np

__all__ = ["describe", "describe_optimizer", "digest", "model_fields", "run_fields", "shapes"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_DIMS = re.compile(r"\[[\d,]+\]")  # f32[8,3] in a jaxpr's types
_SIZES = re.compile(r"(?<=shape|sizes)=\([\d, ]*\)")  # broadcast_in_dim[shape=(8, 3)]
# functions of these packages are named, not hashed: their code changes with the version
_LIBRARIES = {
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "equinox",
    "haiku",
    "numpy",
    "jaxprune",
    "builtins",
    "functools",
    "operator",
    "math",
}
_DEPTH = 32  # nesting of a model's fields and closures; cycles are cut apart


def digest(*trees: Any) -> str:
    """The first 16 hex digits of a SHA-256 of the trees' structures, dtypes, shapes and bytes.

    >>> import numpy as np
    >>> digest({"w": np.zeros(2)}) == digest({"w": np.zeros(2)}) != digest({"w": np.ones(2)})
    True
    """
    h = hashlib.sha256()
    for tree in trees:
        leaves, treedef = jax.tree.flatten(tree)
        h.update(_ADDRESS.sub("", str(treedef)).encode())  # static fields (eqx) may be functions
        for a in leaves:
            if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
                a = jax.random.key_data(a)
            a = np.ascontiguousarray(np.asarray(a))
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def shapes(tree: Any, drop: int = 0) -> str:
    """``path dtype[shape]`` of every leaf, without the first ``drop`` axes (a seed axis).

    >>> import numpy as np
    >>> shapes({"Dense_0": {"kernel": np.zeros((2, 3), np.float32)}})
    'Dense_0/kernel float32[2,3]'
    """
    out = []
    for path, a in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        dims = ",".join(str(d) for d in np.shape(a)[drop:])
        out.append(f"{name} {a.dtype if hasattr(a, 'dtype') else type(a)}[{dims}]")
    return "; ".join(out)


def _array(a) -> str:
    return f"{a.dtype}[{','.join(str(d) for d in np.shape(a))}]"


def _qualified(obj) -> str:
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _code_digest(code: types.CodeType) -> str:
    h = hashlib.sha256()

    def add(c):
        h.update(c.co_code)
        h.update(repr(c.co_names).encode())
        for k in c.co_consts:
            if isinstance(k, types.CodeType):
                add(k)
            else:
                h.update(_ADDRESS.sub("", repr(k)).encode())

    add(code)
    return h.hexdigest()[:12]


def _user_code(obj) -> bool:
    module = getattr(obj, "__module__", None)
    return module is None or module.split(".")[0] not in _LIBRARIES


def _class_name(cls: type) -> str:
    """The class path, and for a class defined outside the libraries a digest of the code of
    its methods and of its user-defined bases' (an edited ``__call__`` is another model)."""
    h = hashlib.sha256()
    for klass in cls.__mro__:
        if klass is object or not _user_code(klass):
            continue
        for name, member in sorted(vars(klass).items()):
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, property):
                member = member.fget
            member = inspect.unwrap(member) if callable(member) else member
            if isinstance(member, types.FunctionType):
                h.update(f"{klass.__qualname__}.{name}:{_code_digest(member.__code__)}".encode())
    code = h.hexdigest()[:12] if _user_code(cls) else ""
    return _qualified(cls) + (f"#{code}" if code else "")


def _is_linen(obj) -> bool:
    try:
        import flax.linen as nn
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, nn.Module)


def _is_nnx(obj) -> bool:
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, (nnx.Module, nnx.Variable, nnx.Rngs, nnx.RngStream))


def describe(obj: Any) -> str:
    """A description of ``obj`` that is equal in every process and holds no memory address.

    Args:
      obj: a model (linen, NNX or equinox module, function), a loss, a setting or a pytree.

    Returns:
      Modules and other dataclasses as ``class.path(field=..., ...)`` recursively (a linen
      module's ``parent`` left out); NNX modules by their attributes, their variables by type,
      dtype and shape (their values belong to the model's variables); functions by qualified
      name and the values they close over; classes and functions defined outside the
      libraries also by a digest of their code (an edited ``__call__`` is another model);
      arrays as ``dtype[shape]#digest``; anything else by its ``repr`` with memory addresses
      removed.

    >>> import flax.linen as nn
    >>> d = describe(nn.Sequential([nn.Dense(8), nn.relu]))
    >>> d == describe(nn.Sequential([nn.Dense(8), nn.relu])), "0x" in d, "relu" in d
    (True, False, True)
    """
    return _describe(obj, 0, set())


def _describe(obj, depth: int, seen: set) -> str:  # noqa: C901 -- one case per kind
    if depth > _DEPTH:
        return "…"
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return repr(obj)
    if isinstance(obj, enum.Enum):
        return f"{_qualified(type(obj))}.{obj.name}"
    if isinstance(obj, type):
        return _qualified(obj)
    if isinstance(obj, np.dtype):
        return str(obj)
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        a = obj
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a = jax.random.key_data(a)
        dims = ",".join(str(d) for d in np.shape(a))
        return f"{np.asarray(a).dtype}[{dims}]#{digest(a)}"
    if id(obj) in seen:
        return "<cycle>"
    seen = seen | {id(obj)}
    sub = functools.partial(_describe, depth=depth + 1, seen=seen)
    if isinstance(obj, functools.partial):
        args = [sub(obj.func), *map(sub, obj.args)]
        args += [f"{k}={sub(v)}" for k, v in sorted(obj.keywords.items())]
        return f"partial({', '.join(args)})"
    if isinstance(obj, types.FunctionType):
        out = _qualified(obj)
        if _user_code(obj):
            out += f"#{_code_digest(obj.__code__)}"
        extras = []
        if obj.__defaults__:
            extras.append(f"defaults={sub(obj.__defaults__)}")
        if obj.__kwdefaults__:
            extras.append(f"kwdefaults={sub(obj.__kwdefaults__)}")
        if obj.__closure__:
            names = obj.__code__.co_freevars
            cells = []
            for name, cell in zip(names, obj.__closure__, strict=True):
                try:
                    cells.append(f"{name}={sub(cell.cell_contents)}")
                except ValueError:  # an empty cell
                    cells.append(f"{name}=<empty>")
            extras.append(f"closure({', '.join(cells)})")
        return out + (f"[{'; '.join(extras)}]" if extras else "")
    if isinstance(obj, types.MethodType):
        return f"{sub(obj.__self__)}.{obj.__func__.__name__}"
    if isinstance(obj, (types.BuiltinFunctionType, types.ModuleType)):
        return _qualified(obj) if not isinstance(obj, types.ModuleType) else obj.__name__
    wrapped = getattr(obj, "__wrapped__", None)
    if wrapped is not None and callable(obj) and not isinstance(obj, type):
        # jax.custom_jvp (nn.relu), jax.jit-wrapped functions, functools.wraps decorators
        return f"{type(obj).__name__}({sub(wrapped)})"
    if _is_linen(obj):
        fields = [f for f in dataclasses.fields(obj) if f.name != "parent"]
        body = ", ".join(f"{f.name}={sub(getattr(obj, f.name))}" for f in fields)
        return f"{_class_name(type(obj))}({body})"
    if _is_nnx(obj):
        from flax import nnx

        if isinstance(obj, nnx.Variable):
            value = obj.get_value() if hasattr(obj, "get_value") else obj.value
            dims = ",".join(str(d) for d in np.shape(value))
            dtype = getattr(value, "dtype", type(value).__name__)
            return f"{type(obj).__name__}({dtype}[{dims}])"
        items = sorted((k, v) for k, v in vars(obj).items() if "__" not in k)
        body = ", ".join(f"{k}={sub(v)}" for k, v in items)
        return f"{_class_name(type(obj))}({body})"
    if dataclasses.is_dataclass(obj):  # equinox modules, flax structs, user configs
        fields = dataclasses.fields(obj)
        body = ", ".join(f"{f.name}={sub(getattr(obj, f.name, None))}" for f in fields)
        return f"{_class_name(type(obj))}({body})"
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple
        body = ", ".join(f"{k}={sub(v)}" for k, v in zip(obj._fields, obj, strict=True))
        return f"{_qualified(type(obj))}({body})"
    if isinstance(obj, (tuple, list)):
        body = ", ".join(sub(v) for v in obj)
        return f"({body})" if isinstance(obj, tuple) else f"[{body}]"
    if isinstance(obj, (dict, types.MappingProxyType)) or (
        hasattr(obj, "items") and hasattr(obj, "keys") and hasattr(obj, "__getitem__")
    ):
        items = sorted(obj.items(), key=lambda kv: repr(kv[0]))
        return "{" + ", ".join(f"{sub(k)}: {sub(v)}" for k, v in items) + "}"
    if isinstance(obj, (set, frozenset)):
        return "{" + ", ".join(sorted(sub(v) for v in obj)) + "}"
    if _user_code(type(obj)) and isinstance(getattr(obj, "__dict__", None), dict):
        # a user's object (a callable loss with a weight): its attributes, whatever its repr
        items = sorted(vars(obj).items())
        body = ", ".join(f"{k}={sub(v)}" for k, v in items)
        return f"{_class_name(type(obj))}({body})"
    return f"{_qualified(type(obj))}:{_ADDRESS.sub('', repr(obj))}"


def _literals(jaxpr, out: list) -> None:
    from jax.extend import core

    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if isinstance(v, core.Literal):
                out.append(v.val)
        for p in eqn.params.values():
            for q in p if isinstance(p, (tuple, list)) else (p,):
                if isinstance(q, core.ClosedJaxpr):
                    _literals(q.jaxpr, out)
                elif isinstance(q, core.Jaxpr):
                    _literals(q, out)
    out.extend(v.val for v in jaxpr.outvars if isinstance(v, core.Literal))


def _number(v) -> str:
    a = np.asarray(v)
    if a.size != 1:
        return f"{a.dtype}[{','.join(map(str, a.shape))}]"
    v = a.item()
    return repr(float(f"{v:.6g}")) if isinstance(v, float) else str(v)


def describe_optimizer(optimizer, params: Any, opt_state: Any, *, batched: bool = False) -> str:
    """A description of an optax optimizer and its hyperparameters, equal in every process.

    Traces one ``optimizer.update(grads, opt_state, params)`` on the shapes of ``params`` and
    ``opt_state`` (nothing is computed) and describes its jaxpr: the distinct literals in order
    (the hyperparameters written into the update: ``adam(1e-3)`` multiplies by ``-0.001``; a
    schedule's values), a digest of the jaxpr's text without array sizes (the params' shapes
    are described apart) and of its constants (an array learning rate), and the scalars of
    ``opt_state`` (``inject_hyperparams`` keeps its hyperparameters
    there).

    Args:
      optimizer: an ``optax.GradientTransformation``.
      params: one run's params (arrays or ``jax.ShapeDtypeStruct``).
      opt_state: the optimizer state for them (e.g. ``optimizer.init(params)``).
      batched: ``params`` and ``opt_state`` have a leading seed axis (the first run's are
        described).

    Returns:
      ``"literals [...]; state [...]; jaxpr <digest>"``.

    >>> import jax.numpy as jnp, optax
    >>> p = {"w": jnp.zeros(3)}
    >>> a = describe_optimizer(optax.sgd(1e-3), p, optax.sgd(1e-3).init(p))
    >>> b = describe_optimizer(optax.sgd(1.0), p, optax.sgd(1.0).init(p))
    >>> a != b, "-0.001" in a
    (True, True)
    """
    drop = int(batched)
    spec = (
        lambda t: jax.tree.map(  # noqa: E731
            lambda a: jax.ShapeDtypeStruct(np.shape(a)[drop:], a.dtype), t
        )
    )
    p, s = spec(params), spec(opt_state)
    closed = jax.make_jaxpr(lambda g, s, p: optimizer.update(g, s, p))(p, s, p)
    found: list = []
    _literals(closed.jaxpr, found)
    distinct = list(dict.fromkeys(_number(v) for v in found))
    scalars = []  # one value per run: hyperparameters, step counts
    for path, a in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        if isinstance(a, jax.ShapeDtypeStruct) or np.ndim(a) != drop:
            continue
        dtype = getattr(a, "dtype", None)
        if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            continue
        scalars.append(f"{jax.tree_util.keystr(path)}={_number(np.asarray(a).reshape(-1)[0])}")
    # without array sizes (the params' shapes are a field of their own) and line breaks (the
    # printer wraps long lines where the sizes make them long)
    text = _SIZES.sub("=()", _DIMS.sub("[]", _ADDRESS.sub("", str(closed.jaxpr))))
    text = " ".join(text.split())
    h = hashlib.sha256(text.encode())
    h.update(digest(closed.consts).encode())
    return (
        f"literals [{', '.join(distinct)}]; state [{', '.join(scalars)}]; "
        f"jaxpr {h.hexdigest()[:16]}"
    )


def model_fields(tm) -> dict[str, str]:
    """``model``: the kind, :func:`describe` of the model (an equinox module without its
    arrays) and the adapter's options; ``variables``: a digest of the given variables."""
    model = tm.model
    if tm.kind == "equinox":
        import equinox as eqx

        model = eqx.partition(model, eqx.is_array)[1]
    text = f"{tm.kind} {describe(model)}"
    if tm.options:
        text += f" options {describe(tm.options)}"
    given = "none (drawn by init)" if tm.params is None else digest(tm.params, tm.state)
    return {"model": text, "variables": given}


def run_fields(
    call: str,
    tm,
    initial,
    *,
    optimizer,
    loss,
    data: tuple[Any, Any],
    keys: jax.Array,
    params: Any,
    opt_state: Any,
    **settings: Any,
) -> dict[str, str]:
    """The named fields of a training call's fingerprint.

    Args:
      call: the training function (``"fit"``).
      tm: its :class:`~jaxprune.training._model.TrainModel`.
      initial: the runs' initial ``TrainState`` (a leading seed axis): its shapes and the
        optimizer state the optimizer is described with.
      optimizer, loss, data, keys: as given to the call.
      params, opt_state: the initial params and optimizer state given by the caller, or None.
      **settings: every other setting that shapes the run (``batch_size=128``...), described
        with :func:`describe`.
    """
    x, y = data
    fields = {"call": call, **tm.fingerprint()}
    fields["shapes"] = " | ".join(
        shapes(t, drop=1) for t in (initial.params, initial.state) if jax.tree.leaves(t)
    )
    fields["optimizer"] = describe_optimizer(
        optimizer, initial.params, initial.opt_state, batched=True
    )
    fields["loss"] = loss if isinstance(loss, str) else describe(loss)
    fields["data"] = f"x {_array(x)}, y {_array(y)} #{digest(x, y)}"
    fields["keys"] = f"{np.shape(keys)[0]} keys #{digest(keys)}"
    fields["params"] = "none" if params is None else digest(params)
    fields["opt_state"] = "none" if opt_state is None else digest(opt_state)
    fields.update({k: describe(v) for k, v in settings.items()})
    return fields
