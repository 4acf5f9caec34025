"""Fuzzing FuseInit's ``fuse``: random CNNs and runs of layers (paper 001).

Valid input keeps the documented results: the fused model is the old one with the run replaced
by one layer, the fused params fit it, untouched layers are copied bit for bit, a linear run
fuses exactly (outputs equal, MSE 0) and otherwise the returned MSE is Corollary 1's, i.e. the
empirical MSE of the fused pre-activation. Invalid input raises the documented ``ValueError``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import jaxprune as jp
from jaxprune.models import CNN, ConvLayer, DenseLayer
from jaxprune.rewrites.fuse import check_cnn_params

# Every example compiles a few small programs (seconds on a loaded CPU): few examples, and no
# shrinking (a failure prints its example as found; shrinking one took minutes).
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
FUZZ = settings(max_examples=6, deadline=None, phases=NO_SHRINK)
widths = st.integers(1, 5)
acts = st.sampled_from(["relu", "tanh", "identity"])


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _init(net, x, seed):
    """LeCun-normal-like draws on ``net``'s shapes (NumPy: no init program to compile)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), x[:1]))["params"]
    scale = lambda s: 1.0 / np.sqrt(max(1, int(np.prod(s.shape[:-1]))))
    return jax.tree.map(lambda s: _normal(rng, s.shape) * scale(s), shapes)


def _apply(model, params, x, **kwargs):
    return jax.jit(lambda p, z: model.apply({"params": p}, z, **kwargs))(params, x)


def _check_copied(net, p, small, q, start, stop):
    """Layers outside the run keep their params, renumbered."""
    old, new = net.layer_names(), small.layer_names()
    for i in [*range(start), *range(stop, len(old))]:
        j = i if i < start else i - (stop - start) + 1
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(q[new[j]][leaf], p[old[i]][leaf])


@FUZZ
@given(
    d_in=st.integers(1, 4),
    run=st.lists(widths, min_size=1, max_size=2),
    last=st.tuples(widths, acts),
    tail=st.lists(st.tuples(widths, acts), max_size=2),
    seed=st.integers(0, 2**16),
)
def test_a_linear_dense_run_fuses_exactly(d_in, run, last, tail, seed):
    layers = (
        *(DenseLayer(w, "identity") for w in run),
        DenseLayer(*last),
        *(DenseLayer(*t) for t in tail),
    )
    net = CNN(layers)
    x = _normal(seed, (64, d_in))
    p = _init(net, x, seed)
    names = net.layer_names()[: len(run) + 1]
    small, q, mse = jp.fuse(net, p, names, data=[x[:32], x[32:]])
    assert small.layers == (DenseLayer(*last), *layers[len(run) + 1 :])
    check_cnn_params(small, q, x)
    _check_copied(net, p, small, q, 0, len(run) + 1)
    scale = max(
        1.0, float(jnp.abs(_apply(net, p, x, stop=len(run) + 1, pre_activation=True)).max())
    )
    assert abs(float(mse)) < 1e-4 * scale**2
    np.testing.assert_allclose(_apply(small, q, x), _apply(net, p, x), atol=2e-4 * scale)


