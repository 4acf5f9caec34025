"""Corollary 1 of paper 001 (fusion MSE) is never negative."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune._fusion_solve import fusion_mse, fusion_weights
from jaxprune.analysis import moments_init, moments_update


def _exact_linear(seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(k1, (512, 8)) * 3 + 1
    kernel = jax.random.normal(k2, (8, 6)) * 2
    return x, kernel, x @ kernel + 0.5


@pytest.mark.parametrize("seed", [0, 2, 3, 4])
def test_exact_fusion_mse_is_clipped_at_zero(seed):
    # y is an affine function of x, so the MSE is 0; in float32 tr(C_y) - tr(K^T C_xy) rounded
    # to -2.4e-4 (seed 0) and fusion_mse(K) to -3.7e-4 (seed 3) before the clip.
    x, kernel, y = _exact_linear(seed)
    m = moments_update(moments_init(8, 6), x, y)
    _, _, mse = fusion_weights(m)
    assert float(mse) >= 0.0
    assert float(fusion_mse(m, kernel)) >= 0.0
    trace = float(np.var(np.asarray(y, np.float64), axis=0).sum())
    assert float(mse) <= 1e-6 * trace


def test_inexact_fusion_mse_is_not_changed_by_the_clip():
    # tanh makes the map nonlinear: Corollary 1 computed here in float64 must match.
    x = np.asarray(jax.random.normal(jax.random.key(1), (2048, 4)), np.float64)
    y = np.tanh(2 * x) @ np.ones((4, 3))
    m = moments_update(moments_init(4, 3), jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    _, _, mse = fusion_weights(m)
    xc, yc = x - x.mean(0), y - y.mean(0)
    cx, cxy = xc.T @ xc / len(x), xc.T @ yc / len(x)
    k = np.linalg.solve(cx, cxy)
    expected = np.trace(yc.T @ yc / len(x)) - np.trace(k.T @ cxy)
    assert expected > 0.1
    np.testing.assert_allclose(float(mse), expected, rtol=1e-4)
