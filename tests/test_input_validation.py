"""Bad input at the public boundary gets a specific error naming the argument (README table)."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from jaxprune.training._checks import check_finite, check_params_like_model

MODEL = jp.models.MLP(hidden=(4,))
X, Y = jp.data.paint("square", size=4)
PARAMS = MODEL.init(jax.random.key(0), X[:1])["params"]
FIT = dict(loss="mse", optimizer=optax.adam(1e-2), max_epochs=1, progress=False)


def test_check_finite_names_the_leaf_and_the_first_bad_entry():
    check_finite("data", (np.arange(3), np.array([True]), jnp.ones((2, 2))))  # ints, bools: ok
    x = np.ones((3, 4), np.float32)
    x[2, 1], x[2, 3] = np.inf, np.nan
    with pytest.raises(
        ValueError,
        match=r"^data\[1\]: expected finite values, got 2 NaN/inf of 12 entries "
        r"\(first at index \(2, 1\)\)$",
    ):
        check_finite("data", (np.zeros(3), x))


def _fit(model, keys, data, **kw):
    return jp.training.fit(model, data, keys=keys, **kw)


def _train_epochs(model, keys, data, **kw):
    kw = {k: v for k, v in kw.items() if k != "max_epochs"}
    return jp.training.train_epochs(model, data, keys=keys, epochs=1, **kw)


TRAINERS = [_fit, _train_epochs]

# Every public trainer with the smallest arguments it accepts besides ``keys`` and ``loss``.
_TX = optax.adam(1e-2)
LOOPS = {
    "fit": (jp.training.fit, dict(optimizer=_TX, max_epochs=1, progress=False)),
    "train_epochs": (jp.training.train_epochs, dict(optimizer=_TX, epochs=1, progress=False)),
    "train_rounds": (
        jp.training.train_rounds,
        dict(optimizer=_TX, method="bl", steps_per_round=1, rounds=1),
    ),
    "train_with_reinit": (jp.training.train_with_reinit, dict(optimizer=_TX, max_epochs=1)),
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_every_loop_requires_loss_and_takes_keys_only_by_keyword(name):
    train, kw = LOOPS[name]
    with pytest.raises(
        TypeError, match=rf"{name}\(\) missing 1 required keyword-only argument: 'loss'"
    ):
        train(MODEL, (X, Y), keys=jax.random.key(0), **kw)
    with pytest.raises(
        TypeError, match=rf"{name}\(\) missing 1 required keyword-only argument: 'keys'"
    ):
        train(MODEL, (X, Y), loss="mse", **kw)
    with pytest.raises(TypeError, match=r"positional argument"):
        train(MODEL, jax.random.key(0), (X, Y), loss="mse", **kw)


def test_step_and_epoch_makers_take_the_key_only_by_keyword():
    step = jp.training.make_train_step(MODEL, "mse", _TX)
    epoch = jp.training.make_epoch(MODEL, "mse", _TX, batch_size=8)
    s = _TX.init(PARAMS)
    with pytest.raises(TypeError, match=r"positional argument"):
        step(PARAMS, s, (X, Y), jax.random.key(0))
    with pytest.raises(TypeError, match=r"positional argument"):
        epoch(PARAMS, s, X, Y, jax.random.key(0))
    with pytest.raises(TypeError, match=r"missing 1 required keyword-only argument: 'key'"):
        epoch(PARAMS, s, X, Y)
    with pytest.raises(TypeError, match=r"make_epoch\(\) missing 1 required positional .*'loss'"):
        jp.training.make_epoch(MODEL, optimizer=_TX, batch_size=8)


@pytest.mark.parametrize("train", TRAINERS)
def test_training_rejects_nan_or_inf_in_data_before_compiling(train):
    x = X.copy()
    x[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"data\[0\]: expected finite values, got 1 NaN/inf"):
        train(MODEL, jax.random.key(0), (x, Y), **FIT)
    y = Y.copy()
    y[0] = -np.inf
    with pytest.raises(ValueError, match=r"data\[1\]: .* \(first at index \(0, 0\)\)"):
        train(MODEL, jax.random.key(0), (X, y), **FIT)


@pytest.mark.parametrize("min_delta", [-0.1, float("nan"), float("inf")])
def test_min_delta_must_be_finite_and_non_negative(min_delta):
    with pytest.raises(ValueError, match=r"min_delta: expected a finite value >= 0, got"):
        jp.training.fit(MODEL, (X, Y), keys=jax.random.key(0), min_delta=min_delta, **FIT)
    with pytest.raises(ValueError, match=r"min_delta: expected a finite value >= 0, got"):
        jp.training.train_with_reinit(
            MODEL,
            (X, Y),
            keys=jax.random.key(0),
            loss="mse",
            optimizer=optax.adam(1e-2),
            min_delta=min_delta,
        )


@pytest.mark.parametrize("train", TRAINERS)
def test_training_rejects_params_that_do_not_fit_the_model_or_are_not_finite(train):
    keys = jax.random.split(jax.random.key(0), 2)
    two = jax.tree.map(lambda a: jnp.stack([a, a]), PARAMS)
    narrow = jp.models.MLP(hidden=(3,))
    with pytest.raises(
        ValueError, match=r"params\['out'\]\['kernel'\]: expected shape \(2, 3, 1\)"
    ):
        train(narrow, keys, (X, Y), params=two, **FIT)
    no_out = {k: v for k, v in two.items() if k != "out"}
    with pytest.raises(ValueError, match=r"params: expected the entries .* missing \["):
        train(MODEL, keys, (X, Y), params=no_out, **FIT)
    bad = {**two, "relu_0": {**two["relu_0"], "bias": two["relu_0"]["bias"].at[1, 2].set(jnp.inf)}}
    with pytest.raises(
        ValueError, match=r"params\['relu_0'\]\['bias'\]: expected finite .*\(1, 2\)"
    ):
        train(MODEL, keys, (X, Y), params=bad, **FIT)


def test_check_params_like_model_reads_shapes_only():
    check_params_like_model(MODEL, PARAMS, X)
    check_params_like_model(MODEL, jax.tree.map(lambda a: a[None], PARAMS), X, (1,))
    extra = {**PARAMS, "relu_9": PARAMS["relu_0"]}
    with pytest.raises(ValueError, match=r"unexpected \[\"\['relu_9'\]\['bias'\]\""):
        check_params_like_model(MODEL, extra, X)


def test_train_with_reinit_rejects_non_finite_data():
    y = Y.copy()
    y[3] = np.nan
    with pytest.raises(ValueError, match=r"data\[1\]: expected finite values"):
        jp.training.train_with_reinit(
            MODEL, (X, y), keys=jax.random.key(0), loss="mse", optimizer=optax.adam(1e-2)
        )


def test_unknown_dataset_names():
    with pytest.raises(ValueError, match=r"name: expected one of \('digits', 'mnist', "):
        jp.data.image_dataset("fashion")
    with pytest.raises(ValueError, match="split: expected 'train' or 'test'"):
        jp.data.image_dataset("digits", "validation")
    with pytest.raises(ValueError, match=r"shape: unknown shape 'octagon'; expected one of"):
        jp.data.paint("octagon")


def test_missing_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"needs scikit-learn: pip install 'jaxprune\[data\]'"):
        jp.data.image_dataset("digits")
