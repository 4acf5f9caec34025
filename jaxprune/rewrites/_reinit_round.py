"""One reinitialization round, w <- (1 - s) * w + s * eta (paper 002, Eq. 1)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxprune._types import Mask, Model, Params
from jaxprune.graph.extend import check_model_kwargs
from jaxprune.rewrites._optimizer_state import reset_optimizer_state

__all__ = ["model_initializer", "reinit_round", "reinitialize"]


def _check_mask(params: Params, mask: Mask, name: str = "mask") -> None:
    if jax.tree.structure(mask) != jax.tree.structure(params):  # type: ignore[operator]
        raise ValueError(
            f"{name}: expected the structure of params {jax.tree.structure(params)}, "
            f"got {jax.tree.structure(mask)}"
        )
    for (path, p), m in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(mask), strict=True
    ):
        try:
            fits = jnp.broadcast_shapes(jnp.shape(m), jnp.shape(p)) == jnp.shape(p)
        except ValueError:
            fits = False
        if not fits:  # the mask must broadcast *to* the parameter, never widen it
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)}: shape {jnp.shape(m)} does not broadcast "
                f"to the parameter's {jnp.shape(p)}"
            )


def reinitialize(params: Params, mask: Mask, fresh: Params) -> Params:
    """Eq. (1): ``(1 - s) * w + s * eta`` leaf by leaf, with ``s = mask`` and ``eta = fresh``.

    Implemented as a select (``jnp.where``), so a masked entry is *exactly* its fresh value and an
    unmasked one exactly its old value, whatever the values (no ``0 * inf``). An all-False mask is
    a no-op. Dtypes of ``params`` are kept.

    Args:
      params: current parameters.
      mask: pytree of booleans (or 0/1) with the structure of ``params``; each leaf broadcasts
        to its parameter (a scalar ``True`` redraws a whole tensor).
      fresh: a new draw of the parameters (same structure), e.g. ``model.init(key, x)["params"]``.

    Returns:
      The new parameters.

    Raises:
      ValueError: when ``mask`` or ``fresh`` does not match ``params``.

    >>> import jax.numpy as jnp
    >>> w = {"k": jnp.array([1.0, 2.0, 3.0])}
    >>> s, eta = {"k": jnp.array([0, 1, 0])}, {"k": jnp.array([9.0, 8.0, 7.0])}
    >>> reinitialize(w, s, eta)["k"].tolist()
    [1.0, 8.0, 3.0]

    References:
      Paper 002, sec. 1, Eq. (1) ("reinitialization round").
    """
    _check_mask(params, mask)
    _check_mask(params, fresh, "fresh")
    return jax.tree.map(
        lambda w, s, e: jnp.where(jnp.asarray(s, bool), jnp.asarray(e, w.dtype), w),
        params,
        mask,
        fresh,
    )


def model_initializer(
    model: Model, x: jax.Array, *, model_kwargs: Mapping[str, Any] | None = None
) -> Callable[[jax.Array], Params]:
    """``key -> model.init(key, x[:1], **model_kwargs)["params"]``: each layer's own initializer.

    >>> import jax, jaxprune as jp
    >>> init = model_initializer(jp.models.BlockMLP(hidden=(4,), out=2), jax.numpy.zeros((1, 3)))
    >>> init(jax.random.key(0))["relu_0"]["kernel"].shape
    (3, 4)
    """
    x, kwargs = jnp.asarray(x), check_model_kwargs(model_kwargs)
    return lambda key: model.init(key, x[:1], **kwargs)["params"]


def reinit_round(
    params: Params,
    mask: Mask,
    init_fn: Callable[[jax.Array], Params],
    *,
    key: jax.Array,
    optimizer: optax.GradientTransformation | None = None,
    opt_state: Any = None,
) -> tuple[Params, Any]:
    """A reinitialization round: redraws the masked entries, resets their optimizer state.

    ``eta = init_fn(key)`` is a full new draw of the parameters, so every masked entry comes from
    its own layer's initializer (He/Lecun kernels, zero biases, unit layer-norm scales, ...).
    When ``optimizer`` is given, the optimizer-state entries under the mask (momenta, Adam
    moments, of any optax optimizer) are reset with
    :func:`~jaxprune.rewrites.reset_optimizer_state`, so a fresh weight does not inherit its
    predecessor's momentum. Pure and jittable (``init_fn`` is traced).

    Args:
      params: current parameters.
      mask: pytree of booleans (the binary ``s`` of Eq. 1), leaves broadcastable to the params.
      init_fn: ``key -> params`` (see :func:`model_initializer`).
      key: PRNG key for ``eta``.
      optimizer: the optax transformation that made ``opt_state`` (optional).
      opt_state: its state (required with ``optimizer``).

    Returns:
      ``(new_params, new_opt_state)`` (``opt_state`` unchanged when ``optimizer`` is None).

    Raises:
      ValueError: when the mask does not match the params or only one of ``optimizer`` /
        ``opt_state`` is given.

    >>> import jax, jax.numpy as jnp, optax, jaxprune as jp
    >>> model = jp.models.BlockMLP(hidden=(4,), out=2)
    >>> init = model_initializer(model, jnp.zeros((1, 3)))
    >>> params = init(jax.random.key(0))
    >>> mask = jax.tree.map(lambda p: jnp.zeros(p.shape, bool), params)
    >>> mask["out"]["kernel"] = jnp.ones((4, 2), bool)
    >>> tx = optax.sgd(0.1, momentum=0.9)
    >>> new, state = reinit_round(params, mask, init, key=jax.random.key(1),
    ...                           optimizer=tx, opt_state=tx.init(params))
    >>> bool((new["relu_0"]["kernel"] == params["relu_0"]["kernel"]).all())
    True
    >>> bool((new["out"]["kernel"] == init(jax.random.key(1))["out"]["kernel"]).all())
    True

    References:
      Paper 002, sec. 1, Eq. (1) and sec. 3 ("the update in (1) is applied for some random
      initialization eta").
    """
    if (optimizer is None) != (opt_state is None):
        raise ValueError("optimizer, opt_state: give both (to reset the state) or neither")
    new = reinitialize(params, mask, init_fn(key))
    if optimizer is not None:
        opt_state = reset_optimizer_state(optimizer, opt_state, new, mask)
    return new, opt_state
