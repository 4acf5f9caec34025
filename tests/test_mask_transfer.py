import jax
import jax.numpy as jnp
import pytest

from jaxprune.rewrites import set_linear_slopes, transfer_mask


def test_transfer_mask_modes(key):
    m = {
        "a": jnp.array([True, True, True, False, False, False]),
        "b": jnp.array([False, False, False, False]),
    }
    exact = transfer_mask(m, "exact")
    assert all((exact[k] == m[k]).all() for k in m)
    layer = transfer_mask(m, "layer", key)
    assert [int(v.sum()) for v in layer.values()] == [3, 0]
    counts_b = [int(transfer_mask(m, "global", k)["b"].sum()) for k in jax.random.split(key, 20)]
    assert sum(counts_b) > 0  # global shuffling moves inactive units across layers
    assert all(
        sum(int(v.sum()) for v in transfer_mask(m, "global", k).values()) == 3
        for k in jax.random.split(key, 3)
    )
    with pytest.raises(ValueError, match="mode"):
        transfer_mask(m, "random")
    with pytest.raises(ValueError, match="key"):
        transfer_mask(m, "layer")
    with pytest.raises(ValueError, match="no 'slope' leaf"):
        set_linear_slopes({"prelu_0": {"slope": jnp.zeros(2)}}, {"prelu_1": [True]})
