"""Analyses validate their data the way ``fit`` does: one NaN, a length mismatch or labels of
the wrong shape raise naming the argument, instead of all-NaN ratios ("0 of 16 units active")
that would lead a user to prune or reinitialize everything."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp


class Net(nn.Module):
    """A user's classifier: default names, BatchNorm, dropout."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.Dense(16)(x))
        h = nn.BatchNorm(use_running_average=not train)(h)
        h = nn.Dropout(0.1, deterministic=not train)(h)
        return nn.Dense(3, name="out")(h)


X = jax.random.normal(jax.random.key(0), (24, 4))
Y = jnp.arange(24) % 3
NET = Net()
VARIABLES = NET.init(jax.random.key(1), X)


def _with_nan(a, index):
    return jnp.asarray(a, jnp.float32).at[index].set(jnp.nan)


def _ablation(data, variables=VARIABLES):
    return jp.analysis.unit_ablation(NET, variables, data, "cross_entropy")


def _unchecked_ablation(data, graph):  # under jit the values cannot be inspected
    return jax.jit(lambda x, y: jp.analysis.unit_ablation(graph, None, (x, y), "cross_entropy"))(
        *data
    )


def _active(data, variables=VARIABLES):
    return jp.analysis.active_units(NET, variables, data, "cross_entropy")


def _sharpness(data, variables=VARIABLES):
    return jp.analysis.sharpness(NET, variables, data, [0.0, 0.1], key=jax.random.key(0), draws=1)


def _margins(data, variables=VARIABLES):
    return jp.analysis.softmax_margins(NET, variables, *data)


TAKES_DATA = {"unit_ablation": _ablation, "active_units": _active, "sharpness": _sharpness}
TAKES_X_Y = {"softmax_margins": _margins}


@pytest.mark.parametrize("fn", [*TAKES_DATA, *TAKES_X_Y])
def test_one_nan_in_the_inputs_is_named(fn):
    call = {**TAKES_DATA, **TAKES_X_Y}[fn]
    arg = "data[0]" if fn in TAKES_DATA else "x"
    with pytest.raises(
        ValueError, match=rf"^{re.escape(arg)}: expected finite values, got 1 NaN/inf .*\(5, 2\)"
    ):
        call((_with_nan(X, (5, 2)), Y))


@pytest.mark.parametrize("fn", [*TAKES_DATA])
def test_one_nan_or_inf_in_the_targets_is_named(fn):
    y = jax.nn.one_hot(Y, 3).at[7, 1].set(jnp.inf)
    with pytest.raises(ValueError, match=r"^data\[1\]: expected finite values, got 1 NaN/inf"):
        TAKES_DATA[fn]((X, y))


@pytest.mark.parametrize("fn", [*TAKES_DATA, *TAKES_X_Y])
def test_x_and_y_of_different_lengths_are_named(fn):
    call = {**TAKES_DATA, **TAKES_X_Y}[fn]
    arg = "data" if fn in TAKES_DATA else "x, y"
    with pytest.raises(ValueError, match=rf"^{arg}: x and y need the same non-zero length"):
        call((X, Y[:-1]))


@pytest.mark.parametrize("fn", [*TAKES_DATA, *TAKES_X_Y])
def test_nan_in_the_variables_is_named(fn):
    call = {**TAKES_DATA, **TAKES_X_Y}[fn]
    bad = jax.tree.map(lambda a: a, VARIABLES)
    bad["batch_stats"]["BatchNorm_0"]["var"] = _with_nan(
        bad["batch_stats"]["BatchNorm_0"]["var"], 3
    )
    with pytest.raises(ValueError, match=r"^variables\['batch_stats'\]\['BatchNorm_0'\]\['var'\]"):
        call((X, Y), bad)


def test_the_nan_data_used_to_give_all_nan_ratios_and_no_active_unit():
    # what the check prevents: one NaN poisons every mean loss, so every ratio is NaN and
    # NaN >= 1.5 marks no unit active
    x = _with_nan(X, (0, 0))
    graph = jp.trace(NET, VARIABLES, x)
    assert bool(jnp.isnan(_unchecked_ablation((x, Y), graph)["Dense_0"]).all())
    assert np.isfinite(np.asarray(_ablation((X, Y))["Dense_0"])).all()
    with pytest.raises(ValueError, match=r"^data\[0\]"):
        _active((_with_nan(X, (0, 0)), Y))


