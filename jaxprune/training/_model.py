"""A user's model as training sees it: trainable params, every other variable, a train flag, RNGs.

Built on :func:`jaxprune.graph._adapters.as_model` (which decides the kind); this adds what
training needs and the graph does not: initialization from a key, the split of the variables
into *params* (differentiated) and *state* (every other collection: BatchNorm statistics, RNG
counters, LW slots...), a ``train`` flag and per-step RNGs.

How each model kind is passed, and where a run's initial weights come from:

* **flax.linen** module + variables (or None): ``init(key, x)`` is ``model.init``; in training
  the collections named by ``mutable`` (default: every non-``params`` collection) are updated
  (``model.apply(..., mutable=[...])``) and each name in ``rngs`` (default ``("dropout",)``)
  gets a key (the step key itself for one stream, else a split of it); the ``train`` keyword
  (flax examples' convention, name set by ``train_kw``) is passed when ``__call__`` takes it
  (an ``nn.Sequential`` passes its keywords to its first layer, so that layer decides).
* **flax.nnx** module: ``nnx.split(model, nnx.Param, ...)``; training calls ``model.train()``,
  evaluation ``model.eval()``, and every RNG stream is reseeded from the step key
  (``nnx.reseed``), so dropout differs per step and per seed. BatchNorm statistics are state.
* **equinox** module: params are its floating-point arrays (``eqx.partition``), state its
  other arrays; ``eqx.nn.inference_mode`` switches train/eval and ``key=`` is passed to a
  ``__call__`` that accepts it. It is called on a batch: a module written for one example
  (``eqx.nn.MLP``) is wrapped in one whose ``__call__`` is ``jax.vmap(self.net)(x)``.
* **function** ``f(params, x)`` + params, or an **(init_fn, apply_fn) pair**
  (``init_fn(key, x) -> params``, ``apply_fn(params, x)``): every leaf is trainable; ``train``
  and ``key`` keywords are passed when the function accepts them.
* **haiku** ``hk.transform(f)`` / ``hk.transform_with_state(f)`` (also under
  ``hk.without_apply_rng``), passed as it is: ``init(key, x)`` draws ``params`` (and
  ``state``); ``params`` are differentiated, ``state`` (any dtype: BatchNorm's integer EMA
  counters too) is updated by every training step and read by evaluation; ``apply`` gets a key
  per training step when it takes ``rng`` (None in evaluation); the train flag is passed as
  ``train_kw`` when ``f`` takes it, else as ``is_training`` (haiku's convention) when ``f``
  takes that and ``train_kw`` is left at ``"train"``. Its variables are ``params``, or
  ``(params, state)`` as ``init`` returns them. Haiku is optional: it is recognised by type
  only when the user's program imported it.

**Several inputs.** The ``x`` of a batch is usually one array. A model that takes several
inputs (``__call__(self, src, tgt, train)``) gets them as a tuple ``x = (src, tgt)``: a tuple
is always unpacked into positional inputs (``model.apply(variables, *x, train=...)``,
``f(params, *x)``, ``module(*x)``); any other pytree (a dict) is passed as one input. Every
array of ``x`` shares the leading example axis.

NNX, equinox and plain-function models draw new initial weights from a key only through an
``init_fn(key)`` the user passes (``init_fn(key) -> module`` for NNX and equinox, e.g.
``lambda k: Net(rngs=nnx.Rngs(k))``; ``init_fn(key) -> params`` for a function); the module or
params given then only fix the structure. Several keys with one fixed set of weights (such a
model without ``init_fn``, or any kind with ``variables=``) are refused unless ``same_init=True``
(:func:`check_starts`).
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxprune.graph import as_model
from jaxprune.graph.extend import RewriteSpec

__all__ = [
    "TrainModel",
    "call_error",
    "check_starts",
    "inputs",
    "require_linen",
    "training_model",
]


@dataclasses.dataclass(frozen=True, eq=False)
class TrainModel:
    """A model split into ``params`` (trained) and ``state`` (every other variable).

    Attributes:
      kind: ``"linen"``, ``"nnx"``, ``"equinox"``, ``"function"``, ``"pair"`` or ``"haiku"``.
      model: what the user passed.
      params, state: the initial split (pytrees of arrays; ``state`` may be ``{}``).
      init: ``init(key, x1) -> (params, state)``, or None when the kind cannot draw weights.
      apply: ``apply(params, state, x, *, train, key) -> (output, new_state)``, pure.
      variables: ``variables(params, state)`` -> the user's own variables form; a pure
        restructuring, so it also takes trees with a leading seed axis (results of many runs).
      signature: the call this adapter makes, for error messages.
      options: what, besides ``model``, shapes ``apply`` (part of the cache key of programs).
      train_kw: the keyword that carries the train flag in the call, None when none is passed.
      template: ``(params, state)`` of the module or params given beside a user's ``init_fn``
        (what every draw must look like), else None.
    """

    kind: str
    model: Any
    params: Any
    state: Any
    init: Callable | None
    apply: Callable
    variables: Callable
    signature: str
    options: tuple = ()
    train_kw: str | None = None
    template: Any = None

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


def inputs(x) -> tuple:
    """The positional inputs of a model call: a tuple of inputs is several (the model is called
    as ``model(*x)``), anything else (an array, the common case, or a dict) is one."""
    return x if isinstance(x, tuple) else (x,)


def _call_of(model):
    """The call whose signature decides the keywords: a rewritten model (``jp.prune_units``,
    ``jp.collapse``, ...) forwards its keywords to the original model, so ask the original."""
    spec = getattr(model, "spec", None)
    if isinstance(spec, RewriteSpec):
        return _call_of(spec.model)
    return model if not callable(model) or inspect.isfunction(model) else model.__call__


def _linen_takes(model, name: str | None) -> bool:
    """Whether calling the linen ``model`` with keyword ``name`` reaches code that takes it.

    ``nn.Sequential.__call__(*args, **kwargs)`` hands its keywords to its first layer only, so
    that layer (a module or a function) decides; any other ``**kwargs`` counts as taking it.
    """
    import flax.linen as nn

    spec = getattr(model, "spec", None)
    if isinstance(spec, RewriteSpec):
        return _linen_takes(spec.model, name)
    if isinstance(model, nn.Sequential):
        return bool(model.layers) and _linen_takes(model.layers[0], name)
    if isinstance(model, nn.Module):
        return _accepts(model.__call__, name)
    return _accepts(model, name)


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

    pass_train = _linen_takes(model, train_kw)
    rng_names = tuple(rngs)

    def split(v):
        v = dict(unfreeze(v))
        if "params" not in v:
            v = {"params": v}
        return v["params"], {c: a for c, a in v.items() if c != "params"}

    def init(key, x1):
        kw = {train_kw: False} if pass_train else {}
        streams = {n: jax.random.fold_in(key, i + 1) for i, n in enumerate(rng_names)}
        v = model.init(
            {"params": key, **streams}, *inputs(x1), **kw
        )  # params: as model.init(key, x1)
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
            out, updated = model.apply({"params": params, **state}, *inputs(x), mutable=cols, **kw)
            return out, {**state, **unfreeze(updated)}
        return model.apply({"params": params, **state}, *inputs(x), **kw), state

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
        train_kw if pass_train else None,
    )


def _checked_init(init_fn, kind: str, model):
    """``init_fn(key)``, refused unless it returns a model of ``model``'s type."""

    def call(key):
        fresh = init_fn(key)
        if not isinstance(fresh, type(model)):
            raise TypeError(
                f"init_fn: expected init_fn(key) -> a {kind} module like model "
                f"({type(model).__name__}), got {type(fresh).__name__}"
            )
        return fresh

    return call


