"""Give chosen units of any traced model a fresh start from the model's own initializer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

import jax
import jax.numpy as jnp
import optax

from jaxprune._types import Outgoing, Params, UnitMask
from jaxprune.graph import Graph, as_model, path_str
from jaxprune.rewrites._optimizer_state import reset_optimizer_state

__all__ = ["OUTGOING_CHOICES", "reinit_units"]

OUTGOING_CHOICES = get_args(Outgoing)  # ('redraw', 'zero', 'keep')
"""What :func:`reinit_units` does with a reinitialized unit's outgoing (reading) entries."""


def _fresh_leaves(graph, key, init_fn) -> dict[str, jax.Array]:
    """``{leaf path: array}`` of a fresh initialization of the graph's model."""
    kind = graph.model.kind
    if init_fn is None:
        if kind != "linen":
            raise ValueError(
                f"init_fn: required for a {kind} model (jaxprune cannot re-run its constructor); "
                "pass init_fn(key) -> variables (a fresh module or its variables)"
            )
        fresh = graph.model.model.init(key, *graph.args, **graph.kwargs)
    else:
        fresh = init_fn(key)
        if kind == "nnx":
            from flax import nnx

            if isinstance(fresh, nnx.Module):
                fresh = as_model(fresh, None).variables
            elif isinstance(fresh, nnx.State):
                fresh = nnx.to_pure_dict(fresh)
        elif kind == "equinox" and not isinstance(fresh, dict):
            fresh = as_model(fresh, None).variables  # a fresh module: its arrays
    flat, _ = jax.tree_util.tree_flatten_with_path(fresh)
    return {path_str(p): v for p, v in flat}


