"""Output activations by name (kept as strings so a model stays a hashable dataclass)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": lambda z: z,
    "sigmoid": jax.nn.sigmoid,
    "softmax": lambda z: jax.nn.softmax(z, axis=-1),
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}


def output_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Returns the activation called ``name``; raises ``ValueError`` listing the valid names."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"out_activation: unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}"
        ) from None
