import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.models import MLP, ConvNet


@pytest.mark.parametrize(
    "shape,area",
    [
        ("square", 0.25),
        ("triangle", 3 * np.sqrt(3) / 4 * 0.35**2),
        ("hexagon", 3 * np.sqrt(3) / 2 * 0.33**2),
    ],
)
def test_paint_area_matches_polygon_area(shape, area):
    _, y = jp.data.paint(shape, size=200)
    assert abs(y.mean() - area) < 0.01


def test_paint_star_is_union_of_two_triangles():
    _, y = jp.data.paint("star", size=200)
    tri = 3 * np.sqrt(3) / 4 * 0.4**2
    # Star of David: union area = 4/3 of one triangle.
    assert abs(y.mean() - 4 / 3 * tri) < 0.01


def test_paint_is_deterministic_and_rejects_unknown():
    a, b = jp.data.paint("square", 16), jp.data.paint("square", 16)
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="shape: unknown shape 'circle'"):
        jp.data.paint("circle")
    with pytest.raises(ValueError, match="size: expected an integer >= 2"):
        jp.data.paint("square", 1)


@pytest.mark.parametrize(
    "model,count",
    [
        (MLP(hidden=(3,)), 13),
        (MLP(hidden=(3,), linear_after=((9,),)), 55),
        (MLP(hidden=(3,), linear_after=((3, 3, 3),)), 49),
        (MLP(hidden=(12,)), 49),
    ],
)
def test_paper_models_parameter_counts(model, count, key):
    params = model.init(key, jnp.zeros((1, 2)))["params"]
    assert jp.analysis.count_params(params) == count


def test_models_validate_fields():
    with pytest.raises(ValueError, match="linear_after: expected 1 tuples"):
        MLP(hidden=(3,), linear_after=((3,), (3,)))
    with pytest.raises(ValueError, match="out_activation: unknown activation 'swish'"):
        MLP(out_activation="swish")
    with pytest.raises(ValueError, match="kernel_init: unknown initializer"):
        MLP(kernel_init="ones")
    with pytest.raises(ValueError, match="pool: expected 2 entries"):
        ConvNet(features=(2, 3), pool=(True,))


def test_graph_masks_zero_mlp_units_and_reject_unknown_units(key):
    model = MLP(hidden=(3,), out_activation="identity")
    x = jax.random.normal(key, (4, 2))
    params = model.init(key, x)["params"]
    graph = jp.trace(model, {"params": params}, x)
    assert list(graph.units) == ["relu_0"]  # named by MLP's explicit layer names
    out = graph.apply({"params": params}, x, masks={"relu_0": jnp.array([1.0, 0.0, 1.0])})
    h = jax.nn.relu(x @ params["relu_0"]["kernel"] + params["relu_0"]["bias"]) * jnp.array(
        [1.0, 0.0, 1.0]
    )
    np.testing.assert_allclose(
        out, h @ params["out"]["kernel"] + params["out"]["bias"], rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match=r"masks: unknown unit\(s\) \['relu_7'\]"):
        graph.apply({"params": params}, x, masks={"relu_7": jnp.ones(3)})


def test_default_init_is_keras_glorot_uniform(key):
    params = MLP(hidden=(300,)).init(key, jnp.zeros((1, 200)))["params"]
    k = np.asarray(params["relu_0"]["kernel"])
    limit = np.sqrt(6 / (200 + 300))
    assert k.max() <= limit and k.min() >= -limit and k.std() > 0.9 * limit / np.sqrt(3)
    assert not np.asarray(params["relu_0"]["bias"]).any()
