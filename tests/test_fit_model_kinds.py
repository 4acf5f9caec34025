"""Many seeds of every model kind: each seed's own initial weights, or an explicit same start;
ordinary models (``nn.Sequential``, per-example equinox modules, params-only linen) in fit."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxprune as jp

X = jax.random.normal(jax.random.key(0), (48, 5))
Y = jnp.stack([jnp.sin(X[:, 0]) + X[:, 1] * X[:, 2], X[:, 3] - X[:, 4] ** 2], axis=1)
KEYS = jax.random.split(jax.random.key(7), 3)
FIT = dict(loss="mse", batch_size=16, progress=False)


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.fc1 = nnx.Linear(5, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        self.fc2 = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.fc2(self.drop(nnx.relu(self.bn(self.fc1(x)))))


class EqxNet(eqx.Module):
    layers: list

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.layers = [eqx.nn.Linear(5, 8, key=k1), eqx.nn.Linear(8, 2, key=k2)]

    def __call__(self, x):
        return jax.vmap(lambda v: self.layers[1](jax.nn.relu(self.layers[0](v))))(x)


def mlp(params, x):
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def draw_params(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (5, 8)) / np.sqrt(5),
        "b1": jnp.zeros(8),
        "w2": jax.random.normal(k2, (8, 2)) / np.sqrt(8),
    }


def _nnx_params(m):
    return nnx.to_pure_dict(nnx.split(m, nnx.Param, ...)[1])


KINDS = {
    # kind: (fixed model, its variables, init_fn, the trainable params of what init_fn returns)
    "nnx": (
        NnxNet(nnx.Rngs(0)),
        None,
        lambda k: NnxNet(nnx.Rngs(k)),
        _nnx_params,
    ),
    "equinox": (
        EqxNet(jax.random.key(0)),
        None,
        lambda k: EqxNet(k),
        lambda m: eqx.filter(m, eqx.is_inexact_array),
    ),
    "function": (mlp, draw_params(jax.random.key(0)), draw_params, lambda p: p),
}


def _seed(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def _assert_tree_close(a, b, atol=0.0):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) > 0
    for u, v in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=0, atol=atol)


def _max_diff(a, b):
    return max(
        float(jnp.abs(u - v).max()) for u, v in zip(*map(jax.tree.leaves, (a, b)), strict=True)
    )


# Adam after a step that keeps the params it was initialized with in its state: each run's
# optimizer state then holds its starting params (the first epoch's start)
_START = optax.GradientTransformation(lambda p: p, lambda u, s, p=None: (u, s))
TX = optax.chain(_START, optax.adam(1e-2))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_init_fn_gives_every_seed_its_own_start_and_run(kind):
    model, _, init_fn, params_of = KINDS[kind]  # a function needs no params besides init_fn
    kw = dict(init_fn=init_fn, optimizer=TX, max_epochs=4, **FIT)
    runs = jp.training.fit(model, (X, Y), keys=KEYS, **kw)
    start = runs.opt_state[0]
    for i, k in enumerate(KEYS):
        want = params_of(init_fn(jax.random.split(k)[0]))  # as model.init: the run key's first half
        _assert_tree_close(_seed(start, i), want, atol=1e-6)  # ulps: compiled vs eager
    assert _max_diff(_seed(start, 0), _seed(start, 1)) > 0.05
    assert _max_diff(_seed(start, 1), _seed(start, 2)) > 0.05
    assert _max_diff(start, runs.params) > 1e-3  # trained away from the start
    losses = np.asarray(runs.loss)
    assert len({round(float(v), 6) for v in losses}) == 3, losses
    one = jp.training.fit(model, (X, Y), keys=KEYS[2], **kw)  # run k of a batch == key k alone
    np.testing.assert_allclose(one.loss, losses[2], rtol=1e-5)
    _assert_tree_close(one.opt_state[0], _seed(start, 2))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_several_seeds_from_fixed_weights_need_init_fn_or_same_init(kind):
    model, variables, init_fn, params_of = KINDS[kind]
    kw = dict(variables=variables, optimizer=optax.sgd(0.0), **FIT)
    with pytest.raises(ValueError, match=r"keys: 3 seeds would all start from the same") as e:
        jp.training.fit(model, (X, Y), keys=KEYS, max_epochs=1, **kw)
    assert "init_fn=" in str(e.value) and "same_init=True" in str(e.value)
    with pytest.raises(ValueError, match=r"keys: 3 seeds would all start from the same"):
        jp.training.train_epochs(model, (X, Y), keys=KEYS, epochs=1, **kw)
    same = jp.training.fit(model, (X, Y), keys=KEYS, max_epochs=1, same_init=True, **kw)
    fixed = params_of(model) if variables is None else variables
    for i in range(3):
        _assert_tree_close(_seed(same.params, i), fixed)
    # one key and fixed weights: as always, no flag needed
    one = jp.training.train_epochs(model, (X, Y), keys=KEYS[0], epochs=1, **kw)
    _assert_tree_close(one.params, fixed)
    with pytest.raises(ValueError, match=r"same_init: .*init_fn"):
        jp.training.fit(
            model, (X, Y), keys=KEYS, max_epochs=1, same_init=True, init_fn=init_fn, **kw
        )


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(2)(nn.relu(x))


def test_linen_variables_and_several_keys_need_same_init_but_per_seed_params_do_not():
    model = BNNet()
    variables = model.init(jax.random.key(0), X[:1])
    kw = dict(optimizer=optax.sgd(0.0), max_epochs=1, **FIT)
    with pytest.raises(ValueError, match=r"keys: 3 seeds would all start") as e:
        jp.training.fit(model, (X, Y), keys=KEYS, variables=variables, **kw)
    assert "leave out variables=" in str(e.value)
    same = jp.training.fit(model, (X, Y), keys=KEYS, variables=variables, same_init=True, **kw)
    for i in range(3):
        _assert_tree_close(_seed(same.params, i), variables["params"])
    # per-seed params (a leading seed axis) are per-seed starts: no flag
    per_seed = jax.vmap(lambda k: model.init(k, X[:1])["params"])(KEYS)
    r = jp.training.fit(model, (X, Y), keys=KEYS, params=per_seed, **kw)
    _assert_tree_close(r.params, per_seed)
    with pytest.raises(ValueError, match=r"same_init: .*model.init"):
        jp.training.fit(model, (X, Y), keys=KEYS, same_init=True, **kw)
    with pytest.raises(ValueError, match=r"init_fn: .*linen"):
        jp.training.fit(model, (X, Y), keys=KEYS, init_fn=lambda k: variables, **kw)


def test_init_fn_of_another_structure_is_named():
    bigger = lambda k: draw_params(k) | {"b2": jnp.zeros(2)}  # noqa: E731
    with pytest.raises(ValueError, match=r"init_fn: .*\['b2'\]"):
        jp.training.fit(
            mlp,
            (X, Y),
            keys=KEYS,
            variables=draw_params(jax.random.key(0)),
            init_fn=bigger,
            optimizer=optax.sgd(0.1),
            max_epochs=1,
            **FIT,
        )


def test_sequential_fits_with_default_arguments():
    model = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(2)])
    r = jp.training.fit(
        model, (X, Y), keys=jax.random.key(1), optimizer=optax.adam(2e-2), max_epochs=150, **FIT
    )
    start = float(jnp.mean((model.apply({"params": r.params}, X) - Y) ** 2))
    assert float(r.loss) < 0.05 * float(jnp.var(Y, axis=0).mean()), float(r.loss)
    assert start == pytest.approx(
        float(r.loss), rel=0.5
    )  # the returned params are the trained ones


class Forwarding(nn.Module):
    """``**kwargs`` passed on to a layer that takes no ``train``."""

    @nn.compact
    def __call__(self, x, **kwargs):
        return nn.Dense(2)(x, **kwargs)


def test_a_train_keyword_the_model_cannot_take_names_train_kw_none():
    kw = dict(optimizer=optax.adam(1e-2), max_epochs=2, **FIT)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'train'.*train_kw=None"):
        jp.training.fit(Forwarding(), (X, Y), keys=jax.random.key(0), **kw)
    r = jp.training.fit(Forwarding(), (X, Y), keys=jax.random.key(0), train_kw=None, **kw)
    assert np.isfinite(float(r.loss))


def test_a_per_example_equinox_module_on_a_batch_names_vmap():
    net = eqx.nn.MLP(5, 2, 8, 1, key=jax.random.key(0))  # stock equinox: one example per call
    kw = dict(optimizer=optax.adam(1e-2), max_epochs=3, **FIT)
    with pytest.raises(TypeError, match=r"seems to take one example.*jax\.vmap") as e:
        jp.training.fit(net, (X, Y), keys=jax.random.key(0), **kw)
    assert "x[0] of shape (5,)" in str(e.value)

    class Batched(eqx.Module):  # the wrapper the message shows
        net: eqx.nn.MLP

        def __call__(self, x):
            return jax.vmap(self.net)(x)

    start = float(jnp.mean((jax.vmap(net)(X) - Y) ** 2))
    kw.pop("optimizer")
    still = jp.training.fit(
        Batched(net), (X, Y), keys=jax.random.key(0), optimizer=optax.sgd(0.0), **kw
    )
    np.testing.assert_allclose(still.loss, start, rtol=1e-5)
    assert isinstance(still.variables, Batched)  # handed back as the module (functions inside)
    r = jp.training.fit(
        Batched(net), (X, Y), keys=jax.random.key(0), optimizer=optax.adam(1e-2), **kw
    )
    assert float(r.loss) < 0.9 * start


def test_a_per_example_function_names_vmap():
    one = lambda p, x: jnp.dot(p["w"], x)  # noqa: E731  (w: [2, 5], x: [5])
    params = {"w": jnp.ones((2, 5))}
    with pytest.raises(TypeError, match=r"seems to take one example.*jax\.vmap\(f, in_axes"):
        jp.training.fit(
            one, (X, Y), keys=jax.random.key(0), variables=params, optimizer=optax.sgd(0.1), **FIT
        )


def test_linen_params_without_their_collections_name_the_fix():
    model = BNNet()
    variables = model.init(jax.random.key(0), X[:1])
    with pytest.raises(ValueError, match=r"variables: .*'batch_stats'.*model\.init") as e:
        jp.training.fit(
            model,
            (X, Y),
            keys=jax.random.key(0),
            variables=variables["params"],
            optimizer=optax.sgd(0.1),
            **FIT,
        )
    assert "ScopeCollectionNotFound" not in str(e.value)


@pytest.mark.parametrize("kind", ["nnx", "equinox"])
def test_rounds_and_reinit_name_that_they_take_linen_modules(kind):
    model = KINDS[kind][0]
    kw = dict(keys=jax.random.key(0), loss="mse", optimizer=optax.sgd(0.1))
    with pytest.raises(TypeError, match=r"model: train_rounds redraws weights with model\.init"):
        jp.training.train_rounds(model, (X, Y), method="bl", steps_per_round=1, rounds=1, **kw)
    with pytest.raises(TypeError, match=r"model: train_with_reinit .*flax\.linen.*init_fn"):
        jp.training.train_with_reinit(model, (X, Y), **kw)


def test_linen_variables_with_a_seed_axis_point_to_params():
    model = BNNet()
    stacked = jax.vmap(lambda k: model.init(k, X[:1]))(KEYS)
    kw = dict(optimizer=optax.sgd(0.0), max_epochs=1, **FIT)
    with pytest.raises(ValueError, match=r"variables: .*leading axis of 3.*params="):
        jp.training.fit(model, (X, Y), keys=KEYS, variables=stacked, **kw)
