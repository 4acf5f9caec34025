"""Transformers through the layer graph: embeddings, attention heads and MLP units are units;
the graph's evaluation equals the model; masking a head equals zeroing its slices by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from transformer_zoo import TRANSFORMERS, make_embed_mlp

import jaxprune as jp
from jaxprune.graph import as_model


@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_units_equal_hand_listed_and_evaluation_equals_model(name):
    case = TRANSFORMERS[name]()
    graph = jp.trace(case.model, case.variables, case.x, **case.kwargs)
    assert {k: u.width for k, u in graph.units.items()} == case.units
    adapter = as_model(case.model, case.variables)
    expected = adapter.apply(adapter.variables, case.x, **case.kwargs)
    np.testing.assert_array_equal(graph.apply(adapter.variables, case.x), expected)


def test_embedding_is_a_layer_whose_columns_are_the_residual_stream():
    case = make_embed_mlp()
    graph = jp.trace(case.model, case.variables, case.x)
    embed = graph.layers["Embed_0"]
    assert (embed.op, embed.kernel, embed.unit) == ("embed", "params/Embed_0/embedding", "Embed_0")
    assert graph.units["Embed_0"].layers == ("Embed_0", "Dense_1")
    # the residual unit j: the table's column j (written by the lookup, read by attend),
    # Dense_0's row j, Dense_1's column j and bias entry j
    slices = {(leaf, axis) for leaf, axis, _ in graph.slices("Embed_0")}
    assert slices == {
        ("params/Embed_0/embedding", 1),
        ("params/Dense_0/kernel", 0),
        ("params/Dense_1/kernel", 1),
        ("params/Dense_1/bias", 0),
    }


def test_masking_a_residual_channel_equals_the_hand_written_forward():
    case = make_embed_mlp()
    graph = jp.trace(case.model, case.variables, case.x)
    p = case.variables["params"]
    m = jnp.array([1.0, 0, 1, 1, 0, 1])
    table = p["Embed_0"]["embedding"]
    h = table[case.x] * m
    r = jax.nn.relu(h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    h = (h + r @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]) * m
    expected = h @ table.T
    got = graph.apply(case.variables, case.x, masks={"Embed_0": m})
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
