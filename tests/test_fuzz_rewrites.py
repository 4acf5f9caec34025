"""Fuzzing the unit rewrites: random MLPs and ConvNets through reinit_units (prune_units:
tests/rewrites/test_prune_units.py; collapse: tests/rewrites/test_collapse.py).

Valid input never crashes and keeps each rewrite's documented invariant; invalid input always
raises the documented error (type and message). Parameters are random normal draws on the
shapes of ``model.init`` (no zero biases), so "changed" and "unchanged" entries are told apart.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxprune as jp
from jaxprune.models import MLP, ConvNet
from jaxprune.rewrites import reinit_units
from jaxprune.rewrites._reinit_units import OUTGOING_CHOICES

widths = st.integers(1, 4)
FUZZ = settings(max_examples=15, deadline=None)


@st.composite
def mlps(draw):
    hidden = tuple(draw(st.lists(widths, min_size=1, max_size=3)))
    linear = tuple(tuple(draw(st.lists(widths, max_size=2))) for _ in hidden)
    return MLP(hidden=hidden, out=draw(widths), out_activation="identity", linear_after=linear)


@st.composite
def convnets(draw):
    feats = tuple(draw(st.lists(widths, min_size=1, max_size=2)))
    linear = tuple(tuple(draw(st.lists(widths, max_size=2))) for _ in feats)
    pool = tuple(draw(st.lists(st.booleans(), min_size=len(feats), max_size=len(feats))))
    k = draw(st.sampled_from([1, 3]))
    return ConvNet(features=feats, kernel_size=k, linear_after=linear, pool=pool, out=2)


models = st.one_of(mlps(), convnets())


def _setup(model, seed):
    """Random-normal params on ``model``'s shapes and a small input batch."""
    shape = (5, 3) if isinstance(model, MLP) else (2, 4, 4, 2)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))["params"]
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)
    return params, x


def _apply(model, params, x, mask=None):
    graph = jp.trace(model, {"params": params}, x)  # masks: units removed where read
    return np.asarray(graph.apply({"params": params}, x, masks=mask))


@FUZZ
@given(
    model=models,
    seed=st.integers(0, 2**16),
    outgoing=st.sampled_from(OUTGOING_CHOICES),
    data=st.data(),
)
def test_reinit_changes_exactly_the_selected_units_entries(model, seed, outgoing, data):
    params, x = _setup(model, seed)
    graph = jp.trace(model, {"params": params}, x)
    units = {
        name: np.array(data.draw(st.lists(st.booleans(), min_size=u.width, max_size=u.width)))
        for name, u in graph.units.items()
    }
    # rbg keys: XLA:CPU compiles threefry slowly for every new shape, rbg in a fraction
    key = jax.random.key(seed, impl="rbg")
    q, state = reinit_units(graph, params, units, key, outgoing=outgoing)
    assert state is None
    owned = graph.unit_param_mask(params, units, outgoing=outgoing != "keep")
    for path, old in jax.tree_util.tree_leaves_with_path(params):
        new, m = np.asarray(_at(q, path)), np.asarray(_at(owned, path))
        old = np.asarray(old)
        assert new.dtype == old.dtype and new.shape == old.shape
        np.testing.assert_array_equal(new[~m], old[~m])  # unselected entries: bit-identical
        assert (new[m] != old[m]).all(), jax.tree_util.keystr(path)  # selected: all redrawn
    if outgoing == "zero":  # entries fed by a selected unit, and not redrawn as incoming: 0
        only_out = jax.tree.map(
            lambda o, i: np.asarray(o) & ~np.asarray(i),
            graph.unit_param_mask(params, units, incoming=False),
            graph.unit_param_mask(params, units, outgoing=False),
        )
        for new, m in zip(jax.tree.leaves(q), jax.tree.leaves(only_out), strict=True):
            np.testing.assert_array_equal(np.asarray(new)[m], 0.0)


def _at(tree, path):
    for k in path:
        tree = tree[k.key]
    return tree


@FUZZ
@given(model=models, seed=st.integers(0, 2**16), data=st.data())
def test_reinit_rejects_bad_masks(model, seed, data):
    params, x = _setup(model, seed)
    graph = jp.trace(model, {"params": params}, x)
    name = data.draw(st.sampled_from(list(graph.units)))
    w = graph.units[name].width
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=rf"units\['{name}'\]: expected shape \({w},\)"):
        reinit_units(graph, params, {name: np.ones(w + 1, bool)}, key)
    with pytest.raises(
        ValueError,
        match=rf"units\['{name}'\]: expected shape \({w},\) and dtype bool, got shape "
        rf"\({w},\) and dtype float32",
    ):
        reinit_units(graph, params, {name: np.ones(w, np.float32)}, key)
    with pytest.raises(ValueError, match=r"units: unknown unit\(s\) \['dense_0'\]"):
        reinit_units(graph, params, {"dense_0": np.ones(w, bool)}, key)
    with pytest.raises(ValueError, match="units: expected a mapping"):
        reinit_units(graph, params, [np.ones(w, bool)], key)
    with pytest.raises(ValueError, match="outgoing: expected one of"):
        reinit_units(graph, params, {}, key, outgoing="shuffle")
