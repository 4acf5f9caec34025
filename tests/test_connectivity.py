"""Eq. 6 weight factoring and the connectivity reports (fractions, masks, sizes in bits)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.analysis import (
    changed_fraction,
    connectivity_mask,
    effective_weights,
    layer_fractions,
    size_in_bits,
)
from jaxprune.rewrites import factor_weights


def _signed_params(model, x, seed=0, negative=0.4, normal=False):
    """Signed He Constant weights (or He normal) and scores with ~``negative`` below zero."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]

    def draw(path, s):
        if "scores" in jax.tree_util.keystr(path):
            return jnp.asarray(
                rng.uniform(-0.1 * negative / (1 - negative), 0.1, s.shape), jnp.float32
            )
        std = np.sqrt(2 / np.prod(s.shape[:-1]))
        if normal:
            return jnp.asarray(rng.normal(size=s.shape) * std, jnp.float32)
        return jnp.asarray(np.where(rng.random(s.shape) < 0.5, std, -std), jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


_RNG = np.random.default_rng(7)
_X_IMG = jnp.asarray(_RNG.random((32, 8, 8, 1)), jnp.float32)
_CONV = jp.models.MaskedConvNet(
    blocks=((6,), (8,)), hidden=(16,), out=5, kind="mask", weight_init="signed_he_constant"
)
_MLP = jp.models.MaskedMLP(hidden=(20, 12), out=5, kind="flip", weight_init="signed_he_constant")


@pytest.mark.parametrize("model", [_CONV, _MLP], ids=["conv", "mlp"])
def test_factored_network_predicts_the_same(model):
    params = _signed_params(model, _X_IMG)
    signs, scale = factor_weights(params)
    fans = [np.prod(v["weights"].shape[:-1]) for v in params.values()]
    assert scale == pytest.approx(np.prod(np.sqrt(2 / np.array(fans))), rel=1e-6)  # Eq. 6
    for leaf in jax.tree.leaves({k: v["weights"] for k, v in signs.items()}):
        np.testing.assert_array_equal(np.abs(leaf), 1.0)
    for k in params:
        np.testing.assert_array_equal(signs[k]["scores"], params[k]["scores"])
    apply = jax.jit(model.apply)
    out = apply({"params": params}, _X_IMG)
    out_scaled_input = apply({"params": signs}, _X_IMG * scale)
    np.testing.assert_allclose(
        out_scaled_input, out, rtol=1e-4, atol=1e-6 * float(jnp.abs(out).max())
    )
    unit = apply({"params": signs}, _X_IMG)  # the scale dropped entirely: same argmax
    np.testing.assert_array_equal(jnp.argmax(unit, -1), jnp.argmax(out, -1))
    np.testing.assert_allclose(unit * scale, out, rtol=1e-4, atol=1e-6 * float(jnp.abs(out).max()))


def test_factor_weights_bad_input():
    with pytest.raises(ValueError, match="bias-free"):
        factor_weights({"d": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}})
    normal = _signed_params(_MLP, _X_IMG, normal=True)
    with pytest.raises(ValueError, match=r"\['dense_0'\]\['weights'\] do not have one"):
        factor_weights(normal)
    with pytest.raises(ValueError, match="no weight leaf"):
        factor_weights({"d": {"scores": jnp.ones(2)}})


def test_layer_fractions_match_numpy_and_vmap_over_seeds():
    seeds = [_signed_params(_CONV, _X_IMG, seed=s, negative=0.1 + 0.2 * s) for s in range(3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *seeds)
    got = jax.jit(jax.vmap(lambda p: layer_fractions(p, "mask")))(stacked)
    total = jax.jit(jax.vmap(lambda p: changed_fraction(p, "mask")))(stacked)
    assert sorted(got) == ["conv_0", "conv_1", "dense_0", "out"]
    for s, p in enumerate(seeds):
        pruned = {k: np.asarray(v["scores"]) <= 0 for k, v in p.items()}
        for k, m in pruned.items():
            assert float(got[k][s]) == pytest.approx(m.mean())
        all_pruned = np.concatenate([m.ravel() for m in pruned.values()])
        assert float(total[s]) == pytest.approx(all_pruned.mean())
    flips = layer_fractions(seeds[0], "flip")
    for k, v in seeds[0].items():  # flip: t < 0 is flipped, t == 0 is not
        assert float(flips[k]) == pytest.approx((np.asarray(v["scores"]) < 0).mean())


def test_connectivity_mask_is_boolean_pytree_of_plain_params():
    params = _signed_params(_CONV, _X_IMG)
    mask = connectivity_mask(params, "mask")
    plain = jax.eval_shape(_CONV.clone(kind=None).init, jax.random.key(0), _X_IMG)["params"]
    assert jax.tree.structure(mask) == jax.tree.structure(plain)
    for k, v in params.items():
        assert mask[k]["weights"].dtype == jnp.bool_
        np.testing.assert_array_equal(mask[k]["weights"], np.asarray(v["scores"]) > 0)
    eff = effective_weights(params, "mask")
    for k, v in params.items():  # pruned entries are exact zeros, kept ones untouched
        np.testing.assert_array_equal(
            eff[k]["weights"], np.where(mask[k]["weights"], v["weights"], 0.0)
        )


def test_size_in_bits_for_lenet():
    model = jp.models.lenet_300_100(kind="flip", weight_init="signed_he_constant")
    params = _signed_params(model, jnp.zeros((1, 784)))
    n = 784 * 300 + 300 * 100 + 100 * 10
    assert size_in_bits(params, "flip") == {
        "weights": n,
        "dense_bits": 32 * n,
        "factored_bits": n + 32,
    }
    assert size_in_bits(params, "mask")["factored_bits"] == 2 * n + 32


def test_reports_bad_input():
    with pytest.raises(ValueError, match="no 'weights'/'scores' pair"):
        layer_fractions({"d": {"kernel": jnp.ones(2)}}, "mask")
    with pytest.raises(ValueError, match="kind"):
        changed_fraction({"d": {"weights": jnp.ones(2), "scores": jnp.ones(2)}}, "prune")
    with pytest.raises(ValueError, match="different structures"):
        connectivity_mask({"weights": {"a": jnp.ones(2)}, "scores": {"b": jnp.ones(2)}}, "mask")
    with pytest.raises(ValueError, match="one nonzero magnitude"):
        size_in_bits(_signed_params(_MLP, _X_IMG, normal=True), "flip")
