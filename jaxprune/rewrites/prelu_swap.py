"""Swap a trained ReLU network's activations for channel-wise PReLUs (paper 004, sec. 3)."""

from __future__ import annotations

import jax.numpy as jnp

from jaxprune._types import Params
from jaxprune.models._check import check_params
from jaxprune.models.mlp import MLP
from jaxprune.models.prelu import PReLUMLP
from jaxprune.rewrites._collapse_mlp import collapse_mlp

__all__ = ["swap_relu_for_prelu"]


def swap_relu_for_prelu(model: MLP, params: Params, slope: float = 0.0):
    """Replaces every ReLU of a trained :class:`~jaxprune.models.MLP` by a channel-wise PReLU.

    With ``slope=0`` (the default, paper 004's initial slope) the new network computes exactly
    the same function: ``relu_{i}`` becomes ``dense_{i}`` (same kernel and bias) followed by
    ``prelu_{i}`` with all slopes 0, and ``out`` is copied. Linear layers (``linear_after``)
    carry no ReLU; they are first folded into their successors with
    :func:`~jaxprune.collapse`, which is exact, so the result is a plain
    :class:`~jaxprune.models.PReLUMLP`. Inputs are not modified.

    Args:
      model: a ``MLP`` with at least one hidden (ReLU) layer.
      params: its params.
      slope: initial slope of every PReLU channel (0 keeps outputs unchanged).

    Returns:
      ``(PReLUMLP, params)``.

    Raises:
      TypeError: ``model`` is not a ``jaxprune.models.MLP``.
      ValueError: the model has no ReLU to replace, or ``params`` do not match it.

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> mlp = jp.models.MLP(hidden=(4, 3), out=2, out_activation="identity")
    >>> x = jax.random.normal(jax.random.key(1), (6, 5))
    >>> p = mlp.init(jax.random.key(0), x)["params"]
    >>> net, q = jp.rewrites.swap_relu_for_prelu(mlp, p)
    >>> net, sorted(q)
    (PReLUMLP(
        # attributes
        hidden = (4, 3)
        out = 2
        out_activation = 'identity'
        skips = ()
    ), ['dense_0', 'dense_1', 'out', 'prelu_0', 'prelu_1'])
    >>> bool(jnp.array_equal(mlp.apply({"params": p}, x), net.apply({"params": q}, x)))
    True

    References:
      Paper 004, sec. 3 and sec. 4 ("Linearization Phase": ReLUs replaced by PReLUs with initial
      negative slope 0).
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model: expected a jaxprune.models.MLP, got {type(model).__name__}")
    if not model.hidden:
        raise ValueError("model: has no ReLU layer to replace (hidden=())")
    check_params(model, params)
    if model.linear_after and any(model.linear_after):
        model, params = collapse_mlp(model, params)
    new = {}
    for i, width in enumerate(model.hidden):
        layer = params[f"relu_{i}"]
        new[f"dense_{i}"] = dict(layer)
        new[f"prelu_{i}"] = {"slope": jnp.full((width,), slope, jnp.result_type(layer["kernel"]))}
    new["out"] = dict(params["out"])
    net = PReLUMLP(hidden=tuple(model.hidden), out=model.out, out_activation=model.out_activation)
    return net, new
