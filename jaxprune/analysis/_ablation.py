"""Unit ablation: the loss growth when one unit is removed (paper 000, sec. 3.2, 4.1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._data_checks import check_data, check_finite
from jaxprune._losses import LossFn, get_loss
from jaxprune._types import Batch, Model, Variables
from jaxprune.analysis._resolve import resolve

__all__ = ["ACTIVE_THRESHOLD", "DEFAULT_CHUNK", "active_units", "unit_ablation"]

ACTIVE_THRESHOLD = 1.5
"""Paper 000's loss-ratio threshold for a contributing ("active") unit."""

DEFAULT_CHUNK = 64
"""Units ablated per vectorized batch by default (memory: this many forward passes at once)."""


def _selection(graph, units) -> dict[str, jax.Array | None]:
    """``{unit: None (all) or bool[width]}`` of the units to ablate."""
    if units is None:
        return dict.fromkeys(graph.units)
    if isinstance(units, str) or not isinstance(units, (Mapping, Sequence)):
        raise ValueError(
            f"units: expected unit names or {{unit: bool[width]}}, got {type(units).__name__}"
        )
    if isinstance(units, Mapping):
        checked = graph.check_units(units, "units", fill=False)
        return checked  # bool arrays (may be traced)
    unknown = sorted(set(units) - set(graph.units))
    if unknown:
        raise ValueError(
            f"units: unknown unit(s) {unknown}; the model's units are {list(graph.units)}"
        )
    return {k: None for k in graph.units if k in set(units)}


def unit_ablation(
    model: Model,
    variables: Variables,
    data: Batch,
    loss: str | LossFn = "mse",
    *,
    units: Sequence[str] | Mapping[str, jax.Array] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    model_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, jax.Array]:
    """Loss with each unit removed, divided by the loss of the intact network.

    A unit is removed by multiplying its channel by 0 wherever it is read (every weight
    unchanged): for a unit followed by a ReLU this zeroes the ReLU's output, as in the paper;
    through skips and concatenations it is removed everywhere downstream, as pruning it would.
    The model is traced once (:func:`jaxprune.trace`) and the ablations are ``vmap``-ed over
    one-hot masks on the traced computation, ``chunk_size`` units at a time
    (``jax.lax.map(..., batch_size=chunk_size)``); the model needs no masking argument.
    Works under ``jit`` and ``vmap`` (e.g. over the params of many seeds).

    Args:
      model: a ``flax.linen``/``flax.nnx``/equinox module, a function ``f(params, x)``, or a
        :class:`~jaxprune.graph.Graph` already traced at ``x``'s shapes.
      variables: its variables (see :func:`jaxprune.trace`); ``None`` for NNX/equinox modules or
        a Graph's own.
      data: ``(x, y)``; the loss is the mean over all rows.
      loss: loss name or per-example callable.
      units: which units to ablate: ``None`` (all), unit names, or ``{unit: bool[width]}``
        (unmarked entries get ``nan``).
      chunk_size: units evaluated per vectorized batch (lower it if memory runs out).
      model_kwargs: keyword arguments of the model's own call (``{"train": False}``).

    Returns:
      ``{unit: ratios}`` with ``ratios[i] = loss(without unit i) / loss(intact)``, keyed by
      the graph's unit names (the param path of the first layer producing the unit).
      A zero baseline loss gives ``inf`` (or ``nan`` where removing the unit changes nothing).

    Raises:
      ValueError: for unknown units, float masks in ``units``, a non-positive ``chunk_size``,
        data whose shapes differ from a given Graph's, ``x`` and ``y`` of different lengths,
        NaN/inf in ``data`` or ``variables`` (one NaN would make every ratio NaN and no unit
        active; values traced under ``jit`` are not inspected), or predictions and targets
        whose shapes the loss does not accept.

    A hand-built check: unit 1 is dead (never positive on the data), unit 0 carries the output.
    Baseline MSE is 0.1² = 0.01; without unit 0 it is (0.9² + 1.9²) / 2 = 2.21, a ratio of 221.

    >>> import jax.numpy as jnp, flax.linen as nn, jaxprune as jp
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(2)(x))
    ...         return nn.Dense(1)(h)
    >>> p = {"Dense_0": {"kernel": jnp.array([[1.0, -1.0]]), "bias": jnp.array([0.0, -5.0])},
    ...      "Dense_1": {"kernel": jnp.array([[1.0], [3.0]]), "bias": jnp.array([0.1])}}
    >>> x = jnp.array([[1.0], [2.0]]); y = 1.0 * x
    >>> {k: v.round(2).tolist() for k, v in unit_ablation(Net(), {"params": p}, (x, y)).items()}
    {'Dense_0': [221.0, 1.0]}

    References:
      Paper 000, sec. 3.2 and sec. 4.1 step 5a.
    """
    if not (isinstance(chunk_size, int) and chunk_size > 0):
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    x, y = check_data(data)
    graph, variables = resolve(model, variables, (x,), model_kwargs)
    check_finite("variables", variables)
    selected = _selection(graph, units)
    loss_fn = get_loss(loss)
    names = list(selected)
    widths = [graph.units[n].width for n in names]
    offsets = np.cumsum([0, *widths]).tolist()
    total = offsets[-1]

    def mean_loss(masks):
        return jnp.mean(loss_fn(graph.apply(variables, x, masks=masks), y))

    baseline = mean_loss(None)
    if total == 0:
        return {}

    def ablated(
        i,
    ):  # removes global unit i: one-hot over the concatenation of all units
        masks = {
            n: (jnp.arange(w) + offsets[k] != i).astype(jnp.float32)
            for k, (n, w) in enumerate(zip(names, widths, strict=True))
        }
        return mean_loss(masks)

    losses = jax.lax.map(ablated, jnp.arange(total), batch_size=min(chunk_size, total))
    ratios = losses / baseline
    out = {}
    for k, n in enumerate(names):
        r = ratios[offsets[k] : offsets[k + 1]]
        sel = selected[n]
        if sel is not None:
            r = jnp.where(sel, r, jnp.nan)
        out[n] = r
    return out