def _nnx(model, variables, init_fn) -> TrainModel:
    from flax import nnx

    if variables is not None:
        adapter = as_model(model, variables)
        model = adapter.rebuild(adapter.variables)[0]
    graphdef, p_state, s_state = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
    params: Any = nnx.to_pure_dict(p_state)
    state: Any = nnx.to_pure_dict(s_state)
    template = (params, state)
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
        out = m(*inputs(x))
        return out, nnx.to_pure_dict(nnx.split(m, nnx.Param, ...)[2])

    def to_vars(p, s):
        return {"params": p, "state": s}

    init = None
    if init_fn is not None:
        draw = _checked_init(init_fn, "flax.nnx", model)

        def init(key, x1):
            _, p, s = nnx.split(draw(key), nnx.Param, ...)
            return nnx.to_pure_dict(p), nnx.to_pure_dict(s)

        params = state = None  # the module only gives the structure: every run draws its own

    return TrainModel(
        "nnx",
        model,
        params,
        state,
        init,
        apply,
        to_vars,
        f"{type(model).__name__}(x)",
        (init_fn,),
        template=None if init_fn is None else template,
    )


def _equinox(model, variables, train_kw, init_fn) -> TrainModel:
    import equinox as eqx

    adapter = as_model(model, variables)
    arrays, static = eqx.partition(adapter.rebuild(adapter.variables)[0], eqx.is_array)
    params, state = eqx.partition(arrays, eqx.is_inexact_array)
    template = (params, state)
    pass_key = _accepts(_call_of(model), "key")
    pass_train = _accepts(_call_of(model), train_kw)

    def apply(p, s, x, *, train, key=None):
        m = eqx.nn.inference_mode(eqx.combine(p, s, static), value=not train)
        kw = {train_kw: train} if pass_train else {}
        if pass_key:
            kw["key"] = key if train else None
        return m(*inputs(x), **kw), s

    init = None
    if init_fn is not None:
        draw = _checked_init(init_fn, "equinox", model)

        def init(key, x1):
            return eqx.partition(eqx.filter(draw(key), eqx.is_array), eqx.is_inexact_array)

        params = state = None

    return TrainModel(
        "equinox",
        model,
        params,
        state,
        init,
        apply,
        lambda p, s: eqx.combine(p, s, static),
        f"{type(model).__name__}(x" + (", key=key" if pass_key else "") + ")",
        (train_kw, init_fn),
        train_kw if pass_train else None,
        template=None if init_fn is None else template,
    )


