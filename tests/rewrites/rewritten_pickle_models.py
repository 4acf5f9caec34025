"""Module-level models (importable in another process) for the save/load tests of rewritten
models: a linen net with dropout, an NNX net with BatchNorm, an equinox MLP, a plain function."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx


class DropNet(nn.Module):
    """Dense-relu-dropout-Dense-relu-Dense, flax default names, a ``train`` flag."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.Dense(8)(x))
        h = nn.Dropout(0.5, deterministic=not train)(h)
        h = nn.relu(nn.Dense(6)(h))
        return nn.Dense(3)(h)


class NNXNet(nnx.Module):
    def __init__(self, rngs):
        self.fc1 = nnx.Linear(5, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.fc2 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.fc2(nnx.relu(self.bn(self.fc1(x))))


class EqxNet(eqx.Module):
    layers: list

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.layers = [eqx.nn.Linear(5, 8, key=k1), eqx.nn.Linear(8, 3, key=k2)]

    def __call__(self, x):
        return jax.vmap(lambda v: self.layers[1](jax.nn.relu(self.layers[0](v))))(x)


def mlp(params, x):
    h = jnp.maximum(x @ params["w1"] + params["b1"], 0.0)
    return h @ params["w2"] + params["b2"]
