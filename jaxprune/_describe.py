"""Descriptions of objects that hold no memory address: equal in every process for the same
model definition, different when the definition differs.

Shared by the training checkpoints (a run's configuration) and the save/load of rewritten
models (the original model's definition): modules and other dataclasses by class path and
fields recursively, functions by qualified name and the values they close over, arrays by
dtype, shape and a digest of their bytes; a class or function defined outside the libraries
also by a digest of its code (its bytecode: another Python version reads as another
definition).
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

__all__ = ["ADDRESS", "describe", "digest"]

ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
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
        h.update(ADDRESS.sub("", str(treedef)).encode())  # static fields (eqx) may be functions
        for a in leaves:
            if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
                a = jax.random.key_data(a)
            a = np.ascontiguousarray(np.asarray(a))
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


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
                h.update(ADDRESS.sub("", repr(k)).encode())

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
        fields = list(dataclasses.fields(obj))
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
    return f"{_qualified(type(obj))}:{ADDRESS.sub('', repr(obj))}"
