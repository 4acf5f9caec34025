"""Unit ablation: the loss growth when one ReLU unit is removed (paper 000, sec. 3.2, 4.1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._losses import LossFn, get_loss
from jaxprune._types import Params, UnitMask

__all__ = ["ACTIVE_THRESHOLD", "active_units", "unit_ablation"]

ACTIVE_THRESHOLD = 1.5
"""Paper 000's loss-ratio threshold for a contributing ("active") unit."""


def _unit_widths(model, params: Params) -> dict[str, int]:
    if not hasattr(model, "unit_layers"):
        raise TypeError(
            f"model: {type(model).__name__} has no unit_layers(); unit ablation needs a module "
            "whose __call__ takes unit_mask={layer: mask} (e.g. jaxprune.models.MLP)"
        )
    widths = {}
    for name in model.unit_layers():
        if name not in params:
            raise ValueError(
                f"params[{name!r}]: missing; model has unit layers {model.unit_layers()}"
            )
        widths[name] = int(jnp.shape(params[name]["bias"])[-1])
    return widths


def unit_ablation(model, params: Params, data, loss: str | LossFn = "mse") -> dict[str, jax.Array]:
    """Loss with each ReLU unit removed, divided by the loss of the intact network.

    A unit is removed by zeroing its output (every other weight unchanged), via the module's
    ``unit_mask`` argument. All units of all layers are evaluated in one ``vmap``-ed call.

    Args:
      model: a module whose ``__call__(x, unit_mask=...)`` accepts per-layer unit masks and that
        lists its unit layers in ``unit_layers()`` (``MLP``, ``ConvNet``).
      params: its params.
      data: ``(x, y)``; the loss is the mean over all rows.
      loss: loss name or per-example callable.

    Returns:
      ``{layer_name: ratios}`` with ``ratios[i] = loss(without unit i) / loss(intact)``.
      A zero baseline loss gives ``inf`` (or ``nan`` where removing the unit changes nothing).

    A hand-built check: unit 1 is dead (never positive on the data), unit 0 carries the output.
    Baseline MSE is 0.1² = 0.01; without unit 0 it is (0.9² + 1.9²) / 2 = 2.21, a ratio of 221.

    >>> import jax.numpy as jnp, jaxprune as jp
    >>> m = jp.models.MLP(hidden=(2,), out_activation="identity")
    >>> p = {"relu_0": {"kernel": jnp.array([[1.0, -1.0]]), "bias": jnp.array([0.0, -5.0])},
    ...      "out": {"kernel": jnp.array([[1.0], [3.0]]), "bias": jnp.array([0.1])}}
    >>> x = jnp.array([[1.0], [2.0]]); y = 1.0 * x
    >>> {k: v.round(2).tolist() for k, v in unit_ablation(m, p, (x, y)).items()}
    {'relu_0': [221.0, 1.0]}

    References:
      Paper 000, sec. 3.2 and sec. 4.1 step 5a.
    """
    x, y = jnp.asarray(data[0]), jnp.asarray(data[1])
    widths = _unit_widths(model, params)
    loss_fn = get_loss(loss)
    names = list(widths)
    total = sum(widths.values())
    # Row r of the batch removes global unit r: one-hot over the concatenation of all layers.
    keep = 1.0 - jnp.eye(total, dtype=x.dtype)
    offsets = np.cumsum([0, *widths.values()]).tolist()
    masks = {name: keep[:, offsets[i] : offsets[i] + widths[name]] for i, name in enumerate(names)}

    def mean_loss(unit_mask: UnitMask | None):
        return jnp.mean(loss_fn(model.apply({"params": params}, x, unit_mask=unit_mask), y))

    baseline = mean_loss(None)
    ablated = jax.vmap(mean_loss)(masks) / baseline
    return {name: ablated[offsets[i] : offsets[i] + widths[name]] for i, name in enumerate(names)}


def active_units(
    model, params: Params, data, loss: str | LossFn = "mse", threshold: float = ACTIVE_THRESHOLD
) -> dict[str, jax.Array]:
    """Boolean mask of contributing units: ablation ratio ``>= threshold`` (default 1.5).

    Paper 000's sec. 3.2 words the rule inverted ("increased the loss by a factor of less than
    1.5" for an *active* node); sec. 4.1 step 5a gives the intended rule, used here: a unit whose
    removal keeps the loss below ``threshold x`` baseline does not contribute.

    >>> import jax.numpy as jnp, jaxprune as jp
    >>> m = jp.models.MLP(hidden=(2,), out_activation="identity")
    >>> p = {"relu_0": {"kernel": jnp.array([[1.0, -1.0]]), "bias": jnp.array([0.0, -5.0])},
    ...      "out": {"kernel": jnp.array([[1.0], [3.0]]), "bias": jnp.array([0.1])}}
    >>> x = jnp.array([[1.0], [2.0]])
    >>> active_units(m, p, (x, x))["relu_0"].tolist()
    [True, False]
    """
    if not threshold > 0:
        raise ValueError(f"threshold: expected a positive loss ratio, got {threshold}")
    return {k: r >= threshold for k, r in unit_ablation(model, params, data, loss).items()}
