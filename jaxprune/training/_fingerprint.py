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

import hashlib
import re
from typing import Any

import jax
import numpy as np

from jaxprune._describe import ADDRESS as _ADDRESS
from jaxprune._describe import describe, digest

__all__ = ["describe", "describe_optimizer", "digest", "model_fields", "run_fields", "shapes"]

_DIMS = re.compile(r"\[[\d,]+\]")  # f32[8,3] in a jaxpr's types
_SIZES = re.compile(r"(?<=shape|sizes)=\([\d, ]*\)")  # broadcast_in_dim[shape=(8, 3)]


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
    if isinstance(a, tuple | list | dict):  # a model's several inputs
        return "(" + ", ".join(_array(leaf) for leaf in jax.tree.leaves(a)) + ")"
    return f"{a.dtype}[{','.join(str(d) for d in np.shape(a))}]"


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
