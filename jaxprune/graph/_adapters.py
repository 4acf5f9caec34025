"""One view of every kind of model: linen, NNX, equinox and ``f(params, *args)``.

Everything in jaxprune reaches a user's model through :func:`as_model`, which returns a
:class:`ModelAdapter`: a pure ``apply(variables, *args, **kwargs)``, the variables as a plain
pytree, which of their leaves are trainable parameters, and ``rebuild`` to hand back a model of
the same kind.

How each kind is passed (``model, variables``):

* **flax.linen**: the module and its variables (``model.init(...)``: every collection,
  ``params``, ``batch_stats``, ...). A bare ``params`` dict is accepted too and treated as
  ``{"params": params}``. Trainable leaves: the ``params`` collection.
* **flax.nnx**: the module itself, with ``variables=None`` (its state is read with
  ``nnx.split``), or an ``nnx.State`` to use instead of the module's own. Trainable leaves: the
  ``nnx.Param`` variables. Switch the module to evaluation mode (``model.eval()``) before
  tracing if it has BatchNorm or dropout, as you would before calling it.
* **equinox**: the module itself, with ``variables=None`` (its arrays are taken with
  ``eqx.partition(model, eqx.is_array)``). It is called as ``model(*args)``: a module written
  for one example is wrapped by the user (``jax.vmap`` inside its ``__call__``, the usual
  equinox style, or a small wrapper module). Trainable leaves: the floating-point arrays.
* **a function** ``f(params, *args)``: the function and its params pytree. Every leaf is
  trainable.

Leaf paths are ``/``-joined keys (``"params/Dense_0/kernel"``, ``"layers/0/weight"``).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "ModelAdapter",
    "as_model",
    "check_model_kwargs",
    "holds_state",
    "path_str",
    "state_args",
    "takes_model",
]


def _key_str(k) -> str:
    if isinstance(k, jax.tree_util.DictKey):
        return str(k.key)
    if isinstance(k, jax.tree_util.SequenceKey):
        return str(k.idx)
    if isinstance(k, jax.tree_util.GetAttrKey):
        return str(k.name)
    if isinstance(k, jax.tree_util.FlattenedIndexKey):
        return str(k.key)
    return str(k)


def check_model_kwargs(model_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments of the model's own call as a dict (``None``: none).

    Every function that calls a user's model takes them in this one argument,
    ``model_kwargs={"train": False}``, so they never mix with the function's own options.

    Raises:
      TypeError: ``model_kwargs`` is not a mapping with string keys.
    """
    if model_kwargs is None:
        return {}
    if not isinstance(model_kwargs, Mapping) or not all(isinstance(k, str) for k in model_kwargs):
        raise TypeError(
            "model_kwargs: expected a mapping of the model call's keyword arguments "
            f'(e.g. {{"train": False}}), got {type(model_kwargs).__name__}'
        )
    return dict(model_kwargs)


def path_str(path: Sequence[Any]) -> str:
    """``/``-joined string of a ``jax.tree_util`` key path."""
    return "/".join(_key_str(k) for k in path)


