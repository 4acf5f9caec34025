"""LW blocks default to the graph's layers, each with the norms after it, in forward order."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprune as jp
from jaxprune.graph.extend import default_blocks


class _Net(nn.Module):
    """Names out of alphabetical order, and a norm between two layers."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.LayerNorm(name="b_norm")(nn.Dense(6, name="z_in")(x)))
        x = nn.relu(nn.Dense(5, name="m_mid")(x))
        return nn.Dense(3, name="a_out")(x)


def test_default_blocks_follow_the_forward_pass():
    x = jnp.ones((2, 4))
    net = _Net()
    graph = jp.trace(net, net.init(jax.random.key(0), x), x)
    blocks = default_blocks(graph)
    assert blocks == (("z_in", "b_norm"), ("m_mid",), ("a_out",))


def test_train_rounds_lw_defaults_to_the_graph_order():
    """Without ``blocks`` and ``lw_blocks``: the graph's blocks in forward order; the run
    equals one with those blocks given explicitly."""
    x = jax.random.normal(jax.random.key(1), (32, 4))
    y = jax.random.randint(jax.random.key(2), (32,), 0, 3)
    kw = dict(
        method="lw",
        loss="cross_entropy",
        optimizer=optax.sgd(0.1),
        steps_per_round=2,
        normalize=False,
    )
    blocks = (("z_in", "b_norm"), ("m_mid",), ("a_out",))
    default = jp.training.train_rounds(_Net(), (x, y), keys=jax.random.key(3), rounds=3, **kw)
    given = jp.training.train_rounds(
        _Net(), (x, y), keys=jax.random.key(3), rounds=3, blocks=blocks, **kw
    )
    np.testing.assert_array_equal(default.history["loss"], given.history["loss"])
    jax.tree.map(np.testing.assert_array_equal, default.variables, given.variables)
