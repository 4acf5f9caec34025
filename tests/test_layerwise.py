import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.analysis import above_block_mask, block_statistics, layer_norms
from jaxprune.graph.extend import check_blocks
from jaxprune.rewrites import rescale_blocks, update_normalization

MLP = jp.models.BlockMLP(hidden=(6, 5), out=3)
X = jax.random.normal(jax.random.key(0), (32, 7))
VARS = MLP.init(jax.random.key(1), X)
P = VARS["params"]
BLOCKS = MLP.lw_blocks()


def _forward(params, slots, x):
    """BlockMLP by hand: ReLU layers, slot after each block, head, slot after the head."""
    norm = lambda h, k: (h - slots[f"block_{k}"]["mean"]) / slots[f"block_{k}"]["std"]
    h1 = jax.nn.relu(x @ params["relu_0"]["kernel"] + params["relu_0"]["bias"])
    h2 = jax.nn.relu(norm(h1, 1) @ params["relu_1"]["kernel"] + params["relu_1"]["bias"])
    z = norm(h2, 2) @ params["out"]["kernel"] + params["out"]["bias"]
    return (h1, h2, z), norm(z, 3)


def test_slots_start_as_identity_and_params_only_apply_matches():
    np.testing.assert_allclose(MLP.apply(VARS, X), MLP.apply({"params": P}, X), rtol=1e-6)
    np.testing.assert_allclose(
        MLP.apply(VARS, X), _forward(P, VARS["lw_norm"], X)[1], rtol=1e-5, atol=1e-6
    )


def test_layer_norms_and_rescale_to_initial_norms():
    init = layer_norms(P)
    np.testing.assert_allclose(
        init["relu_0"],
        np.sqrt(np.sum(np.square(P["relu_0"]["kernel"])) + np.sum(np.square(P["relu_0"]["bias"]))),
        rtol=1e-6,
    )
    grown = jax.tree.map(lambda w: 3.0 * w + 0.1, P)
    for k in (1, 2, 3):
        r = rescale_blocks(grown, init, BLOCKS, k)
        now = layer_norms(r)
        for i, (name,) in enumerate(BLOCKS, 1):
            if i <= k:
                np.testing.assert_allclose(now[name], init[name], rtol=1e-5)
                # one factor per layer: the direction of (kernel, bias) is unchanged
                ratio = r[name]["kernel"] / grown[name]["kernel"]
                np.testing.assert_allclose(ratio, ratio.reshape(-1)[0], rtol=1e-5)
            else:
                jax.tree.map(np.testing.assert_array_equal, r[name], grown[name])
    traced = jax.jit(lambda p, k: rescale_blocks(p, init, BLOCKS, k))(grown, 2)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
        traced,
        rescale_blocks(grown, init, BLOCKS, 2),
    )
    zero = {**P, "relu_1": jax.tree.map(jnp.zeros_like, P["relu_1"])}
    assert float(layer_norms(rescale_blocks(zero, init, BLOCKS, 3))["relu_1"]) == 0.0


def test_above_block_mask_for_both_models():
    for k, expect in (
        (1, {"relu_0": 0, "relu_1": 1, "out": 1}),
        (2, {"relu_0": 0, "relu_1": 0, "out": 1}),
        (3, {"relu_0": 0, "relu_1": 0, "out": 0}),
    ):
        m = above_block_mask(P, BLOCKS, k)
        for name, flag in expect.items():
            leaves = jax.tree.leaves(m[name])
            assert all(bool(v.all()) == bool(flag) and bool(v.any()) == bool(flag) for v in leaves)
    net = jp.models.SCNN(features=(2, 2, 3, 3), dense=4, out=2)
    sp = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    m = jax.jit(lambda k: above_block_mask(sp, net.lw_blocks(), k))(3)
    flags = {name: bool(jax.tree.leaves(v)[0].all()) for name, v in m.items()}
    assert flags == {
        "conv_0": False,
        "norm_0": False,
        "conv_1": False,
        "norm_1": False,
        "conv_2": False,
        "norm_2": False,
        "conv_3": True,
        "norm_3": True,
        "dense": True,
        "dense_norm": True,
        "out": True,
    }


def test_update_normalization_sets_block_k_from_its_raw_output():
    v = update_normalization(MLP, VARS, X, 1)
    (h1, _, _), _ = _forward(P, VARS["lw_norm"], X)
    np.testing.assert_allclose(v["lw_norm"]["block_1"]["mean"], h1.mean(), rtol=1e-5)
    np.testing.assert_allclose(v["lw_norm"]["block_1"]["std"], h1.std(), rtol=1e-5)
    # block 2's statistics are measured with block 1's new slot in place
    v2 = jax.jit(lambda v, k: update_normalization(MLP, v, X, k))(v, 2)
    (_, h2, _), out = _forward(P, v2["lw_norm"], X)
    np.testing.assert_allclose(v2["lw_norm"]["block_2"]["mean"], h2.mean(), rtol=1e-5)
    np.testing.assert_allclose(v2["lw_norm"]["block_2"]["std"], h2.std(), rtol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, v2["lw_norm"]["block_1"], v["lw_norm"]["block_1"])
    assert float(v2["lw_norm"]["block_3"]["std"]) == 1.0
    np.testing.assert_allclose(MLP.apply(v2, X), out, rtol=1e-4, atol=1e-5)
    # the normalized output of block 2 has mean 0 and std 1 on the sample
    stats = block_statistics(MLP, v2, X)
    np.testing.assert_allclose(stats["block_2"][0], h2.mean(), rtol=1e-5)