@dataclasses.dataclass(frozen=True, eq=False)
class ModelAdapter:
    """A user's model seen as a pure function of a variables pytree.

    Attributes:
      kind: ``"linen"``, ``"nnx"``, ``"equinox"`` or ``"function"``.
      model: what the user passed.
      variables: the variables as a pytree of arrays (for NNX a pure dict of the state).
      apply: ``apply(variables, *args, **kwargs)``, pure.
      trainable: a function ``leaf path -> bool`` (is this leaf a trainable parameter?).
      rebuild: ``rebuild(variables) -> (model, variables)`` in the user's own kind.
      param_prefix: the path prefix of the trainable collection (``"params"`` for linen, else
        ``""``); unit and layer names drop it.
      training: NNX: the submodules in training mode (``"drop: nnx.Dropout"``, active dropout
        or BatchNorm using batch statistics); empty for the other kinds.
    """

    kind: str
    model: Any
    variables: Any
    apply: Callable[..., Any]
    trainable: Callable[[str], bool]
    rebuild: Callable[[Any], tuple[Any, Any]]
    param_prefix: str = ""
    training: tuple[str, ...] = ()

    def check_eval_mode(self) -> None:
        """Raises ``ValueError`` naming the NNX submodules left in training mode.

        The layer graph, its analyses and rewrites read a model as it predicts: dropout
        masks drawn from an RNG stream and batch statistics are not fixed weights.
        """
        if self.training:
            raise ValueError(
                f"model: the NNX module {type(self.model).__name__} is in training mode "
                f"({', '.join(self.training)}); call model.eval() before tracing, analysing or "
                "rewriting it (model.train() switches it back for training)"
            )

    def leaves(self, variables=None) -> dict[str, jax.Array]:
        """``{leaf path: array}`` in flattening order."""
        variables = self.variables if variables is None else variables
        flat, _ = jax.tree_util.tree_flatten_with_path(variables)
        return {path_str(p): v for p, v in flat}

    def short(self, path: str) -> str:
        """A leaf path without the trainable collection's prefix (``params/``)."""
        pre = self.param_prefix + "/" if self.param_prefix else ""
        return path[len(pre) :] if pre and path.startswith(pre) else path


def _is_linen(model) -> bool:
    import flax.linen as nn

    return isinstance(model, nn.Module)


def _is_nnx(model) -> bool:
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, nnx.Module)


def _is_equinox(model) -> bool:
    try:
        import equinox as eqx
    except ImportError:
        return False
    return isinstance(model, eqx.Module)


def _check_arrays(variables, arg: str) -> None:
    flat, _ = jax.tree_util.tree_flatten_with_path(variables)
    for p, v in flat:
        if not isinstance(v, (jax.Array, jnp.ndarray)) and not hasattr(v, "shape"):
            raise TypeError(f"{arg}[{path_str(p)!r}]: expected an array, got {type(v).__name__}")


def _collection(e) -> str:
    m = re.search(r'collection "([^"]+)"', str(e))
    return m.group(1) if m else "?"


def _first_line(e) -> str:
    return str(e).split(" (https://", 1)[0].splitlines()[0]


def _linen(model, variables) -> ModelAdapter:
    from flax.core import FrozenDict, unfreeze

    if variables is None:
        raise ValueError(
            f"variables: a flax.linen {type(model).__name__} needs its variables "
            "(model.init(key, x)), got None"
        )
    if isinstance(variables, FrozenDict):
        variables = unfreeze(variables)
    if not isinstance(variables, Mapping):
        raise TypeError(
            f"variables: expected the dict returned by {type(model).__name__}.init, "
            f"got {type(variables).__name__}"
        )
    variables = dict(variables)
    if "params" not in variables and variables:
        # A bare params dict: every top-level key is a submodule name, not a collection.
        variables = {"params": variables}
    _check_arrays(variables, "variables")

    def apply(v, *args, **kwargs):
        import flax.errors

        try:
            return model.apply(v, *args, **kwargs)
        except flax.errors.ModifyScopeVariableError as e:
            raise ValueError(
                f"model_kwargs: this call of {type(model).__name__} updates the collection "
                f"{_collection(e)!r}, which is not mutable ({_first_line(e)}); "
                "a BatchNorm in training mode (train=True) updates its batch_stats: "
                "trace, analyse and rewrite the model in evaluation mode "
                "(model_kwargs={'train': False}), or pass "
                "model_kwargs={'mutable': ['batch_stats']} to trace a training call"
            ) from e
        except flax.errors.ScopeCollectionNotFound as e:
            raise ValueError(
                f"variables: {type(model).__name__} reads the collection {_collection(e)!r}, "
                f"which the variables lack ({_first_line(e)}); "
                "pass every collection model.init(key, x) returns, "
                "e.g. {'params': ..., 'batch_stats': ...} (a bare params dict is taken as "
                "{'params': params} only for a model with no other collections)"
            ) from e

    return ModelAdapter(
        kind="linen",
        model=model,
        variables=variables,
        apply=apply,
        trainable=lambda path: path.split("/", 1)[0] == "params",
        rebuild=lambda v: (model, v),
        param_prefix="params",
    )


