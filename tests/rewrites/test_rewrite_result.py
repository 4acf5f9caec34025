"""Every rewrite returns one RewriteResult: model, variables and a report of what changed."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxprune as jp


class Net(nn.Module):
    """Dense 5 -> 8 (relu) -> BatchNorm -> 6 (linear) -> 3: the user's own model."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.Dense(8)(x))
        h = nn.BatchNorm(use_running_average=not train)(nn.Dense(6)(h))
        return nn.Dense(3)(h)


def _net():
    x = jax.random.normal(jax.random.key(0), (16, 5))
    net = Net()
    return net, net.init(jax.random.key(1), x), x


def test_result_is_read_by_name_not_unpacked():
    net, v, x = _net()
    r = jp.collapse(net, v, x)
    assert isinstance(r, jp.RewriteResult) and isinstance(r.report, jp.rewrites.RewriteReport)
    with pytest.raises(TypeError, match=r"not a tuple: read its fields by name \(result.model"):
        small, sv = r
    np.testing.assert_allclose(r.model.apply(r.variables, x), net.apply(v, x), atol=1e-5)


def test_collapse_report_counts_trainable_params_and_names_each_fold():
    net, v, x = _net()
    r = jp.collapse(net, v, x)
    # params only (BatchNorm's running mean and var are statistics, not parameters):
    # Dense_0 5*8+8, Dense_1 8*6+6, BatchNorm 6+6, Dense_2 6*3+3
    assert r.report.params_before == 48 + 54 + 12 + 21
    # Dense_1, BatchNorm_0 and Dense_2 fold into one 8 -> 3 layer stored under Dense_1
    assert r.report.params_after == 48 + 8 * 3 + 3
    assert r.report.changes == ("Dense_1 + Dense_2 + BatchNorm_0 -> Dense_1",)
    assert r.report.mse is None and r.report.output_error is None
    assert "135 -> 75 parameters (-44.4%)" in r.summary()
    assert "Dense_1 + Dense_2 + BatchNorm_0 -> Dense_1" in repr(r)


def test_prune_report_lists_narrowed_groups_with_widths():
    net, v, x = _net()
    keep = {"Dense_0": np.arange(8) < 3}
    r = jp.prune_units(net, v, keep, x)
    assert r.report.changes == ("Dense_0: 8 -> 3 units",)
    assert r.report.params_after == r.report.params_before - 5 * (5 + 1) - 5 * 6
    got = sum(a.size for a in jax.tree.leaves(r.variables["params"]))
    assert r.report.params_after == got


def test_fuse_report_holds_the_pair_mse():
    net, v, x = _net()
    r = jp.fuse(net, v, ("Dense_0", "Dense_1"), data=[x[:8], x[8:]])
    assert set(r.report.mse) == {("Dense_0", "Dense_1")}
    assert float(r.report.mse[("Dense_0", "Dense_1")]) >= 0.0
    # the target is Dense_1's pre-activation, after BatchNorm_0: the fused 5 -> 6 layer
    # replaces Dense_0, Dense_1 and BatchNorm_0
    assert r.report.changes == ("Dense_0 + Dense_1 + BatchNorm_0 -> Dense_0",)
    assert r.report.params_after == r.report.params_before - (48 + 54 + 12) + (5 * 6 + 6)


def test_prelu_swap_then_fold_report_slopes_and_the_folded_pair():
    net, v, x = _net()
    p = jp.rewrites.swap_relu_for_prelu(net, v, x)
    assert p.report.changes == ("Dense_0: ReLU -> PReLU (8 slopes)",)
    assert p.report.params_after == p.report.params_before + 8
    lin = jp.rewrites.set_linear_slopes(p.variables["params"], {"prelu/Dense_0": np.ones(8, bool)})
    f = jp.rewrites.fold_linear(p.model, {**p.variables, "params": lin}, x)
    assert f.report.changes == ("Dense_0 + Dense_1 -> Dense_1",)
    # Dense_0 (5*8+8) and its 8 slopes go, Dense_1's kernel becomes 5 x 6
    assert f.report.params_after == p.report.params_after - 48 - 8 - 8 * 6 + 5 * 6
    nothing = jp.rewrites.fold_linear(p.model, p.variables, x)  # slopes 0: nothing folds
    assert nothing.report.changes == ()
    assert nothing.report.params_after == nothing.report.params_before


class NNXNet(nnx.Module):
    def __init__(self, rngs):
        self.fc1 = nnx.Linear(5, 8, rngs=rngs)
        self.fc2 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.fc2(nnx.relu(self.fc1(x)))


def test_nnx_and_equinox_results_hold_the_module_and_its_arrays():
    x = jnp.ones((4, 5))
    r = jp.prune_units(NNXNet(nnx.Rngs(0)), None, {"fc1": np.arange(8) < 5}, x)
    assert isinstance(r.model, nnx.Module) and r.model(x).shape == (4, 3)
    assert r.report.params_before == 5 * 8 + 8 + 8 * 3 + 3
    assert r.report.params_after == 5 * 5 + 5 + 5 * 3 + 3
    mlp = eqx.nn.MLP(5, 3, 8, 1, key=jax.random.key(0))
    e = jp.prune_units(mlp, None, {"layers/0": np.arange(8) < 2}, x[0])
    assert isinstance(e.model, eqx.Module)
    want = jax.tree.leaves(eqx.filter(e.model, eqx.is_array))
    assert [a.shape for a in jax.tree.leaves(e.variables)] == [a.shape for a in want]
    assert e.report.changes == ("layers/0: 8 -> 2 units",)