def _function(fn, params, init_fn, train_kw, draw_fn=None) -> TrainModel:
    """``init_fn(key, x1)``: the pair's initializer; ``draw_fn(key)``: the user's ``init_fn``."""
    pass_key = _accepts(_call_of(fn), "key")
    pass_train = _accepts(_call_of(fn), train_kw)

    def apply(p, s, x, *, train, key=None):
        kw = {train_kw: train} if pass_train else {}
        if pass_key:
            kw["key"] = key
        return fn(p, *inputs(x), **kw), s

    init: Callable | None = (
        None if init_fn is None else (lambda key, x1: (init_fn(key, *inputs(x1)), {}))
    )
    if draw_fn is not None:
        init = lambda key, x1: (draw_fn(key), {})  # noqa: E731
    if params is not None:
        params = as_model(fn, params).variables
    template: tuple | None = None if params is None or draw_fn is None else (params, {})
    if draw_fn is not None:
        params = None  # the given params only give the structure
    return TrainModel(
        "function" if init_fn is None else "pair",
        fn,
        params,
        {} if params is not None else None,
        init,
        apply,
        lambda p, s: p,
        f"{getattr(fn, '__name__', 'apply_fn')}(params, x"
        + (f", {train_kw}=bool" if pass_train else "")
        + ")",
        (train_kw, init_fn, draw_fn),
        train_kw if pass_train else None,
        template=template,
    )


def _haiku_kind(model) -> str | None:
    """``"haiku"`` for a ``hk.Transformed``/``hk.TransformedWithState``; haiku is only looked
    up when the program has imported it (it is an optional dependency)."""
    hk = sys.modules.get("haiku")
    if hk is not None and isinstance(model, (hk.Transformed, hk.TransformedWithState)):
        return "haiku"
    return None


def _haiku(model, variables, train_kw) -> TrainModel:
    import haiku as hk

    stateful = isinstance(model, hk.TransformedWithState)
    try:
        names = list(inspect.signature(model.apply).parameters)
    except (TypeError, ValueError) as e:  # pragma: no cover
        raise TypeError(f"model: cannot read the haiku apply function's signature: {e}") from e
    lead = 2 if stateful else 1  # params[, state]
    pass_rng = len(names) > lead and names[lead] == "rng"
    flag = None
    if _accepts(model.apply, train_kw):
        flag = train_kw
    elif train_kw == "train" and _accepts(model.apply, "is_training"):
        flag = "is_training"  # haiku's own convention (hk.BatchNorm, hk.nets)
    fn = getattr(model.apply, "_original_fn", None)
    name = getattr(fn, "__name__", "f")

    def init(key, x1):
        kw = {flag: True} if flag else {}
        out = model.init(key, *inputs(x1), **kw)
        return out if stateful else (out, {})

    def apply(p, s, x, *, train, key=None):
        kw = {flag: train} if flag else {}
        args = (p, s) if stateful else (p,)
        if pass_rng:
            args = (*args, key if train else None)
        if not stateful:
            return model.apply(*args, *inputs(x), **kw), s
        out, new_state = model.apply(*args, *inputs(x), **kw)
        return out, (new_state if train else s)

    params = state = None
    if variables is not None:
        if stateful:
            if not (isinstance(variables, (tuple, list)) and len(variables) == 2):
                raise ValueError(
                    "variables: a haiku transform_with_state model takes (params, state) as its "
                    f"init returns them, got {type(variables).__name__}"
                )
            params, state = variables
        else:
            params, state = variables, {}
    transform = "transform_with_state" if stateful else "transform"
    sig = (
        f"hk.{transform}({name}).apply(params"
        + (", state" if stateful else "")
        + (", rng" if pass_rng else "")
        + ", x"
        + (f", {flag}=bool" if flag else "")
        + ")"
    )
    return TrainModel(
        "haiku",
        model,
        params,
        state,
        init,
        apply,
        (lambda p, s: (p, s)) if stateful else (lambda p, s: p),
        sig,
        (train_kw,),
        flag,
    )


