"""Models written the way users write them (Flax default names, nested modules, BatchNorm,
skips, concatenation, depthwise, NNX, equinox, a plain function); none uses jaxprune classes.

Each ``make_<name>()`` returns a :class:`Case`: the model, its variables, an example input,
the call's keyword arguments and the unit groups listed by hand (``{unit name: width}``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass
class Case:
    model: Any
    variables: Any
    x: jax.Array
    units: dict[str, int]
    kwargs: dict = dataclasses.field(default_factory=dict)

    @property
    def state(self) -> tuple:
        """What follows the model in a jaxprune call: ``(variables,)``, or ``()`` for NNX and
        equinox modules (they hold their state)."""
        return () if isinstance(self.model, (nnx.Module, eqx.Module)) else (self.variables,)


def _perturb_stats(variables, key):
    """Non-trivial BatchNorm running statistics (so folding/pruning tests are not vacuous)."""
    if "batch_stats" not in variables:
        return variables

    def bump(path, a):
        k = jax.random.fold_in(key, hash(jax.tree_util.keystr(path)) % (2**31))
        if path[-1].key == "var":
            return 0.5 + jax.random.uniform(k, a.shape)
        return 0.3 * jax.random.normal(k, a.shape)

    stats = jax.tree_util.tree_map_with_path(bump, variables["batch_stats"])
    params = jax.tree_util.tree_map_with_path(
        lambda p, a: (
            a + 0.1 * jax.random.normal(jax.random.fold_in(key, 7), a.shape)
            if p[-1].key in ("scale", "bias")
            else a
        ),
        variables["params"],
    )
    return {**variables, "params": params, "batch_stats": stats}


# -- linen -------------------------------------------------------------------------------------
class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(8)(x))
        x = nn.relu(nn.Dense(6)(x))
        return nn.Dense(3)(x)


def make_mlp():
    x = jax.random.normal(jax.random.key(1), (16, 5))
    m = MLP()
    return Case(m, m.init(jax.random.key(0), x), x, {"Dense_0": 8, "Dense_1": 6})


class Block(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        return nn.tanh(nn.Dense(self.width)(x))


class Nested(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = Block(7, name="block1")(x)
        x = Block(5, name="block2")(x)
        return nn.Dense(2, name="head")(x)


def make_nested():
    x = jax.random.normal(jax.random.key(1), (16, 4))
    m = Nested()
    return Case(m, m.init(jax.random.key(0), x), x, {"block1/Dense_0": 7, "block2/Dense_0": 5})


class CNN(nn.Module):
    """3x3 conv, a 1x1 linear conv, 3x3 conv, max-pool, flatten, dense head."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3))(x))
        x = nn.Conv(4, (1, 1))(x)  # linear: no activation
        x = nn.relu(nn.Conv(5, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(3)(x)


def make_cnn():
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 2))
    m = CNN()
    return Case(m, m.init(jax.random.key(0), x), x, {"Conv_0": 6, "Conv_2": 5})


class ResBlockV1(nn.Module):
    """Post-activation basic block; shortcut "A" (subsample + zero channels) or "B" (1x1 + BN)."""

    features: int
    strides: int = 1
    shortcut: str = "B"

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = lambda: nn.BatchNorm(use_running_average=not train)  # noqa: E731
        y = nn.Conv(self.features, (3, 3), strides=self.strides, use_bias=False)(x)
        y = nn.relu(norm()(y))
        y = norm()(nn.Conv(self.features, (3, 3), use_bias=False)(y))
        if x.shape != y.shape:
            if self.shortcut == "A":
                x = x[:, :: self.strides, :: self.strides, :]
                pad = self.features - x.shape[-1]
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, pad)))
            else:
                x = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x)
                x = norm()(x)
        return nn.relu(y + x)


class ResNetV1(nn.Module):
    shortcut: str = "B"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(4, (3, 3))(x)))
        x = ResBlockV1(4, shortcut=self.shortcut)(x, train)
        x = ResBlockV1(8, strides=2, shortcut=self.shortcut)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(3)(x)


def make_resnet_v1(shortcut="B"):
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    m = ResNetV1(shortcut=shortcut)
    v = _perturb_stats(m.init(jax.random.key(0), x), jax.random.key(3))
    if shortcut == "B":
        units = {
            "Conv_0": 4,  # stem + block 1's output: one group (identity shortcut)
            "ResBlockV1_0/Conv_0": 4,
            "ResBlockV1_1/Conv_0": 8,
            "ResBlockV1_1/Conv_1": 8,  # block 2's output, tied to its projection
        }
    else:
        units = {
            "Conv_0": 8,  # stem + block 1 + block 2's output (zero-padded shortcut): 8 wide
            "ResBlockV1_0/Conv_0": 4,
            "ResBlockV1_1/Conv_0": 8,
        }
    return Case(m, v, x, units, {"train": False})


