"""Save and load rewritten models without pickling user code.

A rewritten model is the user's original model plus a static description of the rewrite (a
:class:`~jaxprune.graph._rewritten.RewriteSpec`). :func:`save_rewritten` writes one ``.npz``
file holding the description as JSON (without the original model: its structural description
instead) and the variables as plain numpy arrays; :func:`load_rewritten` takes the original
model constructed again by the user, checks that it is the model that was rewritten, and
rebuilds the rewritten model of the user's kind. Nothing is unpickled: the file loads with
``allow_pickle=False`` and names only jaxprune's own classes.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
from typing import Any, BinaryIO

import jax
import numpy as np

from jaxprune._describe import describe
from jaxprune._types import Model, Variables
from jaxprune.graph._adapters import _is_equinox, _is_linen, _is_nnx, as_model, path_str
from jaxprune.graph._rewritten import (
    RewriteSpec,
    _leaf_paths,
    abstract_model,
    build_model,
    held_leaves,
    model_variables,
)
from jaxprune.graph._rewritten_call import PlanCache

__all__ = ["load_rewritten", "save_rewritten"]

FORMAT = "jaxprune.rewritten"
VERSION = 1
_KINDS = {
    "linen": "a flax.linen Module",
    "nnx": "an nnx.Module",
    "equinox": "an eqx.Module",
    "function": "a function f(params, *args)",
}


def _kind(model) -> str | None:
    if _is_linen(model):
        return "linen"
    if _is_nnx(model):
        return "nnx"
    if _is_equinox(model):
        return "equinox"
    return "function" if callable(model) else None


def _abstract(original, kind: str):
    """What a rewrite keeps of ``original`` (see ``abstract_model``) and the structure of its
    own variables (NNX, equinox; None for linen and functions)."""
    if kind in ("nnx", "equinox"):
        adapter = as_model(original, None)
        return abstract_model(adapter), adapter
    return original, None


# -- the description as JSON ----------------------------------------------------------------------
def _structure(tree):
    """A tree of plain containers (dict, list, tuple, None) with leaves ``0`` as JSON, or None
    when it holds other node types (equinox modules)."""
    if tree is None:
        return {"$": "none"}
    if isinstance(tree, int) and not isinstance(tree, bool) and tree == 0:
        return 0
    if type(tree) is dict:
        items = []
        for k, v in tree.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                return None
            sub = _structure(v)
            if sub is None:
                return None
            items.append([k, sub])
        return {"$": "dict", "items": items}
    if type(tree) in (list, tuple):
        subs = [_structure(v) for v in tree]
        if any(s is None for s in subs):
            return None
        return {"$": type(tree).__name__, "items": subs}
    return None


def _unstructure(obj):
    if obj == 0 and not isinstance(obj, dict):
        return 0
    tag = obj["$"]
    if tag == "none":
        return None
    if tag == "dict":
        return {k: _unstructure(v) for k, v in obj["items"]}
    items = [_unstructure(v) for v in obj["items"]]
    return items if tag == "list" else tuple(items)


def _dtype_name(dtype) -> dict:
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return {"key": dtype._impl.name}  # the PRNG implementation's name (threefry2x32)
    return {"dtype": np.dtype(dtype).name}


def _dtype(obj):
    if "key" in obj:
        return jax.eval_shape(lambda: jax.random.key(0, impl=obj["key"])).dtype
    return jax.numpy.dtype(obj["dtype"])


class _Encoder:
    def __init__(self, spec: RewriteSpec):
        self.spec = spec

    def __call__(self, x, where: str):  # noqa: C901 -- one case per kind of value
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, np.generic):
            return {"$": "scalar", **_dtype_name(x.dtype), "value": x.item()}
        if isinstance(x, jax.ShapeDtypeStruct):
            return {"$": "aval", "shape": list(x.shape), **_dtype_name(x.dtype)}
        if isinstance(x, jax.tree_util.PyTreeDef):
            tree = jax.tree.unflatten(x, [0] * x.num_leaves)
            out = _structure(tree)
            if out is None:  # a structure of the user's classes: the original's variables'
                return {"$": "treedef", "original": True, "leaves": x.num_leaves}
            return {"$": "treedef", "tree": out}
        if type(x) is tuple:
            return {"$": "tuple", "items": [self(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if type(x) is list:
            return {"$": "list", "items": [self(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if type(x) is dict and all(isinstance(k, str) for k in x):
            return {"$": "dict", "items": [[k, self(v, f"{where}[{k!r}]")] for k, v in x.items()]}
        if isinstance(x, np.ndarray) and x.dtype.kind in "biuf":
            return {"$": "array", "dtype": x.dtype.name, "shape": list(x.shape), "data": x.tolist()}
        cls = type(x)
        if dataclasses.is_dataclass(x) and cls.__module__.startswith("jaxprune."):
            fields = {}
            for f in dataclasses.fields(x):
                value = getattr(x, f.name)
                if isinstance(value, PlanCache) or not f.init or f.metadata.get("derived"):
                    continue  # a cache of traces, or what is derived from the rest: not saved
                if f.name == "model":
                    if value is not self.spec.model and describe(value) != describe(
                        self.spec.model
                    ):
                        raise ValueError(
                            f"model: the rewrite's {where}.model is not the rewritten model's "
                            "original; it cannot be saved"
                        )
                    fields[f.name] = {"$": "model"}
                    continue
                fields[f.name] = self(value, f"{where}.{f.name}")
            return {"$": "class", "name": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
        raise ValueError(
            f"model: its rewrite description holds a {cls.__module__}.{cls.__qualname__} at "
            f"{where}, which save_rewritten does not know how to write without pickle (use "
            "pickle for this model)"
        )


class _Decoder:
    def __init__(self, model, original_treedef):
        self.model = model
        self.original_treedef = original_treedef

    def __call__(self, obj):  # noqa: C901 -- one case per tag
        if not isinstance(obj, dict):
            return obj
        tag = obj["$"]
        if tag == "model":
            return self.model
        if tag == "scalar":
            return np.asarray(obj["value"], _dtype(obj))[()]
        if tag == "aval":
            return jax.ShapeDtypeStruct(tuple(obj["shape"]), _dtype(obj))
        if tag == "treedef":
            if not obj.get("original"):
                return jax.tree.structure(_unstructure(obj["tree"]))
            treedef = self.original_treedef
            if treedef is None or treedef.num_leaves != obj["leaves"]:
                have = None if treedef is None else treedef.num_leaves
                raise ValueError(
                    f"original: its variables have {have} leaves where the saved model's "
                    f"original had {obj['leaves']}"
                )
            return treedef
        if tag in ("tuple", "list"):
            items = [self(v) for v in obj["items"]]
            return tuple(items) if tag == "tuple" else items
        if tag == "dict":
            return {k: self(v) for k, v in obj["items"]}
        if tag == "array":
            return np.asarray(obj["data"], obj["dtype"]).reshape(obj["shape"])
        if tag == "class":
            module, _, qualname = obj["name"].partition(":")
            if not module.startswith("jaxprune."):
                raise ValueError(f"path: the file names the class {obj['name']!r}, not jaxprune's")
            cls = importlib.import_module(module)
            for part in qualname.split("."):
                cls = getattr(cls, part)
            if not dataclasses.is_dataclass(cls):
                raise ValueError(f"path: the file names {obj['name']!r}, not a jaxprune dataclass")
            return cls(**{k: self(v) for k, v in obj["fields"].items()})
        raise ValueError(f"path: unknown entry {tag!r} in the rewrite description")


def _original_leaves(spec: RewriteSpec) -> tuple[tuple, tuple]:
    """``(paths, avals)`` of the original model's variables: the spec's, or its runner's where
    the rewrite added leaves (``orig_paths``/``orig_avals`` of a PReLU program)."""
    run = spec.runner
    if hasattr(run, "orig_paths") and hasattr(run, "orig_avals"):
        return run.orig_paths, run.orig_avals
    return spec.paths, spec.avals


# -- variables --------------------------------------------------------------------------------
def _leaf_arrays(leaves) -> tuple[dict[str, np.ndarray], list[dict]]:
    arrays, info = {}, []
    for i, leaf in enumerate(leaves):
        entry: dict[str, Any] = {"shape": list(np.shape(leaf))}
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key):
            entry["key"] = str(jax.random.key_impl(leaf))
            a = np.asarray(jax.random.key_data(leaf))
        else:
            a = np.asarray(jax.device_get(leaf))
            entry["dtype"] = a.dtype.name
            if not a.dtype.isbuiltin:  # bfloat16 and other ml_dtypes: their bytes
                a = np.ascontiguousarray(a).view(np.uint8)
        arrays[f"leaf_{i}"] = a
        info.append(entry)
    return arrays, info


def _leaf_values(data, info) -> list:
    out = []
    for i, entry in enumerate(info):
        a = data[f"leaf_{i}"]
        if "key" in entry:
            out.append(jax.random.wrap_key_data(jax.numpy.asarray(a), impl=entry["key"]))
            continue
        dtype = jax.numpy.dtype(entry["dtype"])
        if a.dtype != dtype:
            a = a.view(dtype)
        out.append(jax.numpy.asarray(a.reshape(entry["shape"])))
    return out


# -- the public pair ----------------------------------------------------------------------------
def save_rewritten(
    path: str | os.PathLike | BinaryIO, model: Model, variables: Variables = None
) -> None:
    """Saves a rewritten model and its variables to one file, without pickling user code.

    The file (numpy's ``.npz`` format, written to ``path`` as given) holds the rewrite's
    description as JSON (which channels were kept, which values a collapse or fusion replaced,
    the leaf paths and shapes, the initializer; jaxprune's own classes only), a structural
    description of the original model (its class, fields, functions and, for NNX and
    equinox, variable shapes; no memory addresses) and the variables as plain numpy arrays.
    :func:`load_rewritten` rebuilds the model in another process from the original model
    constructed again. Unlike pickle, this works when the original model itself does not
    pickle (``nn.Sequential([nn.Dense(8), nn.relu, ...])``, ``eqx.nn.MLP``, NNX modules).

    Args:
      path: a file path or a binary file object to write.
      model: a rewritten model, as returned by ``jp.prune_units``, ``jp.collapse``,
        ``jp.fuse``, ``jp.rewrites.swap_relu_for_prelu`` or ``jp.rewrites.fold_linear``.
      variables: its variables: for linen models and functions the variables passed to it;
        for NNX and equinox models ``None`` (the model's own) or the variables returned with
        it.

    Raises:
      TypeError: ``model`` is not a rewritten model.
      ValueError: ``variables`` lack a leaf of the model or have another shape, or the rewrite
        description holds a value this format cannot write (use pickle then).

    >>> import os, tempfile, jax, jax.numpy as jnp, numpy as np, flax.linen as nn, jaxprune as jp
    >>> net = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(2)])  # does not pickle
    >>> x = jnp.ones((3, 5)); v = net.init(jax.random.key(0), x)
    >>> r = jp.prune_units(net, v, {"layers_0": np.array([1, 0, 1, 1], bool)}, x)
    >>> narrow, nv = r.model, r.variables
    >>> path = os.path.join(tempfile.mkdtemp(), "narrow.npz")
    >>> jp.graph.save_rewritten(path, narrow, nv)
    >>> again = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(2)])  # e.g. in a new process
    >>> loaded, lv = jp.graph.load_rewritten(path, again)
    >>> bool(jnp.array_equal(loaded.apply(lv, x), narrow.apply(nv, x)))
    True
    """
    spec = getattr(model, "spec", None)
    if not isinstance(spec, RewriteSpec):
        raise TypeError(
            "model: expected a rewritten model (returned by jp.prune_units, jp.collapse, "
            f"jp.fuse, ...), got {type(model).__name__}"
        )
    if spec.kind in ("linen", "function") and variables is None:
        raise ValueError(
            f"variables: a rewritten {spec.kind} model's variables are passed to it; pass them "
            "(the variables returned with the model), got None"
        )
    leaves = held_leaves(model, variables)
    for p, leaf, aval in zip(_leaf_paths(spec), leaves, spec.new_avals, strict=True):
        if tuple(np.shape(leaf)) != tuple(aval.shape):
            raise ValueError(
                f"variables[{p!r}]: expected shape {tuple(aval.shape)} (the rewritten model's), "
                f"got {tuple(np.shape(leaf))}"
            )
    arrays, info = _leaf_arrays(leaves)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "kind": spec.kind,
        "original": describe(spec.model),
        "spec": _Encoder(spec)(spec, "spec"),
        "leaves": info,
    }
    arrays["header"] = np.asarray(json.dumps(header))
    if hasattr(path, "write"):
        np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        return
    with open(os.fspath(path), "wb") as f:  # as named: np.savez would append ".npz"
        np.savez(f, **arrays)  # type: ignore[arg-type]


def _where(text: str) -> str:
    """The field path (``layers[1].features``) at the end of a partial :func:`describe`."""
    stack: list[list] = []  # per open bracket: ["call", field] or ["items", index]
    quote = None
    for k, ch in enumerate(text):
        if quote:
            quote = None if ch == quote and text[k - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            call = ch == "(" and k > 0 and (text[k - 1].isalnum() or text[k - 1] in "_.#")
            stack.append(["call", None] if call else ["items", 0])
        elif ch in ")]}" and stack:
            stack.pop()
        elif ch == "," and stack:
            stack[-1][1] = stack[-1][1] + 1 if stack[-1][0] == "items" else None
        elif ch == "=" and stack and stack[-1][0] == "call":
            m = re.search(r"(\w+)$", text[:k])
            stack[-1][1] = m.group(1) if m else None
    parts = [f".{v}" if kind == "call" else f"[{v}]" for kind, v in stack if v is not None]
    return "".join(parts).lstrip(".")


def _difference(saved: str, given: str) -> str:
    """Where two descriptions first differ, and excerpts of both there."""
    i = next(
        (k for k, (a, b) in enumerate(zip(saved, given, strict=False)) if a != b),
        min(len(saved), len(given)),
    )
    start = max(0, i - 40)
    where = _where(saved[:i])
    at = f" (at {where})" if where else ""
    return f"{at}: saved …{saved[start : i + 60]}… ; given …{given[start : i + 60]}…"


def load_rewritten(path: str | os.PathLike | BinaryIO, original: Model) -> tuple[Any, Any]:
    """Loads a model saved by :func:`save_rewritten`, rebuilt on the original model.

    ``original`` is the model that was rewritten, constructed again (in this process or
    another): the same class with the same settings (an NNX module in the same train/eval
    mode as when it was rewritten). Its own weights do not matter: the variables are the
    file's. It is checked against the structural description saved with the model; a
    mismatch is an error naming where the two differ.

    Args:
      path: the file written by :func:`save_rewritten` (a path or a binary file object).
      original: the original model: a ``flax.linen`` Module, an ``nnx.Module``, an
        ``eqx.Module`` or the function ``f(params, *args)``.

    Returns:
      ``(model, variables)`` as the rewrite returned them: a linen Module and its variables,
      an NNX or equinox model holding its variables and those variables, or
      ``(apply_fn, params)``.

    Raises:
      TypeError: ``original`` is another kind of model than the saved one's.
      ValueError: ``path`` is not a file written by :func:`save_rewritten`, or ``original``
        differs from the saved model's original (the message names the first difference).

    >>> import io, jax, jax.numpy as jnp, numpy as np, equinox as eqx, jaxprune as jp
    >>> mlp = eqx.nn.MLP(5, 2, 4, 1, key=jax.random.key(0))
    >>> keep = {"layers/0": np.array([1, 1, 0, 1], bool)}
    >>> small = jp.prune_units(mlp, keep, jnp.ones(5)).model
    >>> f = io.BytesIO(); jp.graph.save_rewritten(f, small); _ = f.seek(0)
    >>> loaded, _ = jp.graph.load_rewritten(f, eqx.nn.MLP(5, 2, 4, 1, key=jax.random.key(7)))
    >>> bool(jnp.array_equal(loaded(jnp.ones(5)), small(jnp.ones(5))))
    True
    >>> _ = f.seek(0)
    >>> jp.graph.load_rewritten(f, eqx.nn.MLP(5, 2, 8, 1, key=jax.random.key(7)))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: original: not the model that was rewritten (at layers[0].out_features): ...
    """
    source = path if hasattr(path, "read") else os.fspath(path)
    try:
        data = np.load(source, allow_pickle=False)
        header = json.loads(str(data["header"][()]))
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(
            f"path: not a file written by save_rewritten ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError("path: not a file written by save_rewritten")
    if header.get("version") != VERSION:
        raise ValueError(
            f"path: written in format version {header.get('version')}; this jaxprune reads "
            f"version {VERSION}"
        )
    kind = header["kind"]
    got = _kind(original)
    if got != kind:
        have = _KINDS.get(got or "", type(original).__name__)
        raise TypeError(
            f"original: expected {_KINDS[kind]} (the saved model rewrote one), got {have}"
        )
    model, adapter = _abstract(original, kind)
    given = describe(model)
    if given != header["original"]:
        text = f"original: not the model that was rewritten{_difference(header['original'], given)}"
        if kind == "nnx" and re.search(r"use_running_average|deterministic", text):
            text += "; an NNX module's train/eval mode is part of it (call model.eval() first)"
        raise ValueError(text)
    treedef = None
    if adapter is not None:
        treedef = jax.tree.structure(adapter.variables)
    spec = _Decoder(model, treedef)(header["spec"])
    if not isinstance(spec, RewriteSpec):
        raise ValueError("path: the file holds no rewrite description")
    if adapter is not None:  # the arrays' shapes are part of the structure
        flat, _ = jax.tree_util.tree_flatten_with_path(adapter.variables)
        shapes = {path_str(p): tuple(np.shape(a)) for p, a in flat}
        want = {p: tuple(a.shape) for p, a in zip(*_original_leaves(spec), strict=True)}
        if shapes != want:
            diff = sorted(k for k in set(shapes) | set(want) if shapes.get(k) != want.get(k))
            shown = "; ".join(f"{k}: saved {want.get(k)}, given {shapes.get(k)}" for k in diff[:4])
            raise ValueError(f"original: not the model that was rewritten ({shown})")
    leaves = _leaf_values(data, header["leaves"])
    new = build_model(spec, leaves)
    return new, model_variables(spec, new, leaves)