def training_model(
    model,
    variables=None,
    *,
    train_kw: str | None = "train",
    mutable: Sequence[str] | None = None,
    rngs: Sequence[str] = ("dropout",),
    init_fn: Callable | None = None,
) -> TrainModel:
    """Wraps any supported model for training (see the module docstring).

    Args:
      model: a linen/NNX/equinox module, ``f(params, x)``, an ``(init_fn, apply_fn)`` pair, a
        haiku ``hk.transform``/``hk.transform_with_state`` or a :class:`TrainModel` (returned
        as is).
      variables: linen variables (None: drawn by ``init``), NNX state / equinox arrays (None:
        the module's own), the function's params, or haiku ``params`` / ``(params, state)``
        (None: drawn by its ``init``).
      train_kw: the keyword carrying the train/eval flag (passed only when the call accepts it;
        None never passes it).
      mutable: linen collections updated in training (default: every non-``params`` one).
      rngs: linen RNG stream names fed a fresh key every training step.
      init_fn: NNX/equinox ``init_fn(key) -> module``, function ``init_fn(key) -> params``: how
        a run draws its initial weights from its key (the model or params given then fix the
        structure only).

    Raises:
      ValueError: a ``mutable`` collection absent from ``variables``; a function without params
        or ``init_fn``; ``init_fn`` for a kind that draws its weights itself.
      TypeError: an object that is no supported model.

    >>> import jax, jax.numpy as jnp
    >>> tm = training_model(lambda p, x: x @ p["w"], init_fn=lambda k: {"w": jnp.ones((2, 1))})
    >>> tm.kind, tm.params, jax.tree.map(jnp.shape, tm.init(jax.random.key(0), None))
    ('function', None, ({'w': (2, 1)}, {}))
    """
    if isinstance(model, TrainModel):
        if init_fn is not None:
            raise ValueError("init_fn: give it to training_model with the model, not after")
        return model
    if _haiku_kind(model):
        _no_init_fn(init_fn, "a haiku model draws its weights with its own init(key, x)")
        return _haiku(model, variables, train_kw)
    if isinstance(model, tuple) and len(model) == 2 and all(callable(f) for f in model):
        _no_init_fn(init_fn, "the (init_fn, apply_fn) pair draws them with its own init_fn")
        return _function(model[1], variables, model[0], train_kw)
    if not callable(model):
        raise TypeError(
            "model: expected a flax.linen or flax.nnx Module, an equinox Module, a function "
            f"f(params, x), an (init_fn, apply_fn) pair or a haiku transform, got "
            f"{type(model).__name__}"
        )
    import flax.linen as nn

    if isinstance(model, nn.Module):
        _no_init_fn(init_fn, "a linen module draws its variables with model.init")
        return _linen(model, variables, train_kw, mutable, rngs)
    try:
        from flax import nnx

        if isinstance(model, nnx.Module):
            return _nnx(model, variables, init_fn)
    except ImportError:  # pragma: no cover
        pass
    try:
        import equinox as eqx

        if isinstance(model, eqx.Module):
            return _equinox(model, variables, train_kw, init_fn)
    except ImportError:  # pragma: no cover
        pass
    if init_fn is not None and not callable(init_fn):
        raise TypeError(f"init_fn: expected init_fn(key) -> params, got {type(init_fn).__name__}")
    if variables is None and init_fn is None:
        raise ValueError(
            "variables: a function model f(params, x) needs its params; for per-seed "
            "initialization pass init_fn(key) -> params (or an (init_fn, apply_fn) pair)"
        )
    return _function(model, variables, None, train_kw, init_fn)


