import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.analysis import head_weight_product, sharpness, softmax_margins

MODEL = jp.models.BlockMLP(hidden=(5,), out=3)
X = jax.random.normal(jax.random.key(0), (12, 4))
Y = jnp.arange(12) % 3
V = MODEL.init(jax.random.key(1), X)


def test_softmax_margins_match_brute_force():
    p = np.asarray(jax.nn.softmax(MODEL.apply(V, X)))
    brute = sorted(p[i, Y[i]] - max(p[i, j] for j in range(3) if j != Y[i]) for i in range(12))
    np.testing.assert_allclose(softmax_margins(MODEL, V, X, Y), brute, rtol=1e-5, atol=1e-7)


def test_sharpness_matches_explicit_noise_draws():
    key = jax.random.key(2)
    s = jax.jit(lambda v: sharpness(MODEL, v, (X, Y), [0.0, 0.5], key=key, draws=3))(V)
    np.testing.assert_allclose(s["loss_increase"][0], 0.0, atol=1e-6)
    leaves, treedef = jax.tree.flatten(V["params"])
    base = jp.training.evaluate(MODEL, V["params"], (X, Y), "cross_entropy")
    total = 0.0
    for k in jax.random.split(key, 3):
        z = np.asarray(jax.random.normal(k, (sum(w.size for w in leaves),)))
        cuts = np.cumsum([w.size for w in leaves])[:-1]
        chunks = np.split(z, cuts)
        noisy = [w + 0.5 * c.reshape(w.shape) for w, c in zip(leaves, chunks, strict=True)]
        p = jax.tree.unflatten(treedef, noisy)
        total += jp.training.evaluate(MODEL, p, (X, Y), "cross_entropy") - base
    np.testing.assert_allclose(s["loss_increase"][1], total / 3, rtol=1e-4)
    with pytest.raises(ValueError, match="sigmas"):
        sharpness(MODEL, V, (X, Y), [-1.0], key=key)


def test_head_weight_product_by_hand():
    p = V["params"]
    h = jax.nn.relu(X @ p["relu_0"]["kernel"] + p["relu_0"]["bias"])
    want = np.sqrt(np.mean(np.sum(np.square(h), -1))) * np.linalg.norm(p["out"]["kernel"])
    np.testing.assert_allclose(head_weight_product(MODEL, V, X), want, rtol=1e-5)
    with pytest.raises(ValueError, match="head: no submodule named 'head'"):
        head_weight_product(MODEL, V, X, head="head")
