"""Hypothesis: collapse and prune invariants on randomly generated user-style linen models
(dense or conv, relu/tanh/identity, BatchNorm, residual adds, projections, concatenation).

For each model:

* ``jp.collapse`` keeps the outputs (float32 tolerance 1e-4: folded BatchNorm and products
  summed in another order) and never adds parameters;
* ``jp.prune_units`` with a random keep mask per prunable group equals the masked network,
  and its size is the original's minus exactly the entries the graph's unit masks name
  (incoming and outgoing slices of the removed units).

``RANDOM_REWRITE_EXAMPLES`` sets the number of models (CI runs the default; a long run, e.g.
500, is ``RANDOM_REWRITE_EXAMPLES=500 pytest tests/rewrites/test_random_rewrites.py``).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from random_nets import block, build

import jaxprune as jp

EXAMPLES = int(os.environ.get("RANDOM_REWRITE_EXAMPLES", "25"))
TOL = dict(rtol=1e-4, atol=1e-4)


def _size(tree):
    return sum(int(np.size(a)) for a in jax.tree.leaves(tree))


@settings(max_examples=EXAMPLES, deadline=None)
@given(conv=st.booleans(), blocks=st.lists(block, min_size=1, max_size=4), seed=st.integers(0, 9))
def test_collapse_and_prune_invariants_on_random_architectures(conv, blocks, seed):
    model, variables, x = build(conv, blocks, seed)
    before = model.apply(variables, x)
    result = jp.collapse(model, variables, x)
    small, sv = result.model, result.variables
    np.testing.assert_allclose(small.apply(sv, x), before, **TOL)
    assert _size(sv) <= _size(variables)

    graph = jp.trace(model, variables, x)
    rng = np.random.default_rng(seed)
    keep = {}
    for name, unit in graph.units.items():
        if unit.coupled:
            continue
        m = rng.random(unit.width) < 0.6
        m[rng.integers(unit.width)] = True
        keep[name] = m
    result = jp.prune_units(model, variables, keep, x)
    narrow, nv = result.model, result.variables
    masks = {k: jnp.asarray(m, jnp.float32) for k, m in keep.items()}
    np.testing.assert_allclose(narrow.apply(nv, x), graph.apply(variables, x, masks=masks), **TOL)
    removed = {k: ~m for k, m in keep.items()}
    hit = graph.unit_param_mask(variables, removed, incoming=True, outgoing=True)
    assert _size(nv) == _size(variables) - sum(int(np.sum(m)) for m in jax.tree.leaves(hit))
