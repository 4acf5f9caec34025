import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.models import MLP


def _hand_built():
    """Three units on 1-D input: u0 = relu(x) carries y = x; u1 is dead; u2 adds a small bump."""
    model = MLP(hidden=(3,), out_activation="identity")
    params = {
        "relu_0": {"kernel": jnp.array([[1.0, -1.0, 1.0]]), "bias": jnp.array([0.0, -10.0, -1.5])},
        "out": {"kernel": jnp.array([[1.0], [7.0], [0.2]]), "bias": jnp.array([0.0])},
    }
    x = jnp.array([[0.5], [1.0], [2.0]])
    return model, params, x


def test_unit_ablation_hand_computed():
    model, params, x = _hand_built()
    y = x + 0.05  # intact prediction: [0.5, 1.0, 2.1] -> errors [-0.05, -0.05, 0.05]
    ratios = jp.analysis.unit_ablation(model, params, (x, y))["relu_0"]
    base = 0.05**2
    # Without u0: prediction [0, 0, 0.1] -> errors [0.55, 1.05, 1.95]
    no_u0 = (0.55**2 + 1.05**2 + 1.95**2) / 3
    # Without u2: prediction [0.5, 1.0, 2.0] -> errors [0.05, 0.05, 0.05]
    np.testing.assert_allclose(ratios, [no_u0 / base, 1.0, 1.0], rtol=1e-5)


def test_active_units_uses_ratio_at_least_threshold():
    model, params, x = _hand_built()
    y = x + 0.05
    active = jp.analysis.active_units(model, params, (x, y))["relu_0"]
    assert active.tolist() == [True, False, False]
    # A lower threshold never marks fewer units active.
    assert jp.analysis.active_units(model, params, (x, y), threshold=1.0)["relu_0"].all()


def test_unit_ablation_multi_layer_matches_manual_zeroing(key):
    model = MLP(hidden=(4, 3), out=2, out_activation="identity", linear_after=((5,), ()))
    x = jax.random.normal(key, (16, 3))
    y = jax.random.normal(jax.random.key(1), (16, 2))
    params = model.init(key, x)["params"]
    ratios = jp.analysis.unit_ablation(model, params, (x, y))
    base = jp.training.evaluate(model, params, (x, y), "mse")
    # Zeroing a unit == zeroing the outgoing kernel row of the layer that consumes it.
    p = jax.tree.map(lambda a: a, params)
    p = {**p, "linear_0_0": {**p["linear_0_0"], "kernel": p["linear_0_0"]["kernel"].at[2].set(0)}}
    np.testing.assert_allclose(
        ratios["relu_0"][2], jp.training.evaluate(model, p, (x, y), "mse") / base, rtol=1e-5
    )
    q = {**params, "out": {**params["out"], "kernel": params["out"]["kernel"].at[1].set(0)}}
    np.testing.assert_allclose(
        ratios["relu_1"][1], jp.training.evaluate(model, q, (x, y), "mse") / base, rtol=1e-5
    )


def test_unit_ablation_is_vmappable_over_seeds(key):
    model = MLP(hidden=(3,))
    x, y = jp.data.paint("square", size=8)
    params = jax.vmap(lambda k: model.init(k, x)["params"])(jax.random.split(key, 4))
    batched = jax.vmap(lambda p: jp.analysis.unit_ablation(model, p, (x, y))["relu_0"])(params)
    single = jp.analysis.unit_ablation(model, jax.tree.map(lambda a: a[2], params), (x, y))[
        "relu_0"
    ]
    np.testing.assert_allclose(batched[2], single, rtol=1e-6)


def test_ablation_bad_input():
    model, params, x = _hand_built()
    with pytest.raises(ValueError, match="threshold: expected a positive"):
        jp.analysis.active_units(model, params, (x, x), threshold=0.0)
    with pytest.raises(ValueError, match=r"params\['relu_0'\]: missing"):
        jp.analysis.unit_ablation(model, {"out": params["out"]}, (x, x))
    with pytest.raises(TypeError, match="unit_layers"):
        jp.analysis.unit_ablation(object(), params, (x, x))