def require_linen(model, who: str) -> None:
    """Raises ``TypeError`` unless ``model`` is a flax.linen module (``who`` redraws weights
    with ``model.init``, which only linen modules have in that form).

    >>> import jax.numpy as jnp
    >>> require_linen(lambda p, x: x @ p, "train_rounds")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: model: train_rounds redraws weights with model.init, so it takes a flax.linen ...
    """
    import flax.linen as nn

    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model: {who} redraws weights with model.init, so it takes a flax.linen Module, "
            f"got {type(model).__name__}; train an NNX, equinox or function model with fit or "
            "train_epochs and init_fn=, or rewrite it as a linen module"
        )


def _no_init_fn(init_fn, why: str) -> None:
    if init_fn is not None:
        raise ValueError(f"init_fn: not for this model: {why} (leave out init_fn)")


_HOW = {
    "nnx": "init_fn=lambda key: Net(..., rngs=nnx.Rngs(key))",
    "equinox": "init_fn=lambda key: Net(..., key=key)",
    "function": "init_fn=lambda key: <params drawn from key>",
}


def check_starts(tm: TrainModel, x1, n_runs: int, params, same_init: bool) -> None:
    """Refuses a many-seed run that is not one, and an ``init_fn`` unlike the model.

    Several runs whose weights all come from one fixed set (an NNX/equinox module or a
    function's params without ``init_fn``, or ``variables=`` of any kind) would differ only in
    data order and dropout: that needs ``same_init=True``. ``same_init=True`` where every run
    draws its own weights is refused too. ``params`` is the user's ``params=`` argument.

    Raises:
      ValueError: naming ``keys``, ``same_init`` or ``init_fn``.

    >>> import jax, jax.numpy as jnp
    >>> tm = training_model(lambda p, x: x @ p, jnp.ones((2, 1)))
    >>> check_starts(tm, jnp.ones((1, 2)), 3, None, same_init=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: keys: 3 seeds would all start from the same weights (the function's params), ...
    >>> check_starts(tm, jnp.ones((1, 2)), 3, None, same_init=True)  # every seed from these
    """
    fixed = params is None and tm.params is not None
    if same_init:
        if not fixed:
            source = {
                "linen": "drawn with model.init",
                "pair": "drawn with the pair's init_fn",
                "haiku": "drawn with the haiku init",
            }.get(tm.kind, "drawn with init_fn")
            if params is not None:
                source = "given per seed with params="
            raise ValueError(
                f"same_init: every run already starts from its own weights ({source}); "
                "same_init=True is for several keys and one fixed set of weights"
            )
        return
    if tm.template is not None and tm.init is not None:
        _check_draw(tm, x1)
    if fixed and tm.init is not None:
        _check_given(tm, x1, n_runs)
    if not fixed or n_runs == 1:
        return
    what = {
        "nnx": "the NNX module's own",
        "equinox": "the equinox module's own",
        "function": "the function's params",
    }.get(tm.kind, "the given variables=")
    if tm.kind in _HOW:
        way = f"pass {_HOW[tm.kind]} to draw each seed's weights from its key"
    else:
        way = "leave out variables= so that each seed draws its own with the model's init"
    raise ValueError(
        f"keys: {n_runs} seeds would all start from the same weights ({what}), so they would "
        f"differ only in data order and dropout; {way}, or pass params= with a leading seed "
        "axis, or same_init=True if every seed should start from these weights"
    )


def _check_given(tm: TrainModel, x1, n_runs: int) -> None:
    """``variables=`` of a kind that has an ``init`` hold one set of weights of its shapes;
    a leading seed axis is named (it belongs in ``params=``). Shapes only."""
    assert tm.init is not None  # only called for kinds that draw weights
    want = jax.eval_shape(tm.init, jax.random.key(0), x1)[0]
    got = {
        jax.tree_util.keystr(p): a.shape
        for p, a in jax.tree_util.tree_leaves_with_path(jax.eval_shape(lambda: tm.params))
    }
    want = {jax.tree_util.keystr(p): a.shape for p, a in jax.tree_util.tree_leaves_with_path(want)}
    if set(got) != set(want):
        return  # other entries: the call check names them
    if got and all(got[k] == (n_runs, *want[k]) for k in want):
        raise ValueError(
            f"variables: every entry has a leading axis of {n_runs}, one per seed, but "
            "variables= is the one set of weights every run starts from; pass per-seed params "
            "as params= (with that axis), or leave out variables= to draw them per seed"
        )