def _nnx(model, variables) -> ModelAdapter:
    from flax import nnx

    graphdef, state = nnx.split(model)
    if variables is not None:
        if not isinstance(variables, (nnx.State, Mapping)):
            raise TypeError(
                f"variables: expected None or an nnx.State for an nnx module, "
                f"got {type(variables).__name__}"
            )
        state = variables if isinstance(variables, nnx.State) else nnx.State(variables)
    pure = nnx.to_pure_dict(state)
    params_state = nnx.split(model, nnx.Param, ...)[1]
    flat_params, _ = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(params_state))
    trainable_paths = frozenset(path_str(p) for p, _ in flat_params)

    def merged(v):
        s = nnx.State(state)  # a copy with the same structure
        nnx.replace_by_pure_dict(s, v)
        return nnx.merge(graphdef, s)

    def apply(v, *args, **kwargs):
        return merged(v)(*args, **kwargs)

    def rebuild(v):
        m = merged(v)
        return m, nnx.to_pure_dict(nnx.state(m))

    return ModelAdapter(
        kind="nnx",
        model=model,
        variables=pure,
        apply=apply,
        trainable=lambda path: path in trainable_paths,
        rebuild=rebuild,
        training=_nnx_training(model),
    )


def _nnx_training(model) -> tuple[str, ...]:
    """``"path: nnx.Kind"`` of each submodule in training mode (active dropout, BatchNorm
    using batch statistics)."""
    from flax import nnx

    out = []
    for path, m in nnx.iter_graph(model):
        name = "/".join(str(p) for p in path) or "<root>"
        if isinstance(m, nnx.Dropout) and not m.deterministic and m.rate > 0:
            out.append(f"{name!r}: nnx.Dropout active")
        elif isinstance(m, nnx.BatchNorm) and not m.use_running_average:
            out.append(f"{name!r}: nnx.BatchNorm using batch statistics")
    return tuple(out)


def _equinox(model, variables) -> ModelAdapter:
    import equinox as eqx

    arrays, static = eqx.partition(model, eqx.is_array)
    if variables is not None:
        if jax.tree.structure(variables) != jax.tree.structure(arrays):  # type: ignore[operator]
            raise ValueError(
                "variables: expected None or the arrays of the equinox module "
                "(eqx.partition(model, eqx.is_array)[0]) with the same structure"
            )
        arrays = variables

    def apply(v, *args, **kwargs):
        try:
            return eqx.combine(v, static)(*args, **kwargs)
        except TypeError as e:
            shapes = [tuple(jnp.shape(a)) for a in jax.tree.leaves(args)]
            if not _looks_per_example(model) or not shapes:
                raise
            raise ValueError(
                f"x: {type(model).__name__} takes one example (equinox's nn layers are "
                f"per-example), got inputs of shapes {shapes} ({e}); trace it at one example "
                "(x[0]), or map it over the batch inside a module: class Batched(eqx.Module): "
                "net: eqx.Module; def __call__(self, x): return jax.vmap(self.net)(x)"
            ) from e

    def rebuild(v):
        return eqx.combine(v, static), v

    flat, _ = jax.tree_util.tree_flatten_with_path(arrays)
    trainable_paths = frozenset(
        path_str(p) for p, a in flat if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact)
    )
    return ModelAdapter(
        kind="equinox",
        model=model,
        variables=arrays,
        apply=apply,
        trainable=lambda path: path in trainable_paths,
        rebuild=rebuild,
    )


