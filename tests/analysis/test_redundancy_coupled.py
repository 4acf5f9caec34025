"""redundant_units on units whose output is set by more than one slice of their coupling group
(a conv and its BatchNorm): every slice counts, through the unit's folded incoming weights.

Hand-built conv -> BatchNorm (running statistics) -> relu units: two units are trivially
redundant when their pre-activations are positive multiples of each other, i.e. when the folded
vectors ``(s K, s (b - mean) + shift)``, ``s = scale / sqrt(var + eps)``, are parallel."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.analysis import redundant_units
from jaxprune.graph import GraphError

EPS = 1e-5  # flax BatchNorm's default epsilon


class ConvBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Conv(3, (2, 2), padding="VALID")(x)
        h = nn.relu(nn.BatchNorm(use_running_average=not train)(h))
        return nn.Dense(1)(h.reshape((h.shape[0], -1)))


X = jnp.ones((1, 3, 3, 2))


def _variables(**bn):
    """Unit 1's conv filter and bias are 2x unit 0's; unit 2 is unrelated."""
    k0 = np.arange(1.0, 9.0).reshape(2, 2, 2) / 10
    kernel = np.stack([k0, 2 * k0, np.array([[[1, -1], [0, 2]], [[0, 1], [1, 0.0]]])], -1)
    stats = dict(mean=[0.5, 1.0, 0.0], var=[1.0, 4 * (1.0 + EPS) - EPS, 1.0])
    stats.update({k: v for k, v in bn.items() if k in ("mean", "var")})
    affine = dict(scale=[1.5, 1.5, 1.0], bias=[0.2, 0.2, 0.0])
    affine.update({k: v for k, v in bn.items() if k in ("scale", "bias")})
    f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return {
        "params": {
            "Conv_0": {"kernel": f(kernel), "bias": f([0.3, 0.6, 0.1])},
            "BatchNorm_0": {k: f(v) for k, v in affine.items()},
            "Dense_0": {"kernel": jnp.ones((12, 1)), "bias": jnp.zeros(1)},
        },
        "batch_stats": {"BatchNorm_0": {k: f(v) for k, v in stats.items()}},
    }


def _folded_similarity(v) -> float:
    """Normalized dot product of units 0 and 1's folded incoming weights, by hand (numpy)."""
    p, s = v["params"], v["batch_stats"]["BatchNorm_0"]
    k, b = np.asarray(p["Conv_0"]["kernel"], np.float64), np.asarray(p["Conv_0"]["bias"])
    g, t = np.asarray(p["BatchNorm_0"]["scale"]), np.asarray(p["BatchNorm_0"]["bias"])
    scale = g / np.sqrt(np.asarray(s["var"], np.float64) + EPS)
    vecs = [
        np.append(scale[u] * k[..., u].ravel(), scale[u] * (b[u] - s["mean"][u]) + t[u])
        for u in (0, 1)
    ]
    return float(vecs[0] @ vecs[1] / np.linalg.norm(vecs[0]) / np.linalg.norm(vecs[1]))


def test_merged_when_every_slice_agrees():
    # unit 1 = 2x unit 0 in conv and BN statistics, same BN scale and shift: its
    # pre-activation is exactly unit 0's, so it is redundant
    v = _variables()
    assert _folded_similarity(v) == pytest.approx(1.0, abs=1e-12)
    _, state = ConvBN().apply(v, X, capture_intermediates=True)
    z = state["intermediates"]["BatchNorm_0"]["__call__"][0]  # the units' pre-activations
    np.testing.assert_allclose(z[..., 1], z[..., 0], rtol=1e-5)
    assert redundant_units(ConvBN(), v, X)["Conv_0"].tolist() == [False, True, False]


def test_not_merged_when_the_batchnorm_shift_differs():
    # the same conv filters and statistics, but unit 1's BatchNorm shift is 1.2 instead of 0.2
    v = _variables(bias=[0.2, 1.2, 0.0])
    sim = _folded_similarity(v)
    assert 0.5 < sim < 0.97  # by hand: the folded vectors are far from parallel
    assert redundant_units(ConvBN(), v, X)["Conv_0"].tolist() == [False, False, False]
    # the similarity used is the folded one: redundant just below it, not just above
    assert redundant_units(ConvBN(), v, X, sim - 1e-4)["Conv_0"].tolist() == [False, True, False]
    assert redundant_units(ConvBN(), v, X, sim + 1e-4)["Conv_0"].tolist() == [False] * 3


@pytest.mark.parametrize(
    "bn",
    [
        dict(scale=[1.5, 0.5, 1.0], bias=[2.0, 2.0, 0.0]),
        dict(mean=[0.5, 0.0, 0.0]),
        dict(var=[1.0, 1.0, 1.0], bias=[2.0, 2.0, 0.0]),
    ],
    ids=["scale", "mean", "var"],
)
def test_not_merged_when_another_batchnorm_slice_differs(bn):
    v = _variables(**bn)
    assert _folded_similarity(v) < 0.95  # by hand
    assert _folded_similarity(_variables(bias=[2.0, 2.0, 0.0])) == pytest.approx(1, abs=1e-12)
    assert redundant_units(ConvBN(), v, X)["Conv_0"].tolist() == [False, False, False]


def test_a_positive_multiple_through_the_batchnorm_is_redundant():
    # unit 1's BN scale and shift are 3x unit 0's: its pre-activation is 3x unit 0's, and
    # relu(3 z) = 3 relu(z) can be merged into unit 0's outgoing weights
    v = _variables(scale=[1.5, 4.5, 1.0], bias=[0.2, 0.6, 0.0])
    assert _folded_similarity(v) == pytest.approx(1.0, abs=1e-12)
    assert redundant_units(ConvBN(), v, X)["Conv_0"].tolist() == [False, True, False]


def test_batch_statistics_are_an_error_naming_evaluation_mode():
    v = _variables()
    with pytest.raises(GraphError, match=r"Conv_0.*BatchNorm_0/(bias|scale).*evaluation mode"):
        redundant_units(ConvBN(), v, X, model_kwargs={"train": True, "mutable": ["batch_stats"]})
