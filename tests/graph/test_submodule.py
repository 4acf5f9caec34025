"""A pruned linen model's submodules rebuilt with their narrowed fields (``num_heads`` ...)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp


class Block(nn.Module):
    """A pre-norm encoder block as users write it (flax default names)."""

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=8)(h)
        h = nn.gelu(nn.Dense(16)(nn.LayerNorm()(x)))
        return x + nn.Dense(x.shape[-1])(h)


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, ids):
        x = nn.Embed(20, 8)(ids)
        return nn.Dense(3)(Block()(x))


ATT = "Block_0/MultiHeadDotProductAttention_0"
HEADS = np.array([True, False, False, True])  # heads 0 and 3 of head_dim 2
MLP = np.arange(16) % 2 == 0


@pytest.fixture(scope="module")
def pruned():
    ids = jnp.array([[1, 5, 7, 2, 19], [0, 3, 3, 11, 4]])
    model = Encoder()
    variables = model.init(jax.random.key(0), ids)
    keep = {f"{ATT}/query": HEADS, "Block_0/Dense_0": MLP}
    return model, variables, ids, jp.prune_units(model, variables, keep, ids)


def test_submodules_report_the_narrowed_fields(pruned):
    _, _, _, r = pruned
    att = r.model.submodule(ATT)
    assert type(att) is nn.MultiHeadDotProductAttention
    assert (att.num_heads, att.qkv_features, att.out_features) == (2, 4, None)
    assert r.model.submodule("Block_0/Dense_0").features == 8
    assert r.model.submodule("Block_0/Dense_1").features == 8  # its output is untouched
    assert r.model.submodule("Embed_0").features == 8
    assert f"{ATT}: num_heads 4 -> 2, qkv_features 8 -> 4" in r.report.changes
    assert not any(c.startswith("Block_0/Dense_0: features") for c in r.report.changes)


def test_attention_clone_equals_the_kept_heads_by_hand(pruned):
    model, variables, ids, r = pruned
    att = r.model.submodule(ATT)
    sub = {"params": r.variables["params"]["Block_0"]["MultiHeadDotProductAttention_0"]}
    x = jax.random.normal(jax.random.key(3), (2, 5, 8))
    got = att.apply(sub, x)
    # by hand from the ORIGINAL kernels: keep heads 0 and 3, attention per head, output
    p = variables["params"]["Block_0"]["MultiHeadDotProductAttention_0"]
    kept = np.flatnonzero(HEADS)

    def proj(name):
        w = np.asarray(p[name]["kernel"])[:, kept]  # (8, 2 heads, 2)
        return np.einsum("btd,dhk->bthk", x, w) + np.asarray(p[name]["bias"])[kept]

    q, k, v = proj("query"), proj("key"), proj("value")
    s = np.einsum("bqhk,bthk->bhqt", q, k) / np.sqrt(2.0)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = np.einsum("bhqt,bthk->bqhk", a, v)
    want = np.einsum("bqhk,hkd->bqd", o, np.asarray(p["out"]["kernel"])[kept])
    want += np.asarray(p["out"]["bias"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_mlp_clone_equals_the_kept_units(pruned):
    _, variables, _, r = pruned
    dense = r.model.submodule("Block_0/Dense_0")
    x = jax.random.normal(jax.random.key(4), (3, 8))
    got = dense.apply({"params": r.variables["params"]["Block_0"]["Dense_0"]}, x)
    p = variables["params"]["Block_0"]["Dense_0"]
    want = x @ np.asarray(p["kernel"])[:, MLP] + np.asarray(p["bias"])[MLP]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_user_module_holding_narrowed_layers_raises_naming_it(pruned):
    _, _, _, r = pruned
    with pytest.raises(ValueError, match=r"Block at 'Block_0'.*not a layer"):
        r.model.submodule("Block_0")
    with pytest.raises(KeyError, match="Block_9"):
        r.model.submodule("Block_9")


def test_unchanged_submodule_is_the_original():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Dense(4)(x))
            return nn.Dense(2)(h)

    x = jnp.ones((2, 3))
    v = Net().init(jax.random.key(0), x)
    (unit,) = jp.trace(Net(), v, x).units  # the hidden layer's 4 units
    r = jp.prune_units(Net(), v, {unit: np.array([1, 1, 0, 1], bool)}, x)
    assert r.report.changes == (f"{unit}: 4 -> 3 units",)
    assert r.model.submodule("Dense_0").features == 3
    assert r.model.submodule("Dense_1").features == 2
    got = r.model.submodule("Dense_1").apply({"params": r.variables["params"]["Dense_1"]}, x)
    want = x @ r.variables["params"]["Dense_1"]["kernel"] + r.variables["params"]["Dense_1"]["bias"]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_approximate_residual_prune_narrows_embed_norm_and_attention_output(pruned):
    model, variables, ids, _ = pruned
    (stream,) = [
        n for n, u in jp.trace(model, variables, ids).units.items() if n.startswith("Embed")
    ]
    keep = {stream: np.arange(8) < 6}
    r = jp.prune_units(model, variables, keep, ids, exact=False)
    embed = r.model.submodule("Embed_0")
    assert (embed.num_embeddings, embed.features) == (20, 6)
    att = r.model.submodule(ATT)
    assert (att.num_heads, att.qkv_features, att.out_features) == (4, 8, 6)
    assert r.model.submodule("Dense_0").features == 3  # the head reads 6 channels, writes 3
    # the clone of the first LayerNorm normalizes over the 6 kept channels with their scales
    ln = r.model.submodule("Block_0/LayerNorm_0")
    p = variables["params"]["Block_0"]["LayerNorm_0"]
    x = jax.random.normal(jax.random.key(5), (2, 6))
    got = ln.apply({"params": r.variables["params"]["Block_0"]["LayerNorm_0"]}, x)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    want = (x - mu) / np.sqrt(var + 1e-6) * np.asarray(p["scale"])[:6] + np.asarray(p["bias"])[:6]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_nnx_and_equinox_narrow_models_say_submodule_is_linen_only():
    from flax import nnx

    net = nnx.Sequential(
        nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(4, 2, rngs=nnx.Rngs(1))
    )
    x = jnp.ones((2, 3))
    (unit,) = jp.trace(net, x).units
    r = jp.prune_units(net, {unit: np.array([1, 0, 1, 1], bool)}, x)
    with pytest.raises(TypeError, match="submodule: linen"):
        r.model.submodule("layers/0")


def test_equinox_narrow_model_says_submodule_is_linen_only():
    import equinox as eqx

    net = eqx.nn.MLP(3, 2, 4, depth=1, key=jax.random.key(0))
    x = jnp.ones(3)
    (unit,) = jp.trace(net, x).units
    r = jp.prune_units(net, {unit: np.array([1, 0, 1, 1], bool)}, x)
    with pytest.raises(TypeError, match="submodule: linen"):
        r.model.submodule("layers/0")
