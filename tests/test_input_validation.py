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


def _train_epochs(model, keys, data, **kw):
    kw = {k: v for k, v in kw.items() if k != "max_epochs"}
    return jp.training.train_epochs(model, keys, data, epochs=1, **kw)


TRAINERS = [jp.training.fit, _train_epochs]


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
        jp.training.fit(MODEL, jax.random.key(0), (X, Y), min_delta=min_delta, **FIT)
    with pytest.raises(ValueError, match=r"min_delta: expected a finite value >= 0, got"):
        jp.training.train_with_reinit(
            MODEL, jax.random.key(0), (X, Y), optimizer=optax.adam(1e-2), min_delta=min_delta
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
        jp.training.train_with_reinit(MODEL, jax.random.key(0), (X, y), optimizer=optax.adam(1e-2))


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
