"""LW on any traced linen model: blocks derived from the graph, slots placed from it (paper 002)."""

import flax.linen as nn
import jax
import numpy as np
import optax

import jaxprune as jp
from jaxprune.graph.extend import default_blocks


class ConvBlock(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.features, (3, 3), use_bias=False)(x)
        return nn.relu(nn.BatchNorm(use_running_average=not train)(x))


class Net(nn.Module):
    """Written as users write it: default names, nested blocks, BatchNorm, dropout, a pool."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(6, (3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = ConvBlock(5)(x, train)
        x = nn.max_pool(ConvBlock(4)(x, train), (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.Dropout(0.1, deterministic=not train)(nn.relu(nn.Dense(8)(x)))
        return nn.Dense(3)(x)


class Reference(Net):
    """``Net`` with Algorithm 1's lambda layers written into its code by hand."""

    stats: tuple = ((0.0, 1.0),) * 5

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = lambda h, k: (h - self.stats[k][0]) / self.stats[k][1]
        x = nn.Conv(6, (3, 3))(x)
        x = norm(nn.relu(nn.BatchNorm(use_running_average=not train)(x)), 0)
        x = norm(ConvBlock(5)(x, train), 1)
        x = norm(nn.max_pool(ConvBlock(4)(x, train), (2, 2), strides=(2, 2)), 2)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dropout(0.1, deterministic=not train)(norm(nn.relu(nn.Dense(8)(x)), 3))
        return norm(nn.Dense(3)(x), 4)


BLOCKS = (("Conv_0", "BatchNorm_0"), ("ConvBlock_0",), ("ConvBlock_1",), ("Dense_0",), ("Dense_1",))


def _setup():
    x = jax.random.normal(jax.random.key(0), (16, 8, 8, 2))
    variables = Net().init(jax.random.key(1), x)
    return x, variables, jp.trace(Net(), variables, x)


def test_default_blocks_group_each_layer_with_its_norms():
    _, _, graph = _setup()
    assert default_blocks(graph) == BLOCKS


def test_slotted_model_without_slots_is_the_model():
    x, variables, graph = _setup()
    slotted = jp.rewrites.lw_slots(Net(), graph)
    np.testing.assert_array_equal(slotted.apply(variables, x), Net().apply(variables, x))
    kw = dict(train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
    out_s, st_s = slotted.apply(variables, x, **kw)
    out_m, st_m = Net().apply(variables, x, **kw)
    np.testing.assert_array_equal(out_s, out_m)
    jax.tree.map(np.testing.assert_array_equal, st_s, st_m)


def test_slots_equal_the_lambda_layers_written_by_hand():
    """Every slot set by ``update_normalization`` in Algorithm 1's order: the slotted model is
    the reference network with ``(h - mu) / sigma`` in its code, and slot 1 holds the mean and
    std of ``relu(BatchNorm_0(...))`` computed independently."""
    x, variables, graph = _setup()
    slotted = jp.rewrites.lw_slots(Net(), graph)
    v = slotted.init(jax.random.key(1), x)
    jax.tree.map(np.testing.assert_array_equal, v["params"], variables["params"])
    for k in range(1, 6):
        v = jp.rewrites.update_normalization(slotted, v, x, k)
    _, inter = Net().apply(variables, x, capture_intermediates=True)
    h1 = jax.nn.relu(inter["intermediates"]["BatchNorm_0"]["__call__"][0])
    slots = v["lw_norm"]
    np.testing.assert_allclose(slots["block_1"]["mean"], h1.mean(), rtol=1e-5)
    np.testing.assert_allclose(slots["block_1"]["std"], h1.std(), rtol=1e-5)
    stats = tuple(
        (float(slots[f"block_{k}"]["mean"]), float(slots[f"block_{k}"]["std"])) for k in range(1, 6)
    )
    assert all(abs(m) > 1e-3 and abs(s - 1) > 1e-3 for m, s in stats[:4])
    want = Reference(stats=stats).apply(variables, x)
    np.testing.assert_allclose(slotted.apply(v, x), want, rtol=1e-5, atol=1e-5)
    # the normalized network's output has mean 0 and std 1 (the last slot normalizes it)
    out = slotted.apply(v, x)
    np.testing.assert_allclose([out.mean(), out.std()], [0.0, 1.0], atol=1e-5)


def test_train_rounds_lw_normalizes_a_user_model():
    """``method="lw"`` on a model without slot code: it is wrapped, the slots are set (not the
    identity) and the reported loss is the wrapped model's on the returned variables."""
    x = jax.random.normal(jax.random.key(0), (32, 8, 8, 2))
    y = jax.random.randint(jax.random.key(1), (32,), 0, 3)
    res = jp.training.train_rounds(
        Net(),
        (x, y),
        keys=jax.random.key(3),
        method="lw",
        loss="cross_entropy",
        optimizer=optax.sgd(0.05),
        steps_per_round=2,
        rounds=5,
    )
    assert isinstance(res.model, jp.rewrites.LWSlots)
    slots = res.variables["lw_norm"]
    assert sorted(slots) == [f"block_{k}" for k in range(1, 6)]
    assert all(abs(float(slots[f"block_{k}"]["std"]) - 1) > 1e-3 for k in range(1, 6))
    logits = res.model.apply(res.variables, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    np.testing.assert_allclose(res.loss, loss, rtol=1e-5)