def test_head_weight_product_and_redundant_units_check_x_and_variables():
    with pytest.raises(ValueError, match=r"^x: expected finite values"):
        jp.analysis.head_weight_product(NET, VARIABLES, _with_nan(X, (1, 1)))
    bad = {**VARIABLES, "params": {**VARIABLES["params"]}}
    bad["params"]["Dense_0"] = {**bad["params"]["Dense_0"]}
    bad["params"]["Dense_0"]["kernel"] = _with_nan(bad["params"]["Dense_0"]["kernel"], (0, 0))
    with pytest.raises(ValueError, match=r"^variables\['params'\]\['Dense_0'\]\['kernel'\]"):
        jp.analysis.redundant_units(NET, bad, X)
    with pytest.raises(ValueError, match=r"^variables\['params'\]\['Dense_0'\]\['kernel'\]"):
        jp.analysis.head_weight_product(NET, bad, X)


def test_fusion_candidates_names_the_batch_with_a_nan():
    batches = [X[:12], _with_nan(X[12:], (2, 3))]
    with pytest.raises(ValueError, match=r"^data\[1\]: expected finite values, got 1 NaN/inf"):
        jp.analysis.fusion_candidates(NET, VARIABLES, batches)
    batches = [(X[:12], Y[:12]), (_with_nan(X[12:], (2, 3)), Y[12:])]
    with pytest.raises(ValueError, match=r"^data\[1\]\[0\]: expected finite values"):
        jp.analysis.fusion_candidates(NET, VARIABLES, iter(batches))


def test_polygon_sides_and_painted_image_refuse_nan():
    image = np.zeros((32, 32))
    image[8:24, 8:24] = 1.0
    assert jp.analysis.polygon_sides(image) == 4
    image[0, 5] = np.nan  # would count as painted
    with pytest.raises(ValueError, match=r"^image: expected finite values, got 1 NaN/inf"):
        jp.analysis.polygon_sides(image)
    with pytest.raises(ValueError, match=r"^predictions: expected finite values"):
        jp.analysis.painted_image(np.array([0.1, np.nan, 0.7, 0.2]), 2)  # NaN >= 0.5 is False


def test_traced_data_is_not_inspected_and_gives_the_eager_ratios():
    # under jit the values are unknown; the check runs where they are concrete
    eager = _ablation((X, Y))
    jitted = jax.jit(lambda x, y: _ablation((x, y)))(X, Y)
    for k in eager:
        np.testing.assert_allclose(jitted[k], eager[k], rtol=1e-5)


def test_softmax_margins_checks_the_labels():
    with pytest.raises(ValueError, match=r"^y: expected integer class labels of shape \(24,\)"):
        jp.analysis.softmax_margins(NET, VARIABLES, X, jax.nn.one_hot(Y, 3))
    np.testing.assert_allclose(
        jp.analysis.softmax_margins(NET, VARIABLES, X, Y[:, None]),
        jp.analysis.softmax_margins(NET, VARIABLES, X, Y),
    )


class Logistic(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.sigmoid(nn.Dense(1)(x))


def test_sharpness_of_a_sigmoid_classifier_thresholds_at_one_half():
    # accuracy as argmax of the single output was the share of class 0 whatever the model
    x = jnp.linspace(-1.0, 1.0, 20)[:, None]
    y = (x[:, 0] > 0).astype(jnp.float32)
    params = {"Dense_0": {"kernel": jnp.array([[8.0]]), "bias": jnp.array([0.0])}}
    key = jax.random.key(3)
    sigma = 2.0
    z = jax.random.normal(jax.random.split(key, 1)[0], (2,), jnp.float32)
    noisy = {"Dense_0": {"kernel": params["Dense_0"]["kernel"] + sigma * z[1].reshape(1, 1)}}
    noisy["Dense_0"]["bias"] = params["Dense_0"]["bias"] + sigma * z[0].reshape(1)
    p = Logistic().apply({"params": noisy}, x)[:, 0]
    want_drop = 1.0 - float(jnp.mean((p > 0.5) == (y > 0.5)))
    got = jp.analysis.sharpness(
        Logistic(),
        {"params": params},
        (x, y),
        [0.0, sigma],
        key=key,
        draws=1,
        loss="binary_cross_entropy",
    )
    assert float(got["accuracy_drop"][0]) == 0.0
    assert float(got["accuracy_drop"][1]) == pytest.approx(want_drop)
    with pytest.raises(ValueError, match=r"^loss 'mse': accuracy"):
        jp.analysis.sharpness(Logistic(), {"params": params}, (x, y), [0.1], key=key, loss="mse")
