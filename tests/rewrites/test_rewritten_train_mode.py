"""Collapsed and fused models train on: ``train=True`` with ``rngs=`` and ``mutable=`` where the
replaced layers are unchanged by it (dropout elsewhere, BatchNorm that was not folded), equal to
the original with the same keys; a folded BatchNorm or dropout inside a fused pair in train mode
is a GraphError naming it, never a silent wrong answer."""

import math

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from rewritten_pickle_models import DropNet

import jaxprune as jp

TOL = dict(rtol=1e-5, atol=1e-5)


class ChainDrop(nn.Module):
    """Dense -> Dense (a linear chain: collapses) -> relu -> Dropout -> Dense."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(8)(x)
        h = nn.Dense(8)(h)
        h = nn.Dropout(0.5, deterministic=not train)(nn.relu(h))
        return nn.Dense(3)(h)


class ChainBN(nn.Module):
    """Dense -> Dense -> BatchNorm -> relu -> Dropout -> Dense."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(8)(x)
        h = nn.Dense(8)(h)
        h = nn.BatchNorm(use_running_average=not train)(h)
        h = nn.Dropout(0.5, deterministic=not train)(nn.relu(h))
        return nn.Dense(3)(h)


class EqxDrop(eqx.Module):
    """Equinox: Linear -> Linear -> relu -> Dropout (with ``key=``) -> Linear."""

    l1: eqx.nn.Linear
    l2: eqx.nn.Linear
    l3: eqx.nn.Linear
    drop: eqx.nn.Dropout

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.l1 = eqx.nn.Linear(5, 8, key=k1)
        self.l2 = eqx.nn.Linear(8, 8, key=k2)
        self.l3 = eqx.nn.Linear(8, 3, key=k3)
        self.drop = eqx.nn.Dropout(0.5)

    def __call__(self, x, key=None):
        h = jax.nn.relu(jax.vmap(self.l2)(jax.vmap(self.l1)(x)))
        return jax.vmap(self.l3)(self.drop(h, key=key, inference=key is None))


def _data(n=96):
    x = jax.random.normal(jax.random.key(0), (n, 5))
    y = (x[:, 0] > 0).astype(jnp.int32) + (x[:, 1] > 0.5).astype(jnp.int32)
    return x, y


def _fit(model, variables, x, y, epochs=30):
    return jp.training.fit(
        model,
        (x, y),
        keys=jax.random.key(0),
        variables=variables,
        loss="cross_entropy",
        optimizer=optax.adam(0.03),
        batch_size=32,
        max_epochs=epochs,
        progress=False,
    )


def _ce(logits, y):
    return float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())


def test_collapsed_dropout_model_in_train_mode_equals_the_original():
    x, _ = _data()
    net = ChainDrop()
    v = net.init(jax.random.key(1), x)
    result = jp.collapse(net, v, x)
    small, sv = result.model, result.variables
    assert sorted(sv["params"]) == ["Dense_0", "Dense_2"]  # Dense_1 folded into Dense_0
    for seed in (2, 3):
        rngs = {"dropout": jax.random.key(seed)}
        want = net.apply(v, x, train=True, rngs=rngs)
        np.testing.assert_allclose(small.apply(sv, x, train=True, rngs=rngs), want, **TOL)
        assert not np.allclose(want, net.apply(v, x), atol=1e-2)  # dropout acts
    step = jax.jit(lambda k: small.apply(sv, x, train=True, rngs={"dropout": k}))
    want = net.apply(v, x, train=True, rngs={"dropout": jax.random.key(4)})
    np.testing.assert_allclose(step(jax.random.key(4)), want, **TOL)
    np.testing.assert_allclose(small.apply(sv, x), net.apply(v, x), **TOL)  # eval still


def test_collapsed_dropout_model_trains_with_fit():
    x, y = _data()
    net = ChainDrop()
    v = net.init(jax.random.key(1), x)
    result = jp.collapse(net, v, x)
    small, sv = result.model, result.variables
    before = _ce(small.apply(sv, x), y)
    res = _fit(small, sv, x, y)
    assert float(res.loss) < min(before, math.log(3)) - 0.2
    assert _ce(small.apply({"params": res.params}, x), y) < before - 0.2


