"""Checks run on the host before training starts (outside jit), each naming the bad argument."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._data_checks import check_finite, check_lengths, rows

__all__ = [
    "check_call",
    "check_finite",
    "check_initial_state",
    "check_params_like_model",
    "device_data",
    "given_variables",
]


def device_data(data) -> tuple[Any, jax.Array]:
    """``(x, y)`` of ``data`` as JAX arrays; host data is converted to JAX's dtype on the host
    (float64 to float32 without x64), not by a small program compiled per shape. ``x`` may be
    a tuple (or any pytree) of arrays, a model's several inputs, converted leaf by leaf.

    Raises:
      ValueError: ``x`` and ``y`` do not have the same non-zero length, or one input of ``x``
        has another leading length than the first (named).
    """

    def put(a):
        if isinstance(a, jax.Array):
            return a
        a = np.asarray(a)
        return jnp.asarray(a.astype(jax.dtypes.canonicalize_dtype(a.dtype), copy=False))

    x, y = jax.tree.map(put, data[0]), put(data[1])
    check_lengths(x, y, "data")
    return x, y


def check_params_like_model(model, params: Any, x: jax.Array, lead: tuple[int, ...] = ()) -> None:
    """Raises ``ValueError`` unless ``params`` has the paths and shapes of ``model.init``'s.

    ``lead`` is the leading axes every leaf carries on top of the model's shapes (a seed axis).
    Only shapes are traced (``jax.eval_shape``); nothing is compiled.

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> m = jp.models.MLP(hidden=(3,))
    >>> p = m.init(jax.random.key(0), jnp.zeros((1, 2)))["params"]
    >>> check_params_like_model(jp.models.MLP(hidden=(4,)), p, jnp.zeros((1, 2)))
    Traceback (most recent call last):
    ...
    ValueError: params['out']['kernel']: expected shape (4, 1) for this model, got (3, 1)
    """
    from jaxprune.training._model import TrainModel

    if isinstance(model, TrainModel):
        if model.params is not None:
            want = model.params
        else:
            init = model.init
            assert init is not None  # a TrainModel without params draws them
            want = jax.eval_shape(lambda: init(jax.random.key(0), rows(x, slice(0, 1)))[0])
        name = f"{type(model.model).__name__}'s params"
    else:
        x1 = rows(x, slice(0, 1))
        args = x1 if isinstance(x1, tuple) else (x1,)
        want = jax.eval_shape(lambda: model.init(jax.random.key(0), *args)["params"])
        name = f"{type(model).__name__}.init(...)['params']"
    want = {jax.tree_util.keystr(p): s.shape for p, s in jax.tree_util.tree_leaves_with_path(want)}
    got = {
        jax.tree_util.keystr(p): tuple(jnp.shape(a))
        for p, a in jax.tree_util.tree_leaves_with_path(params)
    }
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(
            f"params: expected the entries of {name}; missing {missing}, unexpected {extra}"
        )
    for path, shape in want.items():
        if got[path] != (*lead, *shape):
            raise ValueError(
                f"params{path}: expected shape {(*lead, *shape)} for this model, got {got[path]}"
            )


def check_initial_state(model, params, opt_state, data, n_runs: int, single: bool):
    """Validates ``data`` and optional initial ``params``/``opt_state`` of a many-seed run.

    Returns ``(params, opt_state)`` with a leading seed axis (added for a single key). Raises
    ``ValueError`` naming the argument: ``opt_state`` without ``params``, a leading axis other
    than ``n_runs``, params unlike ``model.init``'s, or NaN/inf anywhere.
    """
    x, y = data
    if opt_state is not None and params is None:
        raise ValueError("opt_state: given without params; pass the params it belongs to")
    if single:
        params, opt_state = jax.tree.map(lambda a: jnp.asarray(a)[None], (params, opt_state))
    for name, tree in (("params", params), ("opt_state", opt_state)):
        lead = {np.shape(a)[0] if np.ndim(a) else None for a in jax.tree.leaves(tree)}
        if tree is not None and lead - {n_runs}:
            raise ValueError(f"{name}: expected a leading seed axis of {n_runs}, got {lead}")
    check_finite("data", (x, y))
    if params is not None:
        check_params_like_model(model, params, x, (n_runs,))
        check_finite("params", params)
        check_finite("opt_state", opt_state)
    return params, opt_state


def _checked_cache():
    from jaxprune.training._core import ProgramCache

    return ProgramCache(64)


_CHECKED = None


def check_call(model, loss_fn, optimizer, x, y) -> None:
    """Traces one training step and one evaluation on ``x[:1]`` (shapes only, nothing compiled).

    Raises ``TypeError`` naming the call the trainer makes (e.g. ``Net.apply(variables, x,
    train=bool, rngs=..., mutable=[...])``) when the model's signature does not fit it. Checked
    once per model, loss, optimizer and example shape.
    """
    global _CHECKED
    if _CHECKED is None:
        _CHECKED = _checked_cache()
    leaves, treedef = jax.tree.flatten((x, y))
    shapes = (treedef, tuple((jnp.shape(a)[1:], jnp.result_type(a)) for a in leaves))
    _CHECKED.get(
        (model, loss_fn, optimizer, shapes), lambda: _check_call(model, loss_fn, optimizer, x, y)
    )


def _check_call(model, loss_fn, optimizer, x, y) -> bool:
    from jaxprune.training._core import make_core

    core = make_core(model, loss_fn, optimizer)
    x1, y1 = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((1, *jnp.shape(a)[1:]), jnp.result_type(a)), (x, y)
    )

    def run(x1, y1):  # with the variables given, if any: they are what training will call
        ts = core.init(jax.random.key(0), x1, params=model.params, state=model.state)
        ts, _ = core.train_step(ts, (x1, y1), jax.random.key(0))
        return core.eval_step(ts, (x1, y1))

    try:
        jax.eval_shape(run, x1, y1)
    except Exception as e:
        from jaxprune.training._model import call_error

        better = call_error(model, e, x1)  # names the fix where the failure is understood
        if better is e:
            raise
        raise better from e
    return True


def given_variables(model, params, n_runs: int):
    """``(params, state)`` with a seed axis to start from, or None where ``model.init`` draws them.

    The model's own variables (NNX/equinox modules, a function's params, linen ``variables=``)
    are passed to the compiled program as arguments, never baked into it as constants, so one
    program serves every call with the same model and options.
    """
    tile = lambda tree: jax.tree.map(lambda a: jnp.broadcast_to(a, (n_runs, *jnp.shape(a))), tree)
    if params is None and model.params is not None:
        params = tile(model.params)
    state = None if model.state is None else tile(model.state)
    return params, state