def _check_draw(tm: TrainModel, x1) -> None:
    """``tm.init``'s draw has the paths, shapes and dtypes of the template (shapes only)."""
    assert tm.init is not None  # only called for kinds that draw weights
    got = jax.eval_shape(tm.init, jax.random.key(0), x1)
    flat = lambda t: {  # noqa: E731
        jax.tree_util.keystr(p): (tuple(a.shape), str(a.dtype))
        for p, a in jax.tree_util.tree_leaves_with_path(t)
    }
    for part, drawn, want in zip(("params", "state"), got, tm.template, strict=True):
        g, w = flat(drawn), flat(jax.eval_shape(lambda want=want: want))
        missing, extra = sorted(set(w) - set(g)), sorted(set(g) - set(w))
        if missing or extra:
            raise ValueError(
                f"init_fn: its {part} differ from the model's: missing {missing}, unexpected "
                f"{extra}"
            )
        for path, spec in w.items():
            if g[path] != spec:
                raise ValueError(
                    f"init_fn: {part}{path} has shape/dtype {g[path]}, the model's {spec}"
                )


_ONE_EXAMPLE = {
    "equinox": (
        "wrap it in a module that maps it over the batch: class Batched(eqx.Module): net: "
        "Net; def __call__(self, x): return jax.vmap(self.net)(x) -- then pass Batched(net)"
    ),
    "function": "pass jax.vmap(f, in_axes=(None, 0)) instead of f",
    "pair": "pass (init_fn, jax.vmap(apply_fn, in_axes=(None, 0)))",
}


def call_error(tm: TrainModel, error: Exception, x1) -> Exception:
    """The error to raise for a first call of ``tm`` on ``x1`` (a batch of one) that failed.

    Names the fix where the failure is understood: a linen collection missing from the
    variables, a train keyword the model does not take (``train_kw=None``), a model that takes
    one example (``jax.vmap``); otherwise a ``TypeError`` naming the call the trainer makes, or
    ``error`` itself.
    """
    shape = jax.tree.map(lambda a: tuple(a.shape), x1)
    where = f"calling it on x[:1] of shape {shape} failed: {error}"
    kind = ("an " if tm.kind[0] in "aeiou" else "a ") + tm.kind
    made = f"model: the trainer calls {tm.signature} ({kind} model); {where}"
    if tm.kind == "linen" and type(error).__name__ == "ScopeCollectionNotFound":
        held = sorted(["params", *(tm.state or {})])
        try:
            drawn = sorted(jax.eval_shape(tm.init, jax.random.key(0), x1)[1])  # type: ignore[arg-type]
        except Exception:  # only for the message
            drawn = []
        missing = [c for c in drawn if c not in held] or "a collection"
        return ValueError(
            f"variables: {type(tm.model).__name__} reads {missing} but the variables hold only "
            f"{held} (a dict without a 'params' entry is taken for the params alone); pass "
            "everything model.init returns, variables=model.init(key, x)"
        )
    if (
        isinstance(error, TypeError)
        and tm.train_kw is not None
        and f"unexpected keyword argument '{tm.train_kw}'" in str(error)
    ):
        return TypeError(
            f"{made}; the model does not take {tm.train_kw}=: pass train_kw=None to call it "
            f"without the flag (or train_kw='<name>' for its own)"
        )
    if not isinstance(x1, tuple) and len(x1.shape) >= 2 and _takes_one_example(tm, x1):
        how = _ONE_EXAMPLE.get(tm.kind, "map it over the batch axis with jax.vmap in its call")
        return TypeError(
            f"model: {tm.signature} ({kind} model) seems to take one example: {where}, "
            f"but on one example x[0] of shape {tuple(x1.shape[1:])} it works. Training calls "
            f"it on batches; {how}"
        )
    return TypeError(made) if isinstance(error, TypeError) else error


def _takes_one_example(tm: TrainModel, x1) -> bool:
    """Whether ``tm`` evaluates on one example without its batch axis (shapes only)."""
    x0 = jax.ShapeDtypeStruct(tuple(x1.shape[1:]), x1.dtype)

    def one(x):
        if tm.params is not None:
            p, s = tm.params, tm.state
        else:
            p, s = tm.init(jax.random.key(0), x[None])
        return tm.apply(p, s, x, train=False)[0]

    try:
        jax.eval_shape(one, x0)
    except Exception:  # any failure: not a per-example model
        return False
    return True
