"""Private: linear-layer folding of ``jp.models.MLP`` parameters, kept for
:func:`swap_relu_for_prelu` and :func:`fold_linear`, which return those classes. Users call
:func:`jaxprune.collapse`, which works on any traced model."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxprune._types import Params
from jaxprune.models._check import check_params

__all__ = ["collapse_mlp", "fold_dense"]

_HI = jax.lax.Precision.HIGHEST


def fold_dense(
    k1: Float[Array, "a b"],
    b1: Float[Array, " b"] | None,
    k2: Float[Array, "b c"],
    b2: Float[Array, " c"] | None,
) -> tuple[Float[Array, "a c"], Float[Array, " c"] | None]:
    """Folds ``x -> x k1 + b1`` followed by ``h -> h k2 + b2`` into one affine map.

    Flax kernels act on the right (``y = x @ K + b``), so the paper's ``A2' = A3 A2`` and
    ``b2' = A3 b2 + b3`` (Eq. 6, column-vector convention) read ``K' = K1 K2`` and
    ``b' = b1 K2 + b2`` here.

    >>> import jax.numpy as jnp
    >>> k, b = fold_dense(jnp.eye(2) * 2, jnp.ones(2), jnp.ones((2, 1)), jnp.zeros(1))
    >>> k.tolist(), b.tolist()
    ([[2.0], [2.0]], [2.0])

    References:
      Paper 000, sec. 3.1, Eq. 6.
    """
    k = jnp.matmul(k1, k2, precision=_HI)
    if b1 is None and b2 is None:
        return k, None
    b = jnp.zeros(k2.shape[-1], k.dtype) if b2 is None else b2
    if b1 is not None:
        b = b + jnp.matmul(b1, k2, precision=_HI)
    return k, b


def _fold(layer: dict, nxt: dict) -> dict:
    """Folds one linear dense layer's params into its successor's params."""
    k, b = fold_dense(layer["kernel"], layer["bias"], nxt["kernel"], nxt["bias"])
    return {"kernel": k, "bias": b}


def _targets(model, layers: Iterable[str] | None) -> list[tuple[int, int]]:
    """Returns ``(i, j)`` of the linear layers to fold, validating user-given names."""
    all_linear = [
        (i, j) for i in range(len(model.unit_layers())) for j in range(len(model.linear_widths(i)))
    ]
    if layers is None:
        return all_linear
    if isinstance(layers, str):
        layers = (layers,)
    wanted = []
    names = {f"linear_{i}_{j}": (i, j) for i, j in all_linear}
    for name in layers:
        if name not in names:
            kind = (
                "a non-linear layer"
                if name in model.unit_layers() or name == "out"
                else ("not a layer of this model")
            )
            raise ValueError(
                f"layers: {name!r} is {kind} and cannot be folded; foldable linear layers are "
                f"{sorted(names)}"
            )
        wanted.append(names[name])
    return sorted(set(wanted))


def collapse_mlp(model, params: Params, layers: Iterable[str] | None = None):
    """Folds linear layers into the layer that follows them; returns ``(smaller_model, params)``.

    Every chosen linear layer ``linear_{i}_{j}`` is multiplied into its successor (the next linear
    layer, the next ReLU layer, or the head), last first, so any number and width of linear
    layers collapse. Outputs are unchanged up to float rounding (matmuls run at
    ``Precision.HIGHEST``). Inputs are not modified.

    For :class:`~jaxprune.models.MLP` only (dense linear layers, Eq. 6): the PReLU swap
    rebuilds that class. Any other model: :func:`jaxprune.collapse`.

    Args:
      model: an ``MLP``.
      params: its parameter pytree (``variables["params"]``).
      layers: names of linear layers to fold; default all of them.

    Returns:
      ``(model', params')`` where ``model'`` has the folded layers removed from ``linear_after``
      (remaining linear layers renumbered) and ``params'`` matches it.

    Raises:
      ValueError: ``params`` do not match ``model`` (the message names the path), or ``layers``
        names a non-linear layer.
      TypeError: ``model`` is not a supported module.

    References:
      Paper 000, sec. 3.1, Eqs. 4-6.
    """
    check_params(model, params)
    targets = _targets(model, layers)
    new = {name: dict(layer) for name, layer in params.items()}
    n_blocks = len(model.unit_layers())
    remaining = [list(range(len(model.linear_widths(i)))) for i in range(n_blocks)]
    for i, j in reversed(targets):
        chain = remaining[i]
        pos = chain.index(j)
        if pos + 1 < len(chain):
            succ = f"linear_{i}_{chain[pos + 1]}"
        elif i + 1 < n_blocks:
            succ = model.unit_layers()[i + 1]
        else:
            succ = "out"
        new[succ] = _fold(new[f"linear_{i}_{j}"], new[succ])
        del new[f"linear_{i}_{j}"]
        chain.pop(pos)

    out_params, linear_after = {}, []
    for name, layer in new.items():
        if not name.startswith("linear_"):
            out_params[name] = layer
    for i in range(n_blocks):
        widths = model.linear_widths(i)
        kept = remaining[i]
        linear_after.append(tuple(widths[j] for j in kept))
        for new_j, old_j in enumerate(kept):
            out_params[f"linear_{i}_{new_j}"] = new[f"linear_{i}_{old_j}"]
    linear_after = tuple(linear_after) if any(linear_after) else ()
    small = dataclasses.replace(model, linear_after=linear_after)
    order = _layer_order(small)
    return small, {name: out_params[name] for name in order}


def _layer_order(model) -> list[str]:
    names = []
    for i, unit_layer in enumerate(model.unit_layers()):
        names.append(unit_layer)
        names += [f"linear_{i}_{j}" for j in range(len(model.linear_widths(i)))]
    return [*names, "out"]
