"""Which parameter entries belong to which ReLU unit (private; shared by freeze, reinit, prune).

The layout is read from the layer *names* of the reference models (:class:`~jaxprune.models.MLP`
and :class:`~jaxprune.models.ConvNet`), so optax transforms, which only see parameter trees,
can use it too:

* unit layers are ``relu_{i}`` (dense, ``kernel (in, w)``) and ``conv_{i}`` (``kernel
  (k, k, in, w)``); unit ``u`` owns ``kernel[..., u]`` and ``bias[u]`` (its *incoming* entries);
* the layers run in the order ``relu_0/conv_0, linear_0_0, linear_0_1, ..., relu_1/conv_1, ...,
  out``; the layer after a unit layer holds the unit's *outgoing* entries: row ``u`` of a dense
  kernel, input channel ``u`` (axis 2) of a conv kernel, or, for the dense head after a conv
  block, the rows ``r`` with ``r % w == u`` of the flattened ``(H, W, C)`` features.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from jaxprune._types import Params, UnitMask

_UNIT = re.compile(r"^(relu|conv)_(\d+)$")
_LINEAR = re.compile(r"^linear_(\d+)_(\d+)$")


def _order_key(name: str) -> tuple[float, int]:
    if m := _UNIT.match(name):
        return (int(m[2]), -1)
    if m := _LINEAR.match(name):
        return (int(m[1]), int(m[2]))
    if name == "out":
        return (math.inf, 0)
    raise ValueError(
        f"params[{name!r}]: not a layer name of jaxprune.models.MLP/ConvNet; expected "
        "relu_i, conv_i, linear_i_j or out"
    )


def layer_order(params: Params) -> list[str]:
    """Layer names in forward order."""
    if not isinstance(params, Mapping):
        raise ValueError(f"params: expected a mapping of layer names, got {type(params).__name__}")
    return sorted(params, key=_order_key)


def unit_layers(params: Params) -> list[str]:
    """Names of the unit (ReLU) layers in forward order."""
    return [n for n in layer_order(params) if _UNIT.match(n)]


def unit_widths(params: Params) -> dict[str, int]:
    """``{layer: number of units}`` read from the biases (or the kernels' last axis)."""
    widths = {}
    for n in unit_layers(params):
        leaf = params[n]["bias"] if "bias" in params[n] else params[n]["kernel"]
        widths[n] = int(jnp.shape(leaf)[-1])
    return widths


def next_layer(params: Params, name: str) -> str | None:
    """The layer after ``name`` (it holds the outgoing weights of ``name``'s units)."""
    order = layer_order(params)
    i = order.index(name)
    return order[i + 1] if i + 1 < len(order) else None


def check_unit_mask(params: Params, mask: UnitMask | None, arg: str = "units") -> UnitMask:
    """Validates a per-layer unit mask; returns it as bool arrays for *every* unit layer.

    Layers missing from ``mask`` get all-False masks. Works on traced masks (only shapes are
    checked). Raises ``ValueError`` naming ``arg`` for unknown layers, wrong shapes or a float
    dtype (a 0.5 would otherwise silently count as True).
    """
    widths = unit_widths(params)
    if mask is not None and not isinstance(mask, Mapping):
        raise ValueError(
            f"{arg}: expected a mapping {{layer: bool[width]}}, got {type(mask).__name__}"
        )
    mask = dict(mask or {})
    unknown = sorted(set(mask) - set(widths))
    if unknown:
        raise ValueError(f"{arg}: unknown layer(s) {unknown}; expected a subset of {list(widths)}")
    out = {}
    for name, w in widths.items():
        m = jnp.asarray(mask.get(name, jnp.zeros(w, bool)))
        if m.shape != (w,):
            raise ValueError(f"{arg}[{name!r}]: expected shape ({w},), got {m.shape}")
        if not (m.dtype == bool or jnp.issubdtype(m.dtype, jnp.integer)):
            raise ValueError(
                f"{arg}[{name!r}]: expected a bool (or 0/1 integer) mask, got dtype {m.dtype}"
            )
        out[name] = m.astype(bool)
    return out


def outgoing_mask(kernel_shape: tuple[int, ...], m: jax.Array) -> jax.Array:
    """Bool array of ``kernel_shape`` marking the entries fed by the units in ``m``."""
    w = m.shape[0]
    if len(kernel_shape) == 4:  # conv kernel (k, k, in, out): input channel axis 2
        if kernel_shape[2] != w:
            raise ValueError(f"kernel: expected {w} input channels, got shape {kernel_shape}")
        return jnp.broadcast_to(m[:, None], kernel_shape)
    if len(kernel_shape) == 2:
        rows = kernel_shape[0]
        if rows % w:
            raise ValueError(f"kernel: {rows} input rows are not a multiple of {w} units")
        # rows == w: a dense layer; rows == H*W*w: the dense head on flattened (H, W, C).
        return jnp.broadcast_to(jnp.tile(m, rows // w)[:, None], kernel_shape)
    raise ValueError(f"kernel: expected a 2-D or 4-D kernel, got shape {kernel_shape}")


def unit_param_mask(
    params: Params, units: UnitMask, *, incoming: bool = True, outgoing: bool = True
) -> Params:
    """Bool tree shaped like ``params``: True on the entries owned by the units in ``units``.

    ``incoming`` marks ``kernel[..., u]`` and ``bias[u]``; ``outgoing`` marks the next layer's
    kernel entries fed by ``u`` (see the module docstring). Entries of several masked units are
    OR-ed (``relu_1.kernel`` is outgoing for ``relu_0`` and incoming for ``relu_1``).
    """
    units = check_unit_mask(params, units)
    out = jax.tree.map(lambda a: jnp.zeros(jnp.shape(a), bool), dict(params))
    out = {k: dict(v) for k, v in out.items()}
    for name, m in units.items():
        if incoming:
            for leaf in out[name]:
                out[name][leaf] = out[name][leaf] | jnp.broadcast_to(m, out[name][leaf].shape)
        nxt = next_layer(params, name)
        if outgoing and nxt is not None:
            k = out[nxt]["kernel"]
            out[nxt]["kernel"] = k | outgoing_mask(k.shape, m)
    return out
