import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.models import PReLUMLP, PReLUResMLP


def test_channel_prelu_hand_computed():
    x = jnp.array([[-2.0, -2.0, 3.0]])
    p = {"slope": jnp.array([0.0, 0.25, 0.5])}
    out = jp.models.ChannelPReLU().apply({"params": p}, x)
    np.testing.assert_array_equal(out, [[0.0, -0.5, 3.0]])


def test_prelu_mlp_param_paths_and_skip_math(key):
    net = PReLUMLP(hidden=(3, 2), out=1, skips=((0, 2), (1, 3)))
    x = jax.random.normal(key, (4, 5))
    p = jax.jit(net.init)(key, x)["params"]
    assert sorted(p) == ["dense_0", "dense_1", "out", "prelu_0", "prelu_1", "skip_0_2", "skip_1_3"]
    assert p["prelu_0"]["slope"].tolist() == [0.0, 0.0, 0.0]
    p = jax.tree.map(lambda a: np.asarray(a) + 0.3, p)  # non-trivial slopes
    x = np.asarray(x, np.float64)
    act = lambda z, s: np.where(z >= 0, z, s * z)
    h1 = act(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"], p["prelu_0"]["slope"])
    z2 = h1 @ p["dense_1"]["kernel"] + p["dense_1"]["bias"] + x @ p["skip_0_2"]["kernel"]
    h2 = act(z2, p["prelu_1"]["slope"])
    y = h2 @ p["out"]["kernel"] + p["out"]["bias"] + h1 @ p["skip_1_3"]["kernel"]
    out = jax.jit(net.apply)({"params": p}, x.astype(np.float32))
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-5)


def test_resmlp_without_shortcut_is_a_chain(key):
    x = jax.random.normal(key, (3, 4))
    short = PReLUResMLP(width=5, blocks=2, out=2)
    p = jax.jit(short.init)(key, x)["params"]
    no = PReLUResMLP(width=5, blocks=2, out=2, shortcut=False)
    assert jax.tree.structure(jax.eval_shape(no.init, key, x)["params"]) == jax.tree.structure(p)
    diff = jax.jit(short.apply)({"params": p}, x) - jax.jit(no.apply)({"params": p}, x)
    assert float(jnp.abs(diff).max()) > 1e-3


def test_model_validation():
    with pytest.raises(ValueError, match="skips"):
        PReLUMLP(hidden=(3, 3), skips=((0, 1),))
    with pytest.raises(ValueError, match="hidden"):
        PReLUMLP(hidden=())
    with pytest.raises(ValueError, match="blocks"):
        PReLUResMLP(blocks=0)
