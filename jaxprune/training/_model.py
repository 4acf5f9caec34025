"""A user's model as training sees it: trainable params, every other variable, a train flag, RNGs.

Built on :func:`jaxprune.graph._adapters.as_model` (which decides the kind); this adds what
training needs and the graph does not: initialization from a key, the split of the variables
into *params* (differentiated) and *state* (every other collection: BatchNorm statistics, RNG
counters, LW slots...), a ``train`` flag and per-step RNGs.

* **flax.linen** module + variables (or None): ``init(key, x)`` is ``model.init``; in training
  the collections named by ``mutable`` (default: every non-``params`` collection) are updated
  (``model.apply(..., mutable=[...])``) and each name in ``rngs`` (default ``("dropout",)``)
  gets a key (the step key itself for one stream, else a split of it); the ``train`` keyword
  (flax examples' convention, name set by ``train_kw``) is passed when ``__call__`` takes it.
* **flax.nnx** module: ``nnx.split(model, nnx.Param, ...)``; training calls ``model.train()``,
  evaluation ``model.eval()``, and every RNG stream is reseeded from the step key
  (``nnx.reseed``), so dropout differs per step and per seed. BatchNorm statistics are state.
* **equinox** module: params are its floating-point arrays (``eqx.partition``), state its
  other arrays; ``eqx.nn.inference_mode`` switches train/eval and ``key=`` is passed to a
  ``__call__`` that accepts it.
* **function** ``f(params, x)`` + params, or an **(init_fn, apply_fn) pair**
  (``init_fn(key, x) -> params``, ``apply_fn(params, x)``): every leaf is trainable; ``train``
  and ``key`` keywords are passed when the function accepts them.

NNX, equinox and plain-function models have no way to draw new initial weights from a key, so
every seed starts from the variables given (pass ``params=`` with a seed axis to vary them).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxprune.graph._adapters import as_model
from jaxprune.graph._rewritten import RewriteSpec

__all__ = ["TrainModel", "training_model"]


@dataclasses.dataclass(frozen=True, eq=False)
class TrainModel:
    """A model split into ``params`` (trained) and ``state`` (every other variable).

    Attributes:
      kind: ``"linen"``, ``"nnx"``, ``"equinox"``, ``"function"`` or ``"pair"``.
      model: what the user passed.
      params, state: the initial split (pytrees of arrays; ``state`` may be ``{}``).
      init: ``init(key, x1) -> (params, state)``, or None when the kind cannot draw weights.
      apply: ``apply(params, state, x, *, train, key) -> (output, new_state)``, pure.
      variables: ``variables(params, state)`` -> the user's own variables form.
      signature: the call this adapter makes, for error messages.
    """

    kind: str
    model: Any
    params: Any
    state: Any
    init: Callable | None
    apply: Callable
    variables: Callable
    signature: str
    options: tuple = ()  # what, besides ``model``, shapes ``apply`` (cache key for programs)

    def cache_key(self) -> tuple:
        """Equal for two adapters whose ``init``/``apply`` are the same functions.

        Values of ``params``/``state`` are not part of it: trainers pass them as arguments.
        """
        return (self.kind, self.model, self.options)

    def fingerprint(self) -> dict[str, str]:
        """``{"model": ..., "variables": ...}``: the model's structure and options without
        memory addresses, and a digest of the given variables (see ``_fingerprint``)."""
        from jaxprune.training._fingerprint import model_fields

        return model_fields(self)


def _call_of(model):
    """The call whose signature decides the keywords: a rewritten model (``jp.prune_units``,
    ``jp.collapse``, ...) forwards its keywords to the original model, so ask the original."""
    spec = getattr(model, "spec", None)
    if isinstance(spec, RewriteSpec):
        return _call_of(spec.model)
    return model if not callable(model) or inspect.isfunction(model) else model.__call__


def _accepts(fn, name: str | None) -> bool:
    if name is None:
        return False
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _linen(model, variables, train_kw, mutable, rngs) -> TrainModel:
    from flax.core import unfreeze

    pass_train = _accepts(_call_of(model), train_kw)
    rng_names = tuple(rngs)

    def split(v):
        v = dict(unfreeze(v))
        if "params" not in v:
            v = {"params": v}
        return v["params"], {c: a for c, a in v.items() if c != "params"}

    def init(key, x1):
        kw = {train_kw: False} if pass_train else {}
        streams = {n: jax.random.fold_in(key, i + 1) for i, n in enumerate(rng_names)}
        v = model.init({"params": key, **streams}, x1, **kw)  # params: as model.init(key, x1)
        return split(v)

    if variables is None:
        params, state = None, None
    else:
        params, state = split(as_model(model, variables).variables)
    names = None if mutable is None else tuple(mutable)
    if names is not None and state is not None:
        absent = [c for c in names if c not in state]
        if absent:
            raise ValueError(
                f"mutable: collection(s) {absent} named but absent from the variables "
                f"(present: {sorted(['params', *state])})"
            )

    def apply(params, state, x, *, train, key=None):
        kw = {train_kw: train} if pass_train else {}
        cols = [c for c in state if c != "params"] if names is None else list(names)
        if train and key is not None and rng_names:
            ks = [key] if len(rng_names) == 1 else list(jax.random.split(key, len(rng_names)))
            kw["rngs"] = dict(zip(rng_names, ks, strict=True))
        if train and cols:
            out, updated = model.apply({"params": params, **state}, x, mutable=cols, **kw)
            return out, {**state, **unfreeze(updated)}
        return model.apply({"params": params, **state}, x, **kw), state

    sig = f"{type(model).__name__}.apply(variables, x" + (
        f", {train_kw}=bool" if pass_train else ""
    )
    return TrainModel(
        "linen",
        model,
        params,
        state,
        init,
        apply,
        lambda p, s: {"params": p, **s},
        sig + ", rngs=..., mutable=[...])",
        (train_kw, names, rng_names),
    )


def _nnx(model, variables) -> TrainModel:
    from flax import nnx

    if variables is not None:
        adapter = as_model(model, variables)
        model = adapter.rebuild(adapter.variables)[0]
    graphdef, p_state, s_state = nnx.split(model, nnx.Param, ...)
    params, state = nnx.to_pure_dict(p_state), nnx.to_pure_dict(s_state)
    rng_keys = nnx.split(model, nnx.RngKey, ...)[1]
    streams = sorted({str(v.tag) for _, v in nnx.to_flat_state(rng_keys)})

    def merged(p, s):
        ps, ss = nnx.State(p_state), nnx.State(s_state)
        nnx.replace_by_pure_dict(ps, p)
        nnx.replace_by_pure_dict(ss, s)
        return nnx.merge(graphdef, ps, ss)

    def apply(p, s, x, *, train, key=None):
        m = merged(p, s)
        m.train() if train else m.eval()
        if train and key is not None and streams:
            ks = jax.random.split(key, len(streams))
            nnx.reseed(m, **{n: ks[i] for i, n in enumerate(streams)})
        out = m(x)
        return out, nnx.to_pure_dict(nnx.split(m, nnx.Param, ...)[2])

    def to_vars(p, s):
        return {"params": p, "state": s}

    return TrainModel(
        "nnx", model, params, state, None, apply, to_vars, f"{type(model).__name__}(x)"
    )


def _equinox(model, variables, train_kw) -> TrainModel:
    import equinox as eqx

    adapter = as_model(model, variables)
    arrays, static = eqx.partition(adapter.rebuild(adapter.variables)[0], eqx.is_array)
    params, state = eqx.partition(arrays, eqx.is_inexact_array)
    pass_key = _accepts(_call_of(model), "key")
    pass_train = _accepts(_call_of(model), train_kw)

    def apply(p, s, x, *, train, key=None):
        m = eqx.nn.inference_mode(eqx.combine(p, s, static), value=not train)
        kw = {train_kw: train} if pass_train else {}
        if pass_key:
            kw["key"] = key if train else None
        return m(x, **kw), s

    return TrainModel(
        "equinox",
        model,
        params,
        state,
        None,
        apply,
        lambda p, s: eqx.combine(p, s, static),
        f"{type(model).__name__}(x" + (", key=key" if pass_key else "") + ")",
        (train_kw,),
    )


def _function(fn, params, init_fn, train_kw) -> TrainModel:
    pass_key = _accepts(_call_of(fn), "key")
    pass_train = _accepts(_call_of(fn), train_kw)

    def apply(p, s, x, *, train, key=None):
        kw = {train_kw: train} if pass_train else {}
        if pass_key:
            kw["key"] = key
        return fn(p, x, **kw), s

    init = None if init_fn is None else (lambda key, x1: (init_fn(key, x1), {}))
    if params is not None:
        params = as_model(fn, params).variables
    return TrainModel(
        "function" if init_fn is None else "pair",
        fn,
        params,
        {} if params is not None else None,
        init,
        apply,
        lambda p, s: p,
        f"{getattr(fn, '__name__', 'apply_fn')}(params, x)",
        (train_kw, init_fn),
    )


def training_model(
    model,
    variables=None,
    *,
    train_kw: str | None = "train",
    mutable: Sequence[str] | None = None,
    rngs: Sequence[str] = ("dropout",),
) -> TrainModel:
    """Wraps any supported model for training (see the module docstring).

    Args:
      model: a linen/NNX/equinox module, ``f(params, x)``, an ``(init_fn, apply_fn)`` pair or a
        :class:`TrainModel` (returned as is).
      variables: linen variables (None: drawn by ``init``), NNX state / equinox arrays (None:
        the module's own), or the function's params.
      train_kw: the keyword carrying the train/eval flag (passed only when the call accepts it;
        None never passes it).
      mutable: linen collections updated in training (default: every non-``params`` one).
      rngs: linen RNG stream names fed a fresh key every training step.

    Raises:
      ValueError: a ``mutable`` collection absent from ``variables``; a function without params.
      TypeError: an object that is no supported model.
    """
    if isinstance(model, TrainModel):
        return model
    if isinstance(model, tuple) and len(model) == 2 and all(callable(f) for f in model):
        return _function(model[1], variables, model[0], train_kw)
    if not callable(model):
        raise TypeError(
            "model: expected a flax.linen or flax.nnx Module, an equinox Module, a function "
            f"f(params, x) or an (init_fn, apply_fn) pair, got {type(model).__name__}"
        )
    import flax.linen as nn

    if isinstance(model, nn.Module):
        return _linen(model, variables, train_kw, mutable, rngs)
    try:
        from flax import nnx

        if isinstance(model, nnx.Module):
            return _nnx(model, variables)
    except ImportError:  # pragma: no cover
        pass
    try:
        import equinox as eqx

        if isinstance(model, eqx.Module):
            return _equinox(model, variables, train_kw)
    except ImportError:  # pragma: no cover
        pass
    if variables is None:
        raise ValueError(
            "variables: a function model f(params, x) needs its params; for per-seed "
            "initialization pass an (init_fn, apply_fn) pair"
        )
    return _function(model, variables, None, train_kw)
