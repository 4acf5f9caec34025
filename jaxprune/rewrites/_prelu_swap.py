"""Swap any traced model's ReLUs for channel-wise PReLUs (paper 004, sec. 3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._types import Model, Variables
from jaxprune.graph import as_model, trace
from jaxprune.graph.extend import (
    RewriteSpec,
    abstract_model,
    build_model,
    model_variables,
    nest,
    state_args,
    takes_model,
)
from jaxprune.rewrites._prelu_program import (
    SLOPES,
    PReLUProgram,
    flat_paths,
    relu_sites,
    slope_path,
    slope_units,
)
from jaxprune.rewrites._result import RewriteResult, count_params, result

__all__ = ["swap_relu_for_prelu"]


def _with_slopes(adapter, tree: dict):
    """The variables with ``tree`` (``{unit: {"slope": ...}}``) added under ``prelu``."""
    variables = adapter.variables
    if adapter.kind == "linen":
        params = dict(variables.get("params", {}))
        if SLOPES in params:
            raise ValueError(f"variables['params']: already has an entry {SLOPES!r}")
        return {**variables, "params": {**params, SLOPES: tree}}
    if adapter.kind == "equinox":  # a module's arrays hold no new leaves: nested dicts by path
        paths, leaves, _ = flat_paths(variables)
        variables = nest(dict(zip(paths, leaves, strict=True)))
    if not isinstance(variables, Mapping):
        raise ValueError(
            f"params: expected a dict for a function model (the slopes are added under "
            f"{SLOPES!r}), got {type(variables).__name__}"
        )
    if SLOPES in variables:
        raise ValueError(f"params: already has an entry {SLOPES!r}")
    return {**variables, SLOPES: tree}


@takes_model
def swap_relu_for_prelu(
    model: Model,
    variables: Variables,
    *args: Any,
    slope: float = 0.0,
    model_kwargs: Mapping[str, Any] | None = None,
) -> RewriteResult:
    """Replaces every ReLU of a unit group by a channel-wise PReLU; returns a model of its kind.

    The traced program is rewritten, not the model's class: every ReLU site ``max(x, 0)``
    (``jax.nn.relu``/``nn.relu`` or a written-out ``jnp.maximum(h, 0.0)``) whose channels form a
    unit group (see :func:`jaxprune.trace`) becomes ``relu(x) + a * min(x, 0)`` with one slope
    ``a`` per unit of the group. The slopes are new leaves at

    * linen: ``prelu_vars["params"]["prelu"][unit]["slope"]``,
    * NNX: an ``nnx.Param`` at ``prelu_model.prelu.<unit path>.slope``,
    * equinox: ``prelu_model.variables["prelu"][unit]["slope"]`` (the module's arrays become
      nested dicts keyed by their paths, ``variables["layers"]["0"]["weight"]``),
    * function: ``prelu_params["prelu"][unit]["slope"]``,

    (``unit`` as in ``jp.trace(...).units``, e.g. ``"Dense_0"`` or ``"block1/Conv_1"``), so
    :func:`~jaxprune.transforms.slope_sparsity` finds them by their leaf name ``slope`` (its
    layer keys are ``"prelu/<unit>"``). A group entering several ReLUs (the residual stream
    of a ResNet) has one slope per channel, shared by all its ReLU sites. ReLUs of channels
    that are not units (those reaching an output) stay ReLUs.

    At ``slope=0`` the outputs equal the original bit for bit. The returned model re-traces
    the original at each call's shapes; it is jittable and differentiable in every leaf, the
    original params and the slopes alike. A linen swapped model's ``init(key, *args)`` is the
    original's ``init(key, *args)`` plus every slope at ``slope``.

    Args:
      model: a ``flax.linen`` Module, an ``nnx.Module``, an ``eqx.Module`` or a function
        ``f(params, *args)`` with dict params.
      variables: its variables (linen: every collection) or params; omitted for NNX and equinox
        modules, which hold their state.
      *args: example arguments of the call (only their shapes matter).
      slope: initial slope of every channel (0, paper 004's choice, keeps the outputs).
      model_kwargs: keyword arguments of the model's own call (``{"train": False}``).

    Returns:
      A :class:`~jaxprune.rewrites.RewriteResult`: ``.model`` of the model's kind and
      ``.variables``, the original's variables plus the slopes (for NNX and equinox the model
      holds them; ``.variables`` is its state's pure dict / its arrays); ``.report.changes``
      names each swapped group.

    Raises:
      ValueError: the model has no ReLU unit group, or its variables already hold ``prelu``.

    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(4)(x))
    ...         return nn.Dense(2)(h)
    >>> x = jax.random.normal(jax.random.key(1), (6, 5)); net = Net()
    >>> v = net.init(jax.random.key(0), x)
    >>> r = swap_relu_for_prelu(net, v, x)
    >>> r.report.changes, r.variables["params"]["prelu"]["Dense_0"]["slope"].tolist()
    (('Dense_0: ReLU -> PReLU (4 slopes)',), [0.0, 0.0, 0.0, 0.0])
    >>> bool(jnp.array_equal(r.model.apply(r.variables, x), net.apply(v, x)))
    True

    References:
      Paper 004, sec. 3 and sec. 4 ("Linearization Phase": ReLUs replaced by PReLUs with initial
      negative slope 0).
    """
    adapter = as_model(model, variables)
    graph = trace(model, *state_args(model, variables), *args, model_kwargs=model_kwargs)
    units = slope_units(graph, relu_sites(graph))
    if not units:
        raise ValueError(
            "model: has no ReLU whose channels form a unit group (nothing to swap); "
            f"its units are {list(graph.units)}"
        )
    orig_paths, orig_leaves, orig_treedef = flat_paths(adapter.variables)
    by_path = dict(zip(orig_paths, orig_leaves, strict=True))
    tree = {}
    for name in units:
        u = graph.units[name]
        dtype = jnp.result_type(by_path[graph.layers[u.layers[0]].kernel])
        tree[name] = {"slope": jnp.full((u.width,), slope, dtype)}
    new_vars = _with_slopes(adapter, tree)
    new_paths, new_leaves, new_treedef = flat_paths(new_vars)
    run = PReLUProgram(
        model=abstract_model(adapter),
        kind=adapter.kind,
        orig_treedef=orig_treedef,
        orig_paths=tuple(orig_paths),
        orig_avals=tuple(jax.ShapeDtypeStruct(np.shape(a), a.dtype) for a in orig_leaves),
        new_paths=tuple(new_paths),
        prefix=adapter.param_prefix,
        units=tuple(units),
        slope=float(slope),
    )
    assert all(slope_path(run.prefix, u) in new_paths for u in units)
    before = count_params(by_path, adapter.trainable)
    widths = {name: graph.units[name].width for name in units}
    return result(
        *rewritten(run, new_treedef, new_leaves),
        before=before,
        after=before + sum(widths.values()),
        changes=[f"{name}: ReLU -> PReLU ({w} slopes)" for name, w in widths.items()],
    )


def rewritten(run: PReLUProgram, treedef, leaves):
    """``(model, variables)`` of the user's kind for ``run`` with the new variables' leaves."""
    spec = _spec(run, treedef, leaves)
    prelu_model = build_model(spec, leaves)
    return prelu_model, model_variables(spec, prelu_model, leaves)


def _spec(run: PReLUProgram, treedef, leaves) -> RewriteSpec:
    avals = tuple(jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)) for a in leaves)
    return RewriteSpec(
        model=run.model,
        kind=run.kind,
        treedef=treedef,
        paths=run.new_paths,
        avals=avals,
        new_avals=avals,
        keep=(),
        runner=run,
        initializer=run,
    )
