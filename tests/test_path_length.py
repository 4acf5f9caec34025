"""APL/NAPL/ENW from the traced graph against paper 004's own construction, computed by hand.

Paper 004 (sec. 3.1, "implementation details"): set every kernel entry to 1 and biases to 0,
feed a constant input, and let every active unit multiply its channel by ``z``. Each channel
then holds a polynomial ``P(z)`` whose coefficient ``k`` counts the paths reaching it through
``k`` active units, and APL = ``P'(1) / P(1)`` at the output. The reference below writes that
forward by hand, per model, at channel level: a layer sums its input channels' polynomials
(``k * k`` times for a ``k x k`` conv, the interior pixels' count), norms and pooling are
ignored, a zero-padded shortcut contributes nothing to its new channels.
"""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.analysis import (
    average_path_length,
    effective_width,
    linear_units,
    normalized_average_path_length,
    path_histogram,
    units_from_param_masks,
)
from tests import zoo

K = 64  # polynomial degree bound, above every model's depth


def _inp(c):
    x = np.zeros((c, K))
    x[:, 0] = 1.0
    return x


def _layer(x, cout, mult=1):
    return np.tile(mult * x.sum(0), (cout, 1))


def _act(x, mask):
    z = np.concatenate([np.zeros((len(x), 1)), x[:, :-1]], axis=1)
    return np.where(np.asarray(mask, bool)[:, None], z, x)


def _pad(x, c):
    return np.concatenate([x, np.zeros((c - len(x), K))])


def _apl(out):
    p = out.sum(0)
    return float(np.arange(K) @ p / p.sum())


def _hand_mlp(m):
    h = _act(_layer(_inp(5), 8), m["Dense_0"])
    h = _act(_layer(h, 6), m["Dense_1"])
    return _layer(h, 3)


def _hand_concat(m):
    x = _inp(6)
    h = np.concatenate([_act(_layer(x, 3), m["Dense_0"]), _act(_layer(x, 4), m["Dense_1"])])
    return _layer(_act(_layer(h, 5), m["Dense_3"]), 2)


def _hand_resnet_v1(m, shortcut):
    stem = "Conv_0"
    x = _act(_layer(_inp(3), 4, 9), m[stem][:4])
    y = _act(_layer(x, 4, 9), m["ResBlockV1_0/Conv_0"])
    x = _act(_layer(y, 4, 9) + x, m[stem][:4])
    y = _act(_layer(x, 8, 9), m["ResBlockV1_1/Conv_0"])
    if shortcut == "A":
        x = _act(_layer(y, 8, 9) + _pad(x, 8), m[stem])
    else:
        x = _act(_layer(y, 8, 9) + _layer(x, 8), m["ResBlockV1_1/Conv_1"])
    return _layer(x, 3)


def _hand_resnet_v2(m):
    x = _layer(_inp(3), 4, 9)
    h = _act(x, m["Conv_0"])
    y = _act(_layer(h, 4, 9), m["ResBlockV2_0/Conv_0"])
    x = _layer(y, 4, 9) + x
    h = _act(x, m["Conv_0"])
    short = _layer(h, 6)  # the 1x1 projection reads the pre-activated input
    y = _act(_layer(h, 6, 9), m["ResBlockV2_1/Conv_1"])
    x = _layer(y, 6, 9) + short
    return _layer(_act(x, m["ResBlockV2_1/Conv_0"]), 3)


def _hand_cnn(m):
    x = _act(_layer(_inp(2), 6, 9), m["Conv_0"])
    x = _layer(x, 4)  # linear 1x1 conv
    x = _act(_layer(x, 5, 9), m["Conv_2"])
    x = _act(x, np.ones(5))  # max-pool: a nonlinearity, always active
    return _layer(x, 3, 16)  # flatten: each channel read at 4 x 4 positions


def _hand_depthwise(m):
    x = _act(_layer(_inp(2), 6, 9), m["Conv_0"])
    x = _act(9 * x, m["Conv_0"])  # depthwise 3x3: channel c from channel c only
    x = _act(_layer(x, 5), m["Conv_2"])
    return _layer(x, 2)


def _hand_transformer_mlp(m):
    x = _inp(4)  # LayerNorm: ignored (its 1/std is a rescaling, not a nonlinearity)
    h = _act(_layer(x, 16), m["Dense_0"])  # gelu (tanh form: several primitives, one site)
    return _layer(h, 4) + x


CASES = {
    "transformer_mlp_gelu_layernorm": (zoo.make_transformer_mlp, _hand_transformer_mlp),
    "cnn_flatten_maxpool": (zoo.make_cnn, _hand_cnn),
    "depthwise": (zoo.make_depthwise, _hand_depthwise),
    "mlp": (zoo.make_mlp, _hand_mlp),
    "concat": (zoo.make_concat, _hand_concat),
    "resnet_v1_A": (lambda: zoo.make_resnet_v1("A"), lambda m: _hand_resnet_v1(m, "A")),
    "resnet_v1_B": (lambda: zoo.make_resnet_v1("B"), lambda m: _hand_resnet_v1(m, "B")),
    "resnet_v2": (zoo.make_resnet_v2, _hand_resnet_v2),
}