def reinit_units(
    graph: Graph,
    params: Params,
    units: UnitMask,
    *,
    key: jax.Array,
    optimizer: optax.GradientTransformation | None = None,
    opt_state: Any = None,
    outgoing: Outgoing = "redraw",
    init_fn: Callable[[jax.Array], object] | None = None,
) -> tuple[Params, object]:
    """Redraws the units in ``units`` from the model's own initializer; resets their moments.

    A fresh set of variables is drawn with ``key`` from the model's initializer, and every
    *incoming* (writing) entry of a chosen unit — kernel columns, biases, norm entries of every
    layer of its coupled group (:meth:`~jaxprune.graph.Graph.slices`) — is copied from it, so
    the unit restarts with exactly the distribution the model was built with (its
    ``kernel_init``, fan-in included). Every other entry is unchanged. The unit's *outgoing*
    (reading) entries, the kernel rows of every consumer (skip projections, concatenated and
    flattened readers included), are by ``outgoing``:

    * ``"redraw"`` (default): copied from the same fresh draw ("a fresh start");
    * ``"zero"``: set to 0 (the model's output is then exactly the model with the units ablated,
      ``graph.apply(variables, x, masks={unit: 0 where chosen})``);
    * ``"keep"``: left as they are.

    The fresh variables come from ``model.init(key, *graph.args, **graph.kwargs)`` for a linen
    model. NNX, equinox and function models have no generic re-constructor: pass
    ``init_fn(key)`` returning a fresh module of the same kind (NNX or equinox) or its variables
    (an ``nnx.State`` or pure dict / the arrays / the params pytree, with ``params``' paths);
    for linen, :func:`~jaxprune.rewrites.model_initializer` is such an ``init_fn`` too.

    If ``optimizer`` and ``opt_state`` are given, the optimizer-state entries of every changed
    entry are set back to their initial values (:func:`~jaxprune.rewrites.reset_optimizer_state`,
    any optax optimizer: Adam's ``mu``/``nu`` become 0). Leaves that do not mirror the params
    are kept, in particular Adam's shared step count ``t``: the first update of a reset entry is
    then ``(1 - b1) / sqrt(1 - b2)`` times its gradient sign over the bias corrections
    ``sqrt(1 - b2**t) / (1 - b1**t)`` — about ``0.1 / sqrt(0.001) = 3.16`` times the step of a
    fresh Adam (``lr``) once ``t`` is large, decaying to about 1.1x after ~50 steps as its
    moments fill. A shared count cannot be reset per entry, and resetting it for all would
    mis-correct every other entry; if the larger first steps matter, reinitialize at a lower
    learning rate or warm the moments up (the bias correction is exact again for ``t`` small).

    Pure and jittable (``units`` may be traced; ``graph``, ``optimizer``, ``outgoing`` and
    ``init_fn`` are static).

    Args:
      graph: the model's :class:`~jaxprune.graph.Graph` (:func:`jaxprune.trace`).
      params: the model's trainable tree (linen ``variables["params"]``, equinox arrays, NNX
        params as a pure dict, the function's params) or its full variables (then BatchNorm
        statistics of the units are reset too). Must be the tree ``opt_state`` mirrors.
      units: ``{unit: bool[width]}``; True = reinitialize. Unlisted units: none.
      key: PRNG key for the fresh draw.
      optimizer: the optax transformation that produced ``opt_state`` (with ``opt_state``).
      opt_state: its state; returned with the changed entries reset.
      outgoing: ``"redraw"``, ``"zero"`` or ``"keep"``.
      init_fn: ``key -> fresh module or variables``; required for NNX, equinox and function
        models, optional for linen.

    Returns:
      ``(new_params, new_opt_state)``; ``new_opt_state`` is ``None`` when none was given.

    Raises:
      ValueError: naming the argument for an unknown ``outgoing``, unknown units (listing the
        valid ones), a mask of the wrong shape or a float dtype, only one of
        ``optimizer``/``opt_state``, or a missing ``init_fn``.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxprune as jp
    >>> x = jnp.ones((1, 2)); net = nn.Sequential([nn.Dense(3), nn.relu, nn.Dense(1)])
    >>> variables = net.init(jax.random.key(0), x); p = variables["params"]
    >>> graph = jp.trace(net, variables, x)
    >>> q, _ = reinit_units(graph, p, {"layers_0": jnp.array([False, True, False])},
    ...                     key=jax.random.key(1), outgoing="zero")
    >>> (q["layers_0"]["kernel"] != p["layers_0"]["kernel"]).any(axis=0).tolist()
    [False, True, False]
    >>> q["layers_2"]["kernel"][:, 0].tolist()[1]
    0.0

    References:
      Paper 000, sec. 4.1 step 7 (reinitialize noncontributing nodes) and sec. 5 (kernels).
    """
    if outgoing not in OUTGOING_CHOICES:
        raise ValueError(f"outgoing: expected one of {OUTGOING_CHOICES}, got {outgoing!r}")
    if (optimizer is None) != (opt_state is None):
        raise ValueError("optimizer, opt_state: give both (to reset the state) or neither")
    units = graph.check_units(units, "units", fill=False)
    fresh = _fresh_leaves(graph, key, init_fn)
    prefix = graph.model.param_prefix

    def fresh_of(path, x):
        p = path_str(path)
        for cand in (p, f"{prefix}/{p}" if prefix else p):
            if cand in fresh and jnp.shape(fresh[cand]) == jnp.shape(x):
                return jnp.asarray(fresh[cand], jnp.result_type(x))
        raise ValueError(
            f"params[{p!r}]: no leaf of that path and shape in the fresh initialization "
            "(init_fn must return variables of the same structure as params)"
        )

    inc = graph.unit_param_mask(params, units, incoming=True, outgoing=False)
    out = graph.unit_param_mask(params, units, incoming=False, outgoing=True)
    if outgoing == "keep":
        out = jax.tree.map(jnp.zeros_like, out)

    def new_leaf(path, x, i, o):
        if not (bool(jnp.size(x)) and (isinstance(i, jax.core.Tracer) or i.any() or o.any())):
            return x
        f = fresh_of(path, x)
        repl = f if outgoing == "redraw" else jnp.zeros_like(x)
        return jnp.where(i, f, jnp.where(o, repl, x))

    new = jax.tree_util.tree_map_with_path(new_leaf, params, inc, out)
    if optimizer is None:
        return new, None
    changed = jax.tree.map(jnp.logical_or, inc, out)
    return new, reset_optimizer_state(optimizer, opt_state, new, changed)
