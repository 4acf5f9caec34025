"""Hypothesis: the layer graph's invariants on randomly generated user-style linen models.

Architectures draw depth, widths, dense or conv layers, relu/tanh/identity, BatchNorm,
residual adds (identity or 1x1 projection) and channel concatenation. For each model:

* the graph's evaluation equals ``model.apply`` exactly;
* removing a unit by the graph's mask equals zeroing that unit's *reading* entries in every
  consumer (``unit_param_mask(..., outgoing=True)``), and leaves the model unchanged if it is
  the only thing that changed in an all-ones mask;
* every unit group's width bounds the output width of each of its layers (equal for a
  single layer; a concatenation joined by an add writes segments of one group).
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from random_nets import block, build

import jaxprune as jp


@settings(max_examples=100, deadline=None)
@given(conv=st.booleans(), blocks=st.lists(block, min_size=1, max_size=4), seed=st.integers(0, 9))
def test_graph_invariants_on_random_architectures(conv, blocks, seed):
    model, variables, x = build(conv, blocks, seed)
    graph = jp.trace(model, variables, x)
    np.testing.assert_array_equal(graph.apply(variables, x), model.apply(variables, x))
    for name, unit in graph.units.items():
        widths = [graph.layers[layer].out_shape[-1] for layer in unit.layers]
        # a layer writes all of its group, or a segment of it (a concatenation joined by an add)
        assert all(w <= unit.width for w in widths)
        if len(widths) == 1:
            assert widths[0] == unit.width
        c = seed % unit.width
        onehot = jnp.zeros(unit.width, bool).at[c].set(True)
        masked = graph.apply(variables, x, masks={name: 1.0 - onehot})
        zero = graph.unit_param_mask(variables, {name: onehot}, incoming=False, outgoing=True)
        zeroed = jax.tree.map(lambda v, m: jnp.where(m, 0.0, v), variables, zero)
        np.testing.assert_allclose(masked, model.apply(zeroed, x), rtol=1e-5, atol=1e-5)
        ones = graph.apply(variables, x, masks={name: jnp.ones(unit.width)})
        np.testing.assert_array_equal(ones, model.apply(variables, x))