def _looks_per_example(model) -> bool:
    """Whether an equinox module is built from equinox's per-example ``nn`` layers."""
    import equinox as eqx

    leaves = jax.tree.leaves(model, is_leaf=lambda m: isinstance(m, eqx.Module) and m is not model)
    mods = [model, *(m for m in leaves if isinstance(m, eqx.Module))]
    return any(type(m).__module__.startswith("equinox.nn") for m in mods)


def _function(fn, params) -> ModelAdapter:
    if params is None:
        raise ValueError("variables: a function model f(params, *args) needs its params, got None")
    _check_arrays(params, "variables")

    def apply(v, *args, **kwargs):
        return fn(v, *args, **kwargs)

    return ModelAdapter(
        kind="function",
        model=fn,
        variables=params,
        apply=apply,
        trainable=lambda path: True,
        rebuild=lambda v: (fn, v),
    )


def holds_state(model) -> bool:
    """Does ``model`` hold its own state (an ``nnx.Module`` or an ``eqx.Module``)?"""
    return not isinstance(model, ModelAdapter) and (_is_nnx(model) or _is_equinox(model))


def state_args(model, variables) -> tuple:
    """The variables as they follow ``model`` in a public call: ``(variables,)`` for linen and
    functions, ``()`` for NNX and equinox modules (they hold their state)."""
    return () if holds_state(model) else (variables,)


def takes_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Makes ``fn(model, variables, ...)`` take NNX and equinox modules without ``variables``.

    Kinds whose state lives outside the model (linen, ``f(params, *args)``, haiku's apply)
    are called ``fn(model, variables, ...)``; NNX and equinox modules hold their state and are
    called ``fn(module, ...)``. Passing ``None`` (or, for NNX, an ``nnx.State``) after such a
    module, or ``variables=``, is a ``TypeError`` saying so.
    """
    name = fn.__name__

    @functools.wraps(fn)
    def call(model, *args, **kwargs):
        if not holds_state(model):
            return fn(model, *args, **kwargs)
        kind = "an nnx.Module" if _is_nnx(model) else "an equinox Module"
        given = "variables" in kwargs or (args and _is_state(args[0]))
        if given:
            raise TypeError(
                f"variables: {kind} holds its own state; call {name}(model, ...) without "
                "variables (drop the None; to use another state, nnx.update the module first)"
            )
        return fn(model, None, *args, **kwargs)

    return call


def _is_state(value) -> bool:
    if value is None:
        return True
    try:
        from flax import nnx

        return isinstance(value, nnx.State)
    except ImportError:  # pragma: no cover
        return False


def as_model(model: Any, variables: Any) -> ModelAdapter:
    """Wraps a user's model (linen, NNX, equinox or ``f(params, *args)``) in one adapter.

    Args:
      model: a ``flax.linen.Module``, a ``flax.nnx.Module``, an ``equinox.Module``, an existing
        :class:`ModelAdapter` (returned as is), or a callable ``f(params, *args)``.
      variables: the linen variables / NNX state (or None) / equinox arrays (or None) / params.

    Returns:
      A :class:`ModelAdapter`.

    Raises:
      TypeError: if ``model`` is none of these kinds or ``variables`` is not a pytree of arrays.
      ValueError: if required variables are missing.

    >>> import jax, jax.numpy as jnp
    >>> m = as_model(lambda p, x: x @ p["w"], {"w": jnp.ones((2, 3))})
    >>> m.kind, list(m.leaves()), m.apply(m.variables, jnp.ones((1, 2))).tolist()
    ('function', ['w'], [[2.0, 2.0, 2.0]])
    """
    if isinstance(model, ModelAdapter):
        return model
    if _is_linen(model):
        return _linen(model, variables)
    if _is_nnx(model):
        return _nnx(model, variables)
    if _is_equinox(model):
        return _equinox(model, variables)
    if callable(model):
        return _function(model, variables)
    raise TypeError(
        "model: expected a flax.linen or flax.nnx Module, an equinox Module or a function "
        f"f(params, *args), got {type(model).__name__}"
    )
