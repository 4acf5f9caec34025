"""Fuzzing the reinitialization round of paper 002 (Eq. 1) on random BlockMLPs and masks.

Valid input: the entries under the mask become exactly the fresh draw ``init_fn(key)``, every
other entry stays bit for bit, and the optimizer moments of exactly the masked entries restart.
Invalid input (mask pytrees that do not match the params, out-of-range fractions, unknown layer
names) raises the documented ``ValueError``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune.analysis import magnitude_mask, random_mask
from jaxprune.models import BlockMLP
from jaxprune.rewrites import (
    model_initializer,
    reinit_round,
    reinitialize,
)

FUZZ = settings(max_examples=15, deadline=None)
TX = optax.adam(0.1)


@st.composite
def setups(draw):
    hidden = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    model = BlockMLP(hidden=hidden, out=draw(st.integers(1, 3)))
    x = jnp.zeros((1, draw(st.integers(1, 3))))
    init = model_initializer(model, x)
    # rbg keys: XLA:CPU compiles threefry slowly for every new shape, rbg in a fraction
    seed = draw(st.integers(0, 2**16))
    params = init(jax.random.key(seed, impl="rbg"))
    params = jax.tree.map(lambda a: a + 0.5, params)  # no zero biases: changes are visible
    return model, init, params, seed


def _masks(draw, params):
    kind = draw(st.sampled_from(["bits", "random", "magnitude"]))
    if kind == "random":
        fraction = draw(st.floats(0.0, 1.0))
        return random_mask(params, jax.random.key(draw(st.integers(0, 99)), impl="rbg"), fraction)
    if kind == "magnitude":
        return magnitude_mask(params, draw(st.floats(0.0, 1.0)))
    return jax.tree.map(
        lambda a: (
            np.array(draw(st.lists(st.booleans(), min_size=a.size, max_size=a.size)))
            .reshape(a.shape)
            .astype(bool)
        ),
        params,
    )


@FUZZ
@given(setup=setups(), data=st.data())
def test_round_redraws_exactly_the_masked_entries_and_their_moments(setup, data):
    _, init, params, seed = setup
    mask = _masks(data.draw, params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, state = TX.update(grads, TX.init(params), params)  # nonzero Adam moments
    key = jax.random.key(seed + 1, impl="rbg")
    new, new_state = reinit_round(params, mask, key, init, optimizer=TX, opt_state=state)
    fresh = init(key)
    for p, m, q, f in zip(*map(jax.tree.leaves, (params, mask, new, fresh)), strict=True):
        p, m, q, f = map(np.asarray, (p, m, q, f))
        assert q.dtype == p.dtype and q.shape == p.shape
        np.testing.assert_array_equal(q[~m], p[~m])  # unselected: bit-identical
        np.testing.assert_array_equal(q[m], f[m])  # selected: exactly the fresh draw
    adam = state[0]
    for moments, new_moments in ((adam.mu, new_state[0].mu), (adam.nu, new_state[0].nu)):
        for old, m, now in zip(*map(jax.tree.leaves, (moments, mask, new_moments)), strict=True):
            old, m, now = map(np.asarray, (old, m, now))
            np.testing.assert_array_equal(now[~m], old[~m])
            np.testing.assert_array_equal(now[m], 0.0)
    # a scalar True per leaf redraws the whole tensor; all False changes nothing
    everything = reinitialize(params, jax.tree.map(lambda a: True, params), fresh)
    jax.tree.map(np.testing.assert_array_equal, everything, fresh)
    nothing = reinitialize(params, jax.tree.map(lambda a: False, params), fresh)
    jax.tree.map(np.testing.assert_array_equal, nothing, params)


@FUZZ
@given(setup=setups(), data=st.data())
def test_bad_masks_fractions_and_layers_raise(setup, data):
    model, init, params, _ = setup
    key = jax.random.key(0, impl="rbg")
    ok = jax.tree.map(lambda a: jnp.zeros(a.shape, bool), params)
    layer = data.draw(st.sampled_from(sorted(params)))
    missing = {k: v for k, v in ok.items() if k != layer}
    with pytest.raises(ValueError, match="mask: expected the structure of params"):
        reinit_round(params, missing, key, init)
    extra = {**ok, layer: {**ok[layer], "scale": jnp.zeros(1, bool)}}
    with pytest.raises(ValueError, match="mask: expected the structure of params"):
        reinit_round(params, extra, key, init)
    leaf = data.draw(st.sampled_from(sorted(params[layer])))
    n = params[layer][leaf].shape[-1]
    wrong = {**ok, layer: {**ok[layer], leaf: jnp.zeros((n + 1,), bool)}}  # n = 1 too
    with pytest.raises(ValueError, match=rf"mask\['{layer}'\]\['{leaf}'\]: shape .* broadc"):
        reinit_round(params, wrong, key, init)
    with pytest.raises(ValueError, match="optimizer, opt_state: give both"):
        reinit_round(params, ok, key, init, optimizer=TX)
    fraction = data.draw(
        st.one_of(st.floats(max_value=-1e-6), st.floats(min_value=1.000001), st.just(np.nan))
    )
    with pytest.raises(ValueError, match=r"fraction: expected a value in \[0, 1\]"):
        random_mask(params, key, fraction)
    with pytest.raises(ValueError, match=r"fraction: expected a value in \[0, 1\]"):
        magnitude_mask(params, fraction)
    with pytest.raises(ValueError, match=r"layers: \['dense_9'\] not in params"):
        random_mask(params, key, 0.5, layers=[layer, "dense_9"])


def test_a_mask_wider_than_a_size_one_parameter_raises():
    params = {"out": {"bias": jnp.ones(1), "kernel": jnp.ones((2, 1))}}
    mask = {"out": {"bias": jnp.ones(2, bool), "kernel": jnp.zeros((2, 1), bool)}}
    with pytest.raises(ValueError, match=r"mask\['out'\]\['bias'\]: shape \(2,\)"):
        reinitialize(params, mask, params)
