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


def _zero_heads(tree, leaves_axes, dead, head_dim=None):
    """``tree`` with the entries of heads ``dead`` zeroed along the given (leaf path, axis)
    pairs; ``head_dim`` set: the axis is flat, heads are blocks of ``head_dim`` entries."""
    out = jax.tree.map(lambda a: a, tree)
    for path, axis in leaves_axes:
        node = out
        *parents, leaf = path.split("/")
        for k in parents:
            node = node[k]
        a = node[leaf]
        n = a.shape[axis]
        head = np.arange(n) // (head_dim or 1)
        keep = ~np.isin(head, dead)
        shape = [1] * a.ndim
        shape[axis] = n
        node[leaf] = a * keep.reshape(shape)
    return out


def test_masking_flax_heads_equals_zeroing_their_value_slices_by_hand():
    case = TRANSFORMERS["encoder_block"]()
    graph = jp.trace(case.model, case.variables, case.x)
    att = "params/MultiHeadDotProductAttention_0"
    # a head's output is its value slice mixed by its attention weights: zeroing the value
    # kernel's and bias' head entries removes exactly that head's contribution
    hand = _zero_heads(
        case.variables, [(f"{att}/value/kernel", 1), (f"{att}/value/bias", 0)], [1, 3]
    )
    expected = case.model.apply(hand, case.x)
    mask = jnp.array([True, False, True, False])
    got = graph.apply(case.variables, case.x, masks={"MultiHeadDotProductAttention_0/query": mask})
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert not np.allclose(got, case.model.apply(case.variables, case.x), atol=1e-3)


def test_masking_einsum_heads_equals_zeroing_their_value_columns_by_hand():
    case = TRANSFORMERS["einsum_attention"]()
    graph = jp.trace(case.model, case.variables, case.x)
    hand = _zero_heads(case.variables, [("params/v/kernel", 1), ("params/v/bias", 0)], [0], 4)
    expected = case.model.apply(hand, case.x)
    got = graph.apply(case.variables, case.x, masks={"q": jnp.array([False, True])})
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
