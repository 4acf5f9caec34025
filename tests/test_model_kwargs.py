"""The model's own keyword arguments go in ``model_kwargs``, apart from the options."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp


class Net(nn.Module):
    """A user's model whose call keywords share names with jaxprune options."""

    @nn.compact
    def __call__(self, x, round_to: int = 1, padding: float = 0.0, train: bool = False):
        h = nn.relu(nn.Dense(4)(x) + padding)
        h = nn.Dropout(0.5, deterministic=not train)(h)
        return nn.Dense(2)(h) * round_to


def _net():
    x = jax.random.normal(jax.random.key(0), (8, 3))
    net = Net()
    return net, net.init(jax.random.key(1), x), x


def test_a_model_keyword_named_like_an_option_reaches_the_model():
    net, v, x = _net()
    keep = {"Dense_0": np.array([True, False, True, True])}
    call = {"round_to": 3, "padding": 0.5}
    r = jp.prune_units(net, v, keep, x, round_to=2, model_kwargs=call)
    # round_to=2 (the option) keeps 4 of 4 units: 3 kept, rounded up to a multiple of 2
    assert r.report.changes == ()
    want = net.apply(v, x, **call)
    np.testing.assert_allclose(r.model.apply(r.variables, x, **call), want, atol=1e-6)
    g = jp.trace(net, v, x, model_kwargs=call)
    assert g.kwargs == call
    np.testing.assert_allclose(g.apply(v, x), want, atol=1e-6)


def test_model_kwargs_reach_analyses_and_collapse():
    net, v, x = _net()
    y = jnp.zeros((8, 2))
    ratios = jp.analysis.unit_ablation(net, v, (x, y), model_kwargs={"padding": 100.0})
    # with a shift of 100 every unit is on: removing any of them changes the output
    assert all(bool((r != 1.0).all()) for r in ratios.values())
    c = jp.collapse(net, v, x, model_kwargs={"round_to": 2})
    np.testing.assert_allclose(
        c.model.apply(c.variables, x, round_to=2), net.apply(v, x, round_to=2), atol=1e-5
    )


def test_model_keywords_are_not_accepted_as_options():
    net, v, x = _net()
    with pytest.raises(TypeError, match="train"):
        jp.trace(net, v, x, train=False)
    with pytest.raises(TypeError, match=r"model_kwargs: expected a mapping .*got list"):
        jp.trace(net, v, x, model_kwargs=["train"])