class ResBlockV2(nn.Module):
    """Pre-activation block (He et al. 2016): BN-ReLU-conv twice; projection on the
    pre-activated input when the shape changes."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = lambda: nn.BatchNorm(use_running_average=not train)  # noqa: E731
        h = nn.relu(norm()(x))
        shortcut = x
        if x.shape[-1] != self.features or self.strides != 1:
            shortcut = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(h)
        y = nn.Conv(self.features, (3, 3), strides=self.strides, use_bias=False)(h)
        y = nn.Conv(self.features, (3, 3), use_bias=False)(nn.relu(norm()(y)))
        return y + shortcut


class ResNetV2(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = ResBlockV2(4)(x, train)
        x = ResBlockV2(6, strides=2)(x, train)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))


def make_resnet_v2():
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    m = ResNetV2()
    v = _perturb_stats(m.init(jax.random.key(0), x), jax.random.key(3))
    units = {
        "Conv_0": 4,  # stem + block 1's residual branch output
        "ResBlockV2_0/Conv_0": 4,
        "ResBlockV2_1/Conv_0": 6,  # the projection (first in the trace) + the branch output
        "ResBlockV2_1/Conv_1": 6,
    }
    return Case(m, v, x, units, {"train": False})


class Concat(nn.Module):
    """Two branches concatenated on channels, then a dense layer reads both."""

    @nn.compact
    def __call__(self, x):
        a = nn.relu(nn.Dense(3)(x))
        b = nn.relu(nn.Dense(4)(x))
        h = jnp.concatenate([a, b], axis=-1)
        return nn.Dense(2)(nn.relu(nn.Dense(5)(h)) + 0.0)


def make_concat():
    x = jax.random.normal(jax.random.key(1), (16, 6))
    m = Concat()
    # Flax names modules in construction order: Dense(2) is built before Dense(5).
    return Case(m, m.init(jax.random.key(0), x), x, {"Dense_0": 3, "Dense_1": 4, "Dense_3": 5})


class DepthwiseSeparable(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3))(x))
        x = nn.relu(nn.Conv(6, (3, 3), feature_group_count=6)(x))  # depthwise
        x = nn.relu(nn.Conv(5, (1, 1))(x))  # pointwise
        return nn.Dense(2)(jnp.mean(x, axis=(1, 2)))


def make_depthwise():
    x = jax.random.normal(jax.random.key(1), (4, 6, 6, 2))
    m = DepthwiseSeparable()
    return Case(m, m.init(jax.random.key(0), x), x, {"Conv_0": 6, "Conv_2": 5})


class TransformerMLP(nn.Module):
    """A transformer block's MLP half: LayerNorm, Dense(4d), gelu, Dense(d), residual."""

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        h = nn.gelu(nn.Dense(16)(h))
        return x + nn.Dense(x.shape[-1])(h)


def make_transformer_mlp():
    x = jax.random.normal(jax.random.key(1), (2, 5, 4))
    m = TransformerMLP()
    return Case(m, m.init(jax.random.key(0), x), x, {"Dense_0": 16})


# -- NNX, equinox, function ---------------------------------------------------------------------
def make_nnx_mlp():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.fc1 = nnx.Linear(5, 8, rngs=rngs)
            self.bn = nnx.BatchNorm(8, rngs=rngs)
            self.fc2 = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            return self.fc2(nnx.relu(self.bn(self.fc1(x))))

    m = Net(nnx.Rngs(0))
    m.eval()
    x = jax.random.normal(jax.random.key(1), (16, 5))
    return Case(m, None, x, {"fc1": 8})


def make_nnx_cnn():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(2, 6, (3, 3), rngs=rngs)
            self.conv2 = nnx.Conv(6, 4, (3, 3), rngs=rngs)
            self.head = nnx.Linear(4 * 6 * 6, 3, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.conv1(x))
            x = nnx.relu(self.conv2(x))
            return self.head(x.reshape((x.shape[0], -1)))

    m = Net(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 6, 6, 2))
    return Case(m, None, x, {"conv1": 6, "conv2": 4})


def make_equinox_mlp():
    import equinox as eqx

    class Net(eqx.Module):
        layers: list

        def __init__(self, key):
            k1, k2, k3 = jax.random.split(key, 3)
            self.layers = [
                eqx.nn.Linear(5, 8, key=k1),
                eqx.nn.Linear(8, 6, key=k2),
                eqx.nn.Linear(6, 3, key=k3),
            ]

        def __call__(self, x):
            def one(v):
                for layer in self.layers[:-1]:
                    v = jax.nn.relu(layer(v))
                return self.layers[-1](v)

            return jax.vmap(one)(x)

    x = jax.random.normal(jax.random.key(1), (16, 5))
    return Case(Net(jax.random.key(0)), None, x, {"layers/0": 8, "layers/1": 6})


def mlp_function(params, x):
    h = jnp.maximum(x @ params["w1"] + params["b1"], 0.0)
    return h @ params["w2"] + params["b2"]


def make_function():
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {
        "w1": jax.random.normal(k1, (5, 7)) / 2,
        "b1": jnp.full((7,), 0.1),
        "w2": jax.random.normal(k2, (7, 2)) / 3,
        "b2": jnp.zeros((2,)),
    }
    x = jax.random.normal(jax.random.key(1), (16, 5))
    return Case(mlp_function, params, x, {"w1": 7})


ZOO = {
    "mlp": make_mlp,
    "nested": make_nested,
    "cnn": make_cnn,
    "resnet_v1_a": lambda: make_resnet_v1("A"),
    "resnet_v1_b": lambda: make_resnet_v1("B"),
    "resnet_v2": make_resnet_v2,
    "concat": make_concat,
    "depthwise": make_depthwise,
    "transformer_mlp": make_transformer_mlp,
    "nnx_mlp": make_nnx_mlp,
    "nnx_cnn": make_nnx_cnn,
    "equinox_mlp": make_equinox_mlp,
    "function": make_function,
}
