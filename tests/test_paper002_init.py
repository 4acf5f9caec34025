"""Paper 002's models start from He-normal kernels (sec. 3), Xavier uniform on request."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp


def _kernels(model, x):
    params = model.init(jax.random.key(0), x)["params"]
    return {k: np.asarray(v["kernel"]) for k, v in params.items() if "kernel" in v}


def test_block_mlp_default_is_he_normal():
    # fan_in 400: He normal has std sqrt(2/400) = 0.0707; Flax's old default (LeCun) had 0.05
    w = _kernels(jp.models.BlockMLP(hidden=(1000,), out=8), jnp.zeros((1, 400)))["relu_0"]
    assert w.std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    # truncated at 2 standard deviations of the untruncated normal (std / 0.87962566)
    assert np.abs(w).max() <= 2 * np.sqrt(2 / 400) / 0.87962566 + 1e-6


def test_block_mlp_glorot_uniform_option():
    m = jp.models.BlockMLP(hidden=(1000,), out=8, kernel_init="glorot_uniform")
    w = _kernels(m, jnp.zeros((1, 400)))["relu_0"]
    limit = np.sqrt(6 / (400 + 1000))
    assert np.abs(w).max() <= limit + 1e-6
    assert np.abs(w).max() > 0.99 * limit
    assert w.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)


def test_scnn_conv_and_dense_kernels_are_he_normal():
    net = jp.models.SCNN(features=(64, 64, 64, 64), dense=512, out=10)
    ks = _kernels(net, jnp.zeros((1, 8, 8, 3)))
    assert ks["conv_1"].std() == pytest.approx(np.sqrt(2 / (3 * 3 * 64)), rel=0.03)
    assert ks["dense"].std() == pytest.approx(np.sqrt(2 / (2 * 2 * 64)), rel=0.03)


def test_unknown_initializer_is_rejected():
    with pytest.raises(ValueError, match="kernel_init: unknown initializer 'he'"):
        jp.models.BlockMLP(kernel_init="he")
    with pytest.raises(ValueError, match="kernel_init: unknown initializer 'he'"):
        jp.models.SCNN(kernel_init="he")
