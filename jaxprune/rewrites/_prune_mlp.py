"""Pruning of the reference MLP/ConvNet by their unit protocol, for the reinit loop.

Superseded by :func:`jaxprune.prune_units`, which prunes any traced model."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from jaxprune._types import Params, UnitMask
from jaxprune._units import next_layer, unit_widths
from jaxprune.models._check import check_params
from jaxprune.models.convnet import ConvNet
from jaxprune.models.mlp import MLP

__all__ = ["prune_mlp_units"]


def _keep_indices(params: Params, keep: UnitMask) -> dict[str, np.ndarray]:
    if not isinstance(keep, Mapping):
        raise ValueError(
            f"keep: expected a mapping {{layer: bool[width]}}, got {type(keep).__name__}"
        )
    widths = unit_widths(params)
    unknown = sorted(set(keep) - set(widths))
    if unknown:
        raise ValueError(f"keep: unknown layer(s) {unknown}; expected a subset of {list(widths)}")
    out = {}
    for name, w in widths.items():
        if name not in keep:
            out[name] = np.arange(w)
            continue
        try:
            m = np.asarray(keep[name])
        except Exception as e:  # a tracer: the new widths must be known on the host
            raise ValueError(
                f"keep[{name!r}]: expected a concrete bool array (prune_units changes shapes, so "
                "it cannot run under jit/vmap)"
            ) from e
        if m.shape != (w,) or m.dtype != bool:
            raise ValueError(
                f"keep[{name!r}]: expected a bool array of shape ({w},), got "
                f"{m.dtype}{list(m.shape)}"
            )
        if not m.any():
            raise ValueError(
                f"keep[{name!r}]: would remove all {w} units of {name}; a layer needs at least "
                "one unit (keep the most contributing one, or drop the layer by other means)"
            )
        out[name] = np.flatnonzero(m)
    return out


def prune_mlp_units(model, params: Params, keep: UnitMask) -> tuple[object, Params]:
    """Removes the units with ``keep[layer][u] == False``; returns ``(narrow_model, params)``.

    The removed units' incoming weights and biases and their outgoing weights (the next layer's
    rows/input channels fed by them) are deleted, and the module's width fields shrink
    (``MLP.hidden``, ``ConvNet.features``). The narrow network's outputs equal the original's
    with the same units masked out (``jp.trace(...).apply(..., masks=keep)``), exactly up to
    float rounding; a ReLU unit that outputs zero contributes nothing, so nothing else changes.

    Args:
      model: a :class:`~jaxprune.models.MLP` or :class:`~jaxprune.models.ConvNet`.
      params: its params (one model, no seed axis).
      keep: ``{layer: bool[width]}`` concrete masks; True keeps a unit. Missing layers are kept
        whole.

    Returns:
      ``(narrow_model, narrow_params)``.

    Raises:
      ValueError: when ``params`` do not match ``model`` (the message names the path), or a
        mask would remove every unit of a layer, names an unknown layer, has the wrong
        shape/dtype, or is traced.
      TypeError: for a model other than ``MLP``/``ConvNet``.

    >>> import jax, jax.numpy as jnp, numpy as np, jaxprune as jp
    >>> model = jp.models.MLP(hidden=(4,), linear_after=((3,),))
    >>> p = model.init(jax.random.key(0), jnp.zeros((1, 2)))["params"]
    >>> keep = {"relu_0": np.array([True, False, True, False])}
    >>> narrow, q = prune_mlp_units(model, p, keep)
    >>> narrow.hidden, q["relu_0"]["kernel"].shape, q["linear_0_0"]["kernel"].shape
    ((2,), (2, 2), (2, 3))
    >>> x = jax.random.normal(jax.random.key(1), (5, 2))
    >>> graph = jp.trace(model, {"params": p}, x)
    >>> masked = graph.apply({"params": p}, x, masks={"relu_0": keep["relu_0"]})
    >>> bool(jnp.allclose(narrow.apply({"params": q}, x), masked))
    True

    References:
      Paper 000, sec. 4.1 step 13 (prune the remaining noncontributing nodes) and sec. 5
      (kernels: the next layer's input channels shrink with them).
    """
    if not isinstance(model, MLP | ConvNet):
        raise TypeError(
            f"model: expected a jaxprune.models.MLP or ConvNet, got {type(model).__name__}"
        )
    check_params(model, params)
    idx = _keep_indices(params, keep)
    new = {k: dict(v) for k, v in params.items()}
    for name, ix in idx.items():
        w = int(jnp.shape(params[name]["kernel"])[-1])
        # new[name], not params[name]: the previous unit layer may have pruned its rows already
        new[name]["kernel"] = jnp.asarray(new[name]["kernel"])[..., ix]
        if "bias" in params[name]:
            new[name]["bias"] = jnp.asarray(params[name]["bias"])[ix]
        nxt = next_layer(params, name)
        nk = jnp.asarray(new[nxt]["kernel"])
        if nk.ndim == 4:
            new[nxt]["kernel"] = nk[:, :, ix, :]
        else:  # dense, or the head on flattened (H, W, C) features
            new[nxt]["kernel"] = nk.reshape(-1, w, nk.shape[-1])[:, ix, :].reshape(-1, nk.shape[-1])
    widths = tuple(len(idx[n]) for n in model.unit_layers())
    field = "hidden" if isinstance(model, MLP) else "features"
    return model.clone(**{field: widths}), new
