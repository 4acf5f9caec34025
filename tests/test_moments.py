"""Streaming moments: exact against a float64 two-pass reference, stable, shardable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxprune.analysis import (
    moments_init,
    moments_merge,
    moments_update,
    streaming_moments,
)


def _data(n=96, dx=5, dy=3, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dx)) * np.arange(1, dx + 1) + offset
    y = np.tanh(x - offset) @ rng.normal(size=(dx, dy)) + offset
    return x.astype(np.float32), y.astype(np.float32)


def _reference(x, y):
    x, y = x.astype(np.float64), y.astype(np.float64)
    xc, yc = x - x.mean(0), y - y.mean(0)
    return x.mean(0), y.mean(0), xc.T @ xc / len(x), xc.T @ yc / len(x), (yc**2).mean(0)


def test_streaming_equals_two_pass_reference_over_uneven_batches():
    x, y = _data()
    cuts = [0, 7, 40, 41, 96]  # uneven, one single-row batch
    batches = [(x[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    m = streaming_moments(lambda b: b, batches)
    mx, my, cxx, cxy, vy = _reference(x, y)
    assert float(m.count) == 96
    np.testing.assert_allclose(m.mean_x, mx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.mean_y, my, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.cov_xx(), cxx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.cov_xy(), cxy, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.var_y(), vy, rtol=1e-5, atol=1e-5)


def test_stable_far_from_zero_in_float32():
    # Mean 1e4, std ~1: the naive E[xx^T] - mean mean^T in float32 has error ~1e8 * 6e-8 ~ 6.
    x, y = _data(offset=1e4)
    m = streaming_moments(lambda b: b, [(x[i : i + 16], y[i : i + 16]) for i in range(0, 96, 16)])
    _, _, cxx, cxy, vy = _reference(x, y)
    np.testing.assert_allclose(m.cov_xx(), cxx, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(m.cov_xy(), cxy, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(m.var_y(), vy, rtol=2e-3, atol=2e-3)


def test_merge_is_order_free():
    x, y = _data(n=30)
    a = moments_update(moments_init(5, 3), x[:11], y[:11])
    b = moments_update(moments_init(5, 3), x[11:], y[11:])
    ab, ba = moments_merge(a, b), moments_merge(b, a)
    for u, v in zip(ab, ba, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5)
    empty = moments_merge(moments_init(5, 3), a)
    for u, v in zip(empty, a, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-6)


def test_psum_inside_shard_map_equals_single_device():
    assert jax.device_count() == 8
    x, y = _data(n=64)
    mesh = jax.make_mesh((8,), ("data",))
    spec = NamedSharding(mesh, P("data"))
    x, y = jax.device_put(x, spec), jax.device_put(y, spec)

    def local(state, xs, ys):
        return moments_update(state, xs, ys, axis_name="data")

    sharded = jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=P(), check_vma=False
    )
    got = jax.jit(sharded)(moments_init(5, 3), x, y)
    want = moments_update(moments_init(5, 3), x, y)
    for u, v in zip(got, want, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
def test_jit_with_named_sharding_equals_single_device(axis_type):
    x, y = _data(n=64)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
    spec = NamedSharding(mesh, P("data"))
    xs, ys = jax.device_put(x, spec), jax.device_put(y, spec)
    got = jax.jit(moments_update)(moments_init(5, 3), xs, ys)
    want = moments_update(moments_init(5, 3), x, y)
    for u, v in zip(got, want, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5)


def test_bad_shapes_and_empty_data_raise():
    with pytest.raises(ValueError, match=r"x, y: expected shapes \(n, 5\) and \(n, 3\)"):
        moments_update(moments_init(5, 3), jnp.zeros((4, 5)), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="batches: expected at least one batch"):
        streaming_moments(lambda b: b, [])
    with pytest.raises(ValueError, match="float64 accumulation needs"):
        moments_init(2, 2, jnp.float64)
