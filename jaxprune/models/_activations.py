"""Activations and initializers by name (strings keep a model a hashable, printable dataclass)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": lambda z: z,
    "sigmoid": jax.nn.sigmoid,
    "softmax": lambda z: jax.nn.softmax(z, axis=-1),
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}


_INITIALIZERS = {
    "glorot_uniform": nn.initializers.glorot_uniform(),
    "glorot_normal": nn.initializers.glorot_normal(),
    "lecun_normal": nn.initializers.lecun_normal(),
    "he_normal": nn.initializers.he_normal(),
    "he_uniform": nn.initializers.he_uniform(),
}


def kernel_initializer(name: str):
    """The Flax initializer called ``name``; raises ``ValueError`` listing the valid names."""
    try:
        return _INITIALIZERS[name]
    except KeyError:
        raise ValueError(
            f"kernel_init: unknown initializer {name!r}; expected one of {sorted(_INITIALIZERS)}"
        ) from None


def output_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Returns the activation called ``name``; raises ``ValueError`` listing the valid names."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"out_activation: unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}"
        ) from None
