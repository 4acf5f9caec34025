"""Corollary 1 of paper 001 (fusion MSE) is never negative."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune._fusion_solve import FusionWarning, fusion_mse, fusion_weights
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


def _rank_deficient(n=24, dx=64, dy=3):
    # fewer rows than inputs (paper 001's Table I: 300 images for 4,096 fused inputs)
    x = np.asarray(jax.random.normal(jax.random.key(5), (n, dx)), np.float64) * 2 + 0.5
    y = np.tanh(x[:, :5]) @ np.ones((5, dy)) + x[:, 5:6]
    m = moments_update(
        moments_init(dx, dy), jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    )
    xc, yc = x - x.mean(0), y - y.mean(0)
    return m, np.linalg.pinv(xc) @ yc  # minimum-norm least squares, Eq. (25), in float64


def test_lstsq_is_the_minimum_norm_solution_when_rows_are_fewer_than_inputs():
    m, expected = _rank_deficient()
    kernel, bias, _ = fusion_weights(m, method="lstsq")
    np.testing.assert_allclose(np.asarray(kernel), expected, atol=2e-5 * np.abs(expected).max())
    # the SVD-based solver the eigendecomposition replaces gives the same kernel
    c, cxy = m.cov_xx(), m.cov_xy()
    svd = jnp.linalg.lstsq(c, cxy, rcond=64 * np.finfo(np.float32).eps)[0]
    np.testing.assert_allclose(
        np.asarray(kernel), np.asarray(svd), atol=2e-5 * np.abs(expected).max()
    )
    np.testing.assert_allclose(
        np.asarray(bias), np.asarray(m.mean_y - m.mean_x @ kernel), rtol=1e-6, atol=1e-6
    )


def test_auto_with_fewer_rows_than_inputs_skips_the_eigenvalues(monkeypatch):
    # n < dx already decides lstsq; an eigvalsh of C_a0 (minutes at Table I's 4,096 inputs)
    # would be wasted work
    calls = []
    eigvalsh = jnp.linalg.eigvalsh
    monkeypatch.setattr(jnp.linalg, "eigvalsh", lambda a: calls.append(a.shape) or eigvalsh(a))
    m, expected = _rank_deficient(n=23, dx=61)
    with pytest.warns(FusionWarning, match="23 samples for 61 input dimensions"):
        kernel, _, _ = fusion_weights(m)
    assert calls == []
    np.testing.assert_allclose(np.asarray(kernel), expected, atol=2e-5 * np.abs(expected).max())