def test_collapse_keeping_batchnorm_trains_with_batch_statistics():
    x, y = _data()
    net = ChainBN()
    v = net.init(jax.random.key(1), x)
    v["batch_stats"] = jax.tree.map(lambda a: a + 0.5, v["batch_stats"])  # running != batch
    result = jp.collapse(net, v, x, fold_batchnorm=False)
    small, sv = result.model, result.variables
    assert sorted(sv["params"]) == ["BatchNorm_0", "Dense_0", "Dense_2"]
    assert sorted(sv["batch_stats"]) == ["BatchNorm_0"]
    rngs = {"dropout": jax.random.key(2)}
    got, got_up = small.apply(sv, x, train=True, rngs=rngs, mutable=["batch_stats"])
    want, want_up = net.apply(v, x, train=True, rngs=rngs, mutable=["batch_stats"])
    np.testing.assert_allclose(got, want, **TOL)
    for a, b in zip(jax.tree.leaves(got_up), jax.tree.leaves(want_up), strict=True):
        np.testing.assert_allclose(a, b, **TOL)  # the statistics update as the original's
    # the new mean is momentum 0.99 of the old one plus 0.01 of the batch mean (closed form)
    h = x @ sv["params"]["Dense_0"]["kernel"] + sv["params"]["Dense_0"]["bias"]
    mean = 0.99 * sv["batch_stats"]["BatchNorm_0"]["mean"] + 0.01 * h.mean(0)
    np.testing.assert_allclose(got_up["batch_stats"]["BatchNorm_0"]["mean"], mean, **TOL)
    np.testing.assert_allclose(small.apply(sv, x), net.apply(v, x), **TOL)
    before = _ce(small.apply(sv, x), y)
    res = _fit(small, sv, x, y)
    assert float(res.loss) < min(before, math.log(3)) - 0.2
    moved = res.state["batch_stats"]["BatchNorm_0"]["mean"]
    assert not np.allclose(moved, sv["batch_stats"]["BatchNorm_0"]["mean"], atol=1e-3)


def test_a_folded_batchnorm_in_train_mode_is_an_error_naming_it():
    x, _ = _data(16)
    net = ChainBN()
    v = net.init(jax.random.key(1), x)
    result = jp.collapse(net, v, x)  # BatchNorm_0 folded into Dense_0
    small, sv = result.model, result.variables
    assert "batch_stats" not in sv
    rngs = {"dropout": jax.random.key(2)}
    with pytest.raises(
        jp.GraphError,
        match=r"BatchNorm layer\(s\) \['BatchNorm_0'\] that collapse folded into 'Dense_0' use "
        r"batch statistics.*fold_batchnorm=False.*train=False",
    ):
        small.apply(sv, x, train=True, rngs=rngs, mutable=["batch_stats"])
    with pytest.raises(jp.GraphError, match=r"folded the BatchNorm layer\(s\) \['BatchNorm_0'\]"):
        small.apply(sv, x, train=True, rngs=rngs)  # no mutable=: the original cannot trace
    np.testing.assert_allclose(small.apply(sv, x), net.apply(v, x), **TOL)


def test_fused_model_in_train_mode_is_the_fused_layer_on_the_dropped_out_input():
    x, y = _data()
    net = DropNet()  # Dense -> relu -> Dropout -> Dense_1 -> relu -> Dense_2
    v = net.init(jax.random.key(0), x)
    result = jp.fuse(net, v, ("Dense_1", "Dense_2"), [x])
    small, sv = result.model, result.variables
    rngs = {"dropout": jax.random.key(3)}
    _, inter = net.apply(v, x, train=True, rngs=rngs, capture_intermediates=True)
    a0 = inter["intermediates"]["Dropout_0"]["__call__"][0]  # the original's dropped-out input
    p = sv["params"]["Dense_1"]
    want = a0 @ p["kernel"] + p["bias"]  # the fused layer on it
    np.testing.assert_allclose(small.apply(sv, x, train=True, rngs=rngs), want, **TOL)
    h = jax.nn.relu(x @ sv["params"]["Dense_0"]["kernel"] + sv["params"]["Dense_0"]["bias"])
    np.testing.assert_allclose(small.apply(sv, x), h @ p["kernel"] + p["bias"], **TOL)
    before = _ce(small.apply(sv, x), y)
    res = _fit(small, sv, x, y)
    assert float(res.loss) < before - 0.2


def test_dropout_inside_a_fused_pair_in_train_mode_is_an_error():
    x, _ = _data(32)
    net = DropNet()
    v = net.init(jax.random.key(0), x)
    result = jp.fuse(net, v, ("Dense_0", "Dense_1"), [x])  # Dropout_0 between them
    small, sv = result.model, result.variables
    with pytest.raises(
        jp.GraphError,
        match=r"fused model traces differently in this call \(train=True, rngs=…\): the part "
        r"that fuse replaced \(layers \['Dense_0', 'Dense_1'\]\) computes differently here",
    ):
        small.apply(sv, x, train=True, rngs={"dropout": jax.random.key(1)})


def test_collapsed_equinox_model_takes_a_dropout_key():
    x, _ = _data(16)
    model = EqxDrop(jax.random.key(0))
    result = jp.collapse(model, None, x)
    small, sv = result.model, result.variables
    assert sorted(sv.variables) == ["l1", "l3"]
    for seed in (5, 6):
        key = jax.random.key(seed)
        np.testing.assert_allclose(small(x, key=key), model(x, key=key), **TOL)
    assert not np.allclose(model(x, key=jax.random.key(5)), model(x), atol=1e-2)
    np.testing.assert_allclose(small(x), model(x), **TOL)