def active_units(
    model: Model,
    variables: Variables,
    data: Batch,
    loss: str | LossFn = "mse",
    threshold: float = ACTIVE_THRESHOLD,
    *,
    units: Sequence[str] | Mapping[str, jax.Array] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    model_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, jax.Array]:
    """Boolean mask of contributing units: ablation ratio ``>= threshold`` (default 1.5).

    Paper 000's sec. 3.2 words the rule inverted ("increased the loss by a factor of less than
    1.5" for an *active* node); sec. 4.1 step 5a gives the intended rule, used here: a unit whose
    removal keeps the loss below ``threshold x`` baseline does not contribute.

    Args:
      model, variables, data, loss: as for :func:`unit_ablation`.
      threshold: the loss ratio, > 0.
      units, chunk_size, model_kwargs: as for :func:`unit_ablation`.

    Returns:
      ``{unit: bool[width]}``.

    Raises:
      ValueError: for a non-positive ``threshold`` (and as :func:`unit_ablation`).

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> def net(p, x):
    ...     return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    >>> p = {"w1": jnp.array([[1.0, -1.0]]), "b1": jnp.array([0.0, -5.0]),
    ...      "w2": jnp.array([[1.0], [3.0]]), "b2": jnp.array([0.1])}
    >>> x = jnp.array([[1.0], [2.0]])
    >>> active_units(net, p, (x, x))["w1"].tolist()
    [True, False]
    """
    if isinstance(threshold, jax.core.Tracer):
        pass  # traced (a jit argument): checked by the caller
    elif not float(threshold) > 0:
        raise ValueError(f"threshold: expected a positive loss ratio, got {threshold}")
    ratios = unit_ablation(
        model,
        variables,
        data,
        loss,
        units=units,
        chunk_size=chunk_size,
        model_kwargs=model_kwargs,
    )
    return {k: r >= threshold for k, r in ratios.items()}
