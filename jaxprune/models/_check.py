"""Validation that a parameter pytree matches a reference module (runs outside jit)."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from jaxprune.models.convnet import ConvNet
from jaxprune.models.mlp import MLP

__all__ = ["check_params", "expected_param_shapes"]


def _shape(a) -> tuple[int, ...]:
    return tuple(jnp.shape(a))


def expected_param_shapes(model, params) -> dict[str, dict[str, tuple[int, ...]]]:
    """The shape every parameter of ``model`` must have, given the input width found in ``params``.

    Only the input width (``relu_0``/``conv_0`` kernel) and, for :class:`ConvNet`, the flattened
    spatial size of the head are read from ``params``; everything else follows from the fields.
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"params: expected a mapping of layer names, got {type(params).__name__}")
    if isinstance(model, MLP):
        first = params.get("relu_0", {}).get("kernel") if "relu_0" in params else None
        if first is None:
            raise ValueError("params['relu_0']['kernel']: missing (the first hidden layer)")
        width = _shape(first)[0]
        shapes: dict[str, dict[str, tuple[int, ...]]] = {}
        for i, h in enumerate(model.hidden):
            shapes[f"relu_{i}"] = {"kernel": (width, h), "bias": (h,)}
            width = h
            for j, lw in enumerate(model.linear_widths(i)):
                shapes[f"linear_{i}_{j}"] = {"kernel": (width, lw), "bias": (lw,)}
                width = lw
        shapes["out"] = {"kernel": (width, model.out), "bias": (model.out,)}
        return shapes
    if isinstance(model, ConvNet):
        first = params.get("conv_0", {}).get("kernel") if "conv_0" in params else None
        if first is None:
            raise ValueError("params['conv_0']['kernel']: missing (the first conv block)")
        chans = _shape(first)[2]
        k = model.kernel_size
        shapes = {}
        for i, c in enumerate(model.features):
            shapes[f"conv_{i}"] = {"kernel": (k, k, chans, c), "bias": (c,)}
            chans = c
            for j, lw in enumerate(model.linear_widths(i)):
                shapes[f"linear_{i}_{j}"] = {"kernel": (1, 1, chans, lw)}
                chans = lw
        head = params.get("out", {}).get("kernel") if "out" in params else None
        flat = _shape(head)[0] if head is not None else chans
        if flat % chans:
            raise ValueError(
                f"params['out']['kernel']: first dim {flat} is not a multiple of the {chans} "
                "channels feeding the head"
            )
        shapes["out"] = {"kernel": (flat, model.out), "bias": (model.out,)}
        return shapes
    raise TypeError(f"model: expected a jaxprune.models.MLP or ConvNet, got {type(model).__name__}")


def check_params(model, params) -> None:
    """Raises ``ValueError`` naming the first parameter path that does not match ``model``.

    >>> import jax, jaxprune as jp
    >>> m = jp.models.MLP(hidden=(3,))
    >>> p = m.init(jax.random.key(0), jax.numpy.zeros((1, 2)))["params"]
    >>> check_params(jp.models.MLP(hidden=(4,)), p)
    Traceback (most recent call last):
    ...
    ValueError: params['relu_0']['kernel']: expected shape (2, 4) for MLP(...), got (2, 3)
    """
    expected = expected_param_shapes(model, params)
    extra = sorted(set(params) - set(expected))
    if extra:
        raise ValueError(
            f"params[{extra[0]!r}]: layer not in {type(model).__name__}(...); "
            f"expected layers {sorted(expected)}"
        )
    for layer, leaves in expected.items():
        if layer not in params:
            raise ValueError(f"params[{layer!r}]: missing for {type(model).__name__}(...)")
        got_leaves = params[layer]
        if set(got_leaves) != set(leaves):
            raise ValueError(
                f"params[{layer!r}]: expected entries {sorted(leaves)}, got {sorted(got_leaves)}"
            )
        for leaf, shape in leaves.items():
            got = _shape(got_leaves[leaf])
            if got != shape:
                raise ValueError(
                    f"params[{layer!r}][{leaf!r}]: expected shape {shape} for "
                    f"{type(model).__name__}(...), got {got}"
                )
            if not jnp.issubdtype(jnp.result_type(got_leaves[leaf]), jnp.inexact):
                raise ValueError(f"params[{layer!r}][{leaf!r}]: expected a float array")
