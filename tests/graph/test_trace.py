"""jp.trace on the zoo: the units found equal the hand-listed ones; the graph's evaluation
equals the model; unknown channel ops raise GraphError naming the primitive and the line."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from zoo import ZOO, make_mlp

import jaxprune as jp
from jaxprune.graph import GraphError, as_model


@pytest.mark.parametrize("name", sorted(ZOO))
def test_units_equal_hand_listed_and_evaluation_equals_model(name):
    case = ZOO[name]()
    graph = jp.trace(case.model, case.variables, case.x, model_kwargs=case.kwargs)
    assert {k: u.width for k, u in graph.units.items()} == case.units
    adapter = as_model(case.model, case.variables)
    expected = adapter.apply(adapter.variables, case.x, **case.kwargs)
    np.testing.assert_array_equal(graph.apply(adapter.variables, case.x), expected)


def test_mask_equals_hand_written_masked_forward():
    case = make_mlp()
    graph = jp.trace(case.model, case.variables, case.x)
    p = case.variables["params"]
    m0 = jnp.array([1.0, 0, 1, 1, 0, 1, 1, 1])
    h = jax.nn.relu(case.x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]) * m0
    h = jax.nn.relu(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
    expected = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
    got = graph.apply(case.variables, case.x, masks={"Dense_0": m0})
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_sort_over_channels_raises_naming_primitive_and_line():
    class Sorted(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Dense(4)(x))
            return nn.Dense(2)(jnp.sort(h, axis=-1))

    x = jnp.ones((3, 2))
    m = Sorted()
    with pytest.raises(GraphError, match=r"primitive: sort.*test_trace\.py:\d+"):
        jp.trace(m, m.init(jax.random.key(0), x), x)


def test_residual_groups_tie_block_output_and_projection():
    case = ZOO["resnet_v1_b"]()
    graph = jp.trace(case.model, case.variables, case.x, model_kwargs={"train": False})
    group = graph.units["ResBlockV1_1/Conv_1"]
    assert set(group.layers) == {"ResBlockV1_1/Conv_1", "ResBlockV1_1/Conv_2"}
    # The stem, block 1's second conv: one group through the identity shortcut.
    assert set(graph.units["Conv_0"].layers) == {"Conv_0", "ResBlockV1_0/Conv_1"}