def test_scnn_blocks_normalize_after_pooling():
    net = jp.models.SCNN(features=(2, 2, 3, 3), dense=4, out=2)
    x = jax.random.normal(jax.random.key(2), (4, 8, 8, 1))

    @jax.jit
    def run(key):
        v = net.init(key, x)
        new = update_normalization(net, v, x, 2)
        return new, block_statistics(net, v, x), net.apply(v, x, mutable=["lw_block_out"])[1]

    new, stats, state = run(jax.random.key(0))
    np.testing.assert_allclose(new["lw_norm"]["block_2"]["mean"], stats["block_2"][0], rtol=1e-6)
    assert state["lw_block_out"]["block_2"][0].shape == (4, 4, 4, 2)  # pooled after block 2
    assert float(jnp.min(state["lw_block_out"]["block_2"][0])) >= 0.0  # after the ReLU


def test_bad_blocks_and_k_raise():
    with pytest.raises(ValueError, match=r"blocks\[1\]: 'relu_9' is not a layer of params"):
        check_blocks(P, [["relu_0"], ["relu_9"]])
    with pytest.raises(ValueError, match="appears in two blocks"):
        check_blocks(P, [["relu_0"], ["relu_0"]])
    with pytest.raises(
        ValueError, match=r"k: expected 1 <= k <= 3 \(the number of blocks\), got 4"
    ):
        rescale_blocks(P, layer_norms(P), BLOCKS, 4)
    with pytest.raises(ValueError, match="k: expected 1 <= k <= 3"):
        above_block_mask(P, BLOCKS, 0)
    with pytest.raises(ValueError, match="k: expected 1 <= k <= 3"):
        update_normalization(MLP, VARS, X, 4)
    with pytest.raises(ValueError, match="variables: expected a 'lw_norm' collection"):
        update_normalization(MLP, {"params": P}, X, 1)
    with pytest.raises(ValueError, match="init_norms: no recorded norm"):
        rescale_blocks(P, {"relu_0": 1.0}, BLOCKS, 1)
    plain = jp.models.MLP(hidden=(3,))
    pv = plain.init(jax.random.key(0), jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="records no block outputs"):
        block_statistics(plain, pv, jnp.zeros((2, 2)))


def test_rescale_uses_weight_norms_and_leaves_biases_by_default():
    # paper 002, Alg. 1 line 4 / App. A: "scale back all weights"; the norm is the kernel's
    grown = jax.tree.map(lambda w: 3.0 * w + 0.1, P)
    init = layer_norms(P)
    kernel0 = np.asarray(P["relu_0"]["kernel"], np.float64)
    np.testing.assert_allclose(init["relu_0"], np.sqrt((kernel0**2).sum()), rtol=1e-6)
    r = rescale_blocks(grown, init, BLOCKS, 1)
    kernel = np.asarray(grown["relu_0"]["kernel"], np.float64)
    factor = np.sqrt((kernel0**2).sum()) / np.sqrt((kernel**2).sum())
    np.testing.assert_allclose(r["relu_0"]["kernel"], kernel * factor, rtol=1e-5)
    np.testing.assert_array_equal(r["relu_0"]["bias"], grown["relu_0"]["bias"])  # 0.1, kept
    # the alternative: one factor over kernel and bias together
    init_all = layer_norms(P, include_biases=True)
    r_all = rescale_blocks(grown, init_all, BLOCKS, 1, include_biases=True)
    bias = np.asarray(grown["relu_0"]["bias"], np.float64)
    factor_all = np.sqrt((kernel0**2).sum()) / np.sqrt((kernel**2).sum() + (bias**2).sum())
    np.testing.assert_allclose(r_all["relu_0"]["bias"], bias * factor_all, rtol=1e-5)
    np.testing.assert_allclose(r_all["relu_0"]["kernel"], kernel * factor_all, rtol=1e-5)


def test_rescale_counts_a_norm_layers_scale_as_its_weights():
    p = {"norm_0": {"scale": jnp.array([3.0, 4.0]), "bias": jnp.array([1.0, 1.0])}}
    r = rescale_blocks(p, {"norm_0": jnp.array(10.0)}, [["norm_0"]], 1)
    np.testing.assert_allclose(r["norm_0"]["scale"], [6.0, 8.0])  # |(3, 4)| = 5 -> 10
    np.testing.assert_array_equal(r["norm_0"]["bias"], [1.0, 1.0])