def _graph(make):
    case = make()
    return jp.trace(case.model, case.variables, case.x, model_kwargs=case.kwargs)


@pytest.mark.parametrize("name", list(CASES))
def test_apl_matches_the_papers_construction(name):
    make, hand = CASES[name]
    graph = _graph(make)
    rng = np.random.default_rng(0)
    for trial in range(6):
        if trial == 0:
            masks = {u: np.ones(v.width, bool) for u, v in graph.units.items()}
        elif trial == 1:
            masks = {u: np.zeros(v.width, bool) for u, v in graph.units.items()}
        else:
            masks = {u: rng.random(v.width) < 0.5 for u, v in graph.units.items()}
        expect = _apl(hand(masks))
        assert average_path_length(graph, masks) == pytest.approx(expect, rel=1e-12, abs=1e-12)
        _, log_n = path_histogram(graph, masks)
        assert log_n == pytest.approx(np.log(hand(masks).sum()), rel=1e-12)
    assert average_path_length(graph) == pytest.approx(_apl(hand(_ones(graph))), rel=1e-12)


def _ones(graph):
    return {u: np.ones(v.width, bool) for u, v in graph.units.items()}


def test_path_count_and_napl_resnet_v1_a():
    graph = _graph(CASES["resnet_v1_A"][0])
    out = _hand_resnet_v1(_ones(graph), "A")
    _, log_n = path_histogram(graph)
    assert np.exp(log_n) == pytest.approx(out.sum())
    # NAPL by hand: every join averages its reached operands' distributions; a layer averages
    # its input channels'. Channels are uniform within each half, so track distributions.
    z = lambda p: np.concatenate([[0.0], p[:-1]])  # noqa: E731
    d = np.zeros(K)
    d[0] = 1
    x = z(d)  # stem
    x = z((z(x) + x) / 2)  # block 1: conv, relu, conv, add the shortcut, relu
    y = z(x)  # block 2's main branch
    lo = z((y + x) / 2)  # channels 0..3: main + shortcut
    hi = z(y)  # channels 4..7: the zero-padded shortcut does not reach them
    expect = (lo + hi) / 2
    assert normalized_average_path_length(graph) == pytest.approx(np.arange(K) @ expect)
    assert np.arange(K) @ expect == pytest.approx(4.25)