@FUZZ
@given(
    d_in=st.integers(1, 4),
    widths_=st.lists(widths, min_size=2, max_size=4),
    inner=acts,
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_any_dense_run_returns_the_empirical_mse(d_in, widths_, inner, data, seed):
    n = len(widths_)
    start = data.draw(st.integers(0, n - 2))
    stop = data.draw(st.integers(start + 2, n))
    # tanh before the run: no dead units, so the input covariance of the run is full rank
    net = CNN(tuple(DenseLayer(w, "tanh" if i < start else inner) for i, w in enumerate(widths_)))
    x = _normal(seed, (128, d_in))
    p = _init(net, x, seed)
    small, q, mse = jp.fuse(net, p, net.layer_names()[start:stop], data=[x])
    assert small.layers == (*net.layers[:start], net.layers[stop - 1], *net.layers[stop:])
    check_cnn_params(small, q, x)
    _check_copied(net, p, small, q, start, stop)
    want = _apply(net, p, x, stop=stop, pre_activation=True)
    got = _apply(small, q, x, stop=start + 1, pre_activation=True)
    empirical = float(jnp.mean(jnp.sum((got - want) ** 2, axis=1)))
    np.testing.assert_allclose(float(mse), empirical, rtol=5e-3, atol=1e-5)


@settings(max_examples=5, deadline=None, phases=NO_SHRINK)
@given(
    c_in=st.integers(1, 2),
    conv=st.tuples(widths, st.integers(1, 3), st.integers(1, 2)),
    conv2=st.tuples(widths, st.integers(1, 3), st.integers(1, 2)),
    act=acts,
    seed=st.integers(0, 2**16),
)
def test_a_linear_valid_conv_run_fuses_exactly(c_in, conv, conv2, act, seed):
    (f1, k1, s1), (f2, k2, s2) = conv, conv2
    first = ConvLayer(f1, k1, s1, "VALID", "identity")
    net = CNN((first, ConvLayer(f2, k2, s2, "VALID", act)))
    x = _normal(seed, (128, 9, 9, c_in))  # >= 1 position each: more samples than 7*7*2 dims
    p = _init(net, x, seed)
    small, q, mse = jp.fuse(net, p, ("conv_0", "conv_1"), data=[x[:64], x[64:]])
    # k~ = k1 + (k2 - 1) s1 (the receptive field), s~ = s1 s2
    assert small.layers == (ConvLayer(f2, k1 + (k2 - 1) * s1, s1 * s2, "VALID", act),)
    check_cnn_params(small, q, x)
    want = _apply(net, p, x, pre_activation=True)
    scale = max(1.0, float(jnp.abs(want).max()))
    assert abs(float(mse)) < 1e-3 * scale**2 * want[0].size
    np.testing.assert_allclose(_apply(small, q, x), _apply(net, p, x), atol=5e-4 * scale)


@FUZZ
@given(widths_=st.lists(widths, min_size=3, max_size=4), seed=st.integers(0, 2**16), data=st.data())
def test_bad_input_raises_the_documented_error(widths_, seed, data):
    net = CNN(tuple(DenseLayer(w) for w in widths_))
    x = _normal(seed, (32, 3))
    p = _init(net, x, seed)
    names = net.layer_names()
    i = data.draw(st.integers(0, len(names) - 2))
    pair = names[i : i + 2]
    with pytest.raises(ValueError, match=r"layers: \['conv_0'\] not in this model"):
        jp.fuse(net, p, ("conv_0", names[0]), data=[x])
    with pytest.raises(ValueError, match="not consecutive neighbours"):
        jp.fuse(net, p, (names[0], names[2]), data=[x])
    with pytest.raises(ValueError, match="at least two neighbouring layers"):
        jp.fuse(net, p, pair[:1], data=[x])
    with pytest.raises(ValueError, match="estimator: 'uncorrelated' applies to conv-conv"):
        jp.fuse(net, p, pair, data=[x], estimator="uncorrelated")
    with pytest.raises(ValueError, match="estimator: expected one of"):
        jp.fuse(net, p, pair, data=[x], estimator="ridge")
    with pytest.raises(ValueError, match="kernel_size/padding: only for conv-conv"):
        jp.fuse(net, p, pair, data=[x], kernel_size=3)
    with pytest.raises(ValueError, match="data: expected at least one batch"):
        jp.fuse(net, p, pair, data=[])
    layer = data.draw(st.sampled_from(names))
    bad = {**p, layer: {**p[layer], "kernel": jnp.zeros((9, 9))}}
    with pytest.raises(ValueError, match=rf"params\['{layer}'\]\['kernel'\]: expected shape"):
        jp.fuse(net, bad, pair, data=[x])
    with pytest.raises(ValueError, match="params: expected layers"):
        jp.fuse(net, {k: v for k, v in p.items() if k != layer}, pair, data=[x])
    row = data.draw(st.integers(0, 31))
    with pytest.raises(ValueError, match="non-finite"):
        jp.fuse(net, p, pair, data=[x.at[row, 0].set(jnp.inf)])