class _BlockV2(nn.Module):
    """Pre-activation basic block, shortcut option "A" (paper 004, App. C.1)."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.BatchNorm(use_running_average=True)(x))
        y = nn.Conv(self.features, (3, 3), strides=self.strides, use_bias=False)(h)
        y = nn.relu(nn.BatchNorm(use_running_average=True)(y))
        y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
        if x.shape[-1] != self.features:
            x = x[:, :: self.strides, :: self.strides, :]
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.features - x.shape[-1])))
        return y + x


class _ResNet56(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(16, (3, 3), use_bias=False)(x)
        for stage, w in enumerate((16, 32, 64)):
            for b in range(9):
                x = _BlockV2(w, strides=2 if stage and not b else 1)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True)(x))
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


def test_resnet56_closed_form_and_speed():
    """ResNet-56 (v2, option A), everything active: APL in closed form.

    Let ``S(z)`` be the sum over a stage's channels of their path polynomials. The stem conv
    reads 3 constant channels 9 times each: ``S = 16 * 27``. A block of width ``w`` maps its
    input channels ``r_c`` to ``r_c + 81 w z^2 S`` (pre-activation relu: ``z``, conv: ``9 S``
    summed, relu: ``z``, conv: ``9 w`` times that per channel), so ``S -> (81 w^2 z^2 + 1) S``;
    with option "A" the new zero channels get no shortcut term, and the same holds with
    ``S`` summed over the narrower input. The head is relu (``z``), mean pool (ignored),
    dense (10 outputs). So ``P(z) = 10 * 432 * z * prod_blocks (81 w^2 z^2 + 1)``, and
    ``APL = P'(1)/P(1) = 1 + sum_blocks 2 * 81 w^2 / (81 w^2 + 1)``
    ``= 55 - 18 * sum_{w in 16, 32, 64} 1 / (81 w^2 + 1)``.
    """
    x = jnp.ones((1, 32, 32, 3))
    model = _ResNet56()
    variables = jax.jit(model.init)(jax.random.key(0), x)
    t0 = time.perf_counter()
    graph = jp.trace(model, variables, x)
    apl = average_path_length(graph)
    elapsed = time.perf_counter() - t0
    expect = 55 - 18 * sum(1 / (81 * w * w + 1) for w in (16, 32, 64))
    assert apl == pytest.approx(expect, rel=1e-12)
    assert elapsed < 10.0  # about 0.5 s on a laptop CPU; generous for shared CI
    # ENW: 55 relu layers (27 pre-activations, 27 inner, 1 head); a stage's first
    # pre-activation runs on the previous stage's width.
    widths = [16] * 19 + [32] * 18 + [64] * 18
    assert effective_width(graph) == pytest.approx(np.mean(widths))


def test_effective_width_counts_active_units_per_relu_layer():
    graph = _graph(zoo.make_mlp)
    m = {"Dense_0": np.arange(8) < 3, "Dense_1": np.arange(6) < 5}
    assert effective_width(graph, m) == 4.0


def test_prelu_models_trace_and_linear_units():
    """PReLU nets (custom jnp.where PReLU): slopes > 0.99 are linear units."""
    net = jp.models.PReLUMLP(hidden=(4, 3), out=2)
    x = jnp.ones((2, 5))
    v = net.init(jax.random.key(0), x)
    v["params"]["prelu_0"]["slope"] = jnp.array([1.0, 0.0, 1.0, 0.2])
    v["params"]["prelu_1"]["slope"] = jnp.array([0.0, 1.0, 1.0])
    graph = jp.trace(net, v, x)
    lin = linear_units(graph, v["params"])
    active = {u: ~m for u, m in lin.items()}
    h = _act(_layer(_inp(5), 4), [0, 1, 0, 1])
    out = _layer(_act(_layer(h, 3), [1, 0, 0]), 2)
    assert average_path_length(graph, active) == pytest.approx(_apl(out))
    by_layer = {"prelu_0": np.array([1, 0, 1, 0], bool), "prelu_1": np.array([0, 1, 1], bool)}
    moved = units_from_param_masks(graph, by_layer)
    assert {u: m.tolist() for u, m in moved.items()} == {u: m.tolist() for u, m in lin.items()}


def test_prelu_resmlp_per_activation_masks():
    """Each block's first PReLU acts on the residual stream (one unit, several PReLUs): masks
    keyed by the PReLU layer apply to that activation only, as the slopes do."""
    net = jp.models.PReLUResMLP(width=3, blocks=2, out=2)
    x = jnp.ones((2, 4))
    graph = jp.trace(net, net.init(jax.random.key(0), x), x)
    rng = np.random.default_rng(1)
    for _ in range(4):
        m = {k: rng.random(3) < 0.5 for k in net.slope_layers()}
        h = _layer(_inp(4), 3)
        for b in range(2):
            t = _layer(_act(h, m[f"prelu_{b}_0"]), 3)
            h = h + _layer(_act(t, m[f"prelu_{b}_1"]), 3)
        out = _layer(_act(h, m["prelu_final"]), 2)
        assert average_path_length(graph, m) == pytest.approx(_apl(out), rel=1e-12)
    none = {k: np.zeros(3, bool) for k in net.slope_layers()}
    assert average_path_length(graph, none) == 0.0
    assert normalized_average_path_length(graph, none) == 0.0
    assert effective_width(graph, {"prelu_0_0": np.array([1, 0, 0], bool)}) == pytest.approx(
        (1 + 3 * 4) / 5
    )


def test_errors():
    graph = _graph(zoo.make_mlp)
    with pytest.raises(ValueError, match="unknown unit"):
        average_path_length(graph, {"nope": np.ones(3, bool)})
    with pytest.raises(ValueError, match="expected shape"):
        average_path_length(graph, {"Dense_0": np.ones(3, bool)})
    with pytest.raises(ValueError, match="scale no unit"):
        units_from_param_masks(graph, {"prelu_9": np.ones(3, bool)})


class _NormMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.LayerNorm()(nn.Dense(5)(x)))
        h = nn.Dense(4)(h)
        return nn.Dense(2)(jax.nn.softmax(h) * h)


def test_norms_are_not_nonlinearities():
    """LayerNorm's 1/std and softmax's 1/sum rescale the channels (paper 004 ignores norms);
    softmax's exp and the product with it are one gating nonlinearity on ``Dense_1``."""
    x = jnp.ones((2, 3))
    graph = jp.trace(_NormMLP(), _NormMLP().init(jax.random.key(0), x), x)
    assert average_path_length(graph) == pytest.approx(2.0)
    assert average_path_length(graph, {"Dense_0": np.zeros(5, bool)}) == pytest.approx(1.0)


class _Slices(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4)(x)
        b = nn.relu(jnp.concatenate([h, h], -1)[:, 5:7])  # the second copy's channels 1, 2
        _, d = jnp.split(nn.Dense(6)(x), [2], axis=-1)
        return nn.Dense(1)(jnp.concatenate([b, nn.relu(d)], -1))


def test_slices_and_splits_of_the_channels():
    x = jnp.ones((1, 3))
    graph = jp.trace(_Slices(), _Slices().init(jax.random.key(0), x), x)
    m = {"Dense_0": np.array([1, 0, 1, 1], bool), "Dense_1": np.array([1, 1, 0, 0, 0, 1], bool)}
    h = _layer(_inp(3), 4)
    b = _act(np.concatenate([h, h])[5:7], m["Dense_0"][1:3])
    d = _act(_layer(_inp(3), 6)[2:], m["Dense_1"][2:])
    out = _layer(np.concatenate([b, d]), 1)
    assert average_path_length(graph, m) == pytest.approx(_apl(out), rel=1e-12)
