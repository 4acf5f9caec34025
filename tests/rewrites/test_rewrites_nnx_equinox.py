"""collapse, fuse, swap_relu_for_prelu and fold_linear on NNX and equinox models: the result
is an nnx.Module / eqx.Module, equal in outputs (float32 tolerance stated per test), with
parameter counts computed by hand and the folded weights checked against closed forms."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from zoo import make_equinox_mlp, make_nnx_mlp

import jaxprune as jp

TOL = dict(rtol=1e-5, atol=1e-5)  # float32 folding in a different order of sums


def _size(tree):
    return sum(int(np.size(a)) for a in jax.tree.leaves(tree))


class EqxChain(eqx.Module):
    """5 -> 8 (relu) -> 6 -> 3: layers 1 and 2 have no nonlinearity between them."""

    layers: list

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.layers = [
            eqx.nn.Linear(5, 8, key=k1),
            eqx.nn.Linear(8, 6, key=k2),
            eqx.nn.Linear(6, 3, key=k3),
        ]

    def __call__(self, x):
        def one(v):
            v = jax.nn.relu(self.layers[0](v))
            return self.layers[2](self.layers[1](v))

        return jax.vmap(one)(x)


class NnxChain(nnx.Module):
    """Linear(4, 8) -> relu -> Linear(8, 8) -> Linear(8, 3), the middle pair linear."""

    def __init__(self, rngs):
        self.fc1 = nnx.Linear(4, 8, rngs=rngs)
        self.fc2 = nnx.Linear(8, 8, rngs=rngs)
        self.fc3 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.fc3(self.fc2(nnx.relu(self.fc1(x))))


def test_collapse_nnx_folds_batchnorm_into_the_linear_layer():
    case = make_nnx_mlp()  # fc1 -> BatchNorm (eval) -> relu -> fc2
    m = case.model
    result = jp.collapse(m, None, case.x)
    small, sv = result.model, result.variables
    assert isinstance(small, nnx.Module)
    assert sorted(sv) == ["fc1", "fc2"]  # BatchNorm's four vectors are gone
    assert _size(nnx.to_pure_dict(nnx.state(m))) == (5 * 8 + 8) + 4 * 8 + (8 * 3 + 3)
    assert _size(sv) == (5 * 8 + 8) + (8 * 3 + 3)
    # closed form of the fold: (x W + b - mean) / sqrt(var + eps) * scale + shift
    bn = m.bn
    s = np.asarray(bn.scale[...]) / np.sqrt(np.asarray(bn.var[...]) + bn.epsilon)
    w = np.asarray(m.fc1.kernel[...], np.float64) * s
    b = (np.asarray(m.fc1.bias[...]) - np.asarray(bn.mean[...])) * s + np.asarray(bn.bias[...])
    np.testing.assert_allclose(sv["fc1"]["kernel"], w, **TOL)
    np.testing.assert_allclose(sv["fc1"]["bias"], b, **TOL)
    np.testing.assert_allclose(small(case.x), m(case.x), **TOL)
    np.testing.assert_allclose(nnx.jit(lambda s, x: s(x))(small, case.x[:3]), m(case.x[:3]), **TOL)


def test_collapse_nnx_linear_chain_and_export_roundtrip():
    m = NnxChain(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (9, 4))
    result = jp.collapse(m, None, x)
    small, sv = result.model, result.variables
    assert sorted(sv) == ["fc1", "fc2"]
    assert _size(sv) == (4 * 8 + 8) + (8 * 3 + 3)  # fc2 holds fc2 @ fc3
    w = np.asarray(m.fc2.kernel[...], np.float64) @ np.asarray(m.fc3.kernel[...], np.float64)
    np.testing.assert_allclose(sv["fc2"]["kernel"], w, **TOL)
    graphdef, state = nnx.split(small)
    leaves, treedef = jax.tree.flatten(state)

    def f(leaves, x):
        return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))(x)

    exported = jax.export.export(jax.jit(f))(leaves, x)
    restored = jax.export.deserialize(exported.serialize())
    np.testing.assert_allclose(restored.call(leaves, x), m(x), **TOL)


def test_collapse_equinox_w_at_x_chain_in_its_own_orientation():
    m = EqxChain(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (7, 5))
    result = jp.collapse(m, None, x)
    small, sv = result.model, result.variables
    assert isinstance(small, eqx.Module)
    assert _size(eqx.filter(m, eqx.is_array)) == (8 * 5 + 8) + (6 * 8 + 6) + (3 * 6 + 3)
    assert _size(sv) == (8 * 5 + 8) + (3 * 8 + 3)
    held = small.variables["layers"]["1"]
    w2, b2 = np.asarray(m.layers[1].weight, np.float64), np.asarray(m.layers[1].bias)
    w3, b3 = np.asarray(m.layers[2].weight, np.float64), np.asarray(m.layers[2].bias)
    np.testing.assert_allclose(held["weight"], w3 @ w2, **TOL)  # [out, in] like eqx's Linear
    np.testing.assert_allclose(held["bias"], w3 @ b2 + b3, **TOL)
    np.testing.assert_allclose(small(x), m(x), **TOL)
    np.testing.assert_allclose(eqx.filter_jit(lambda s, x: s(x))(small, x[:2]), m(x[:2]), **TOL)
    # differentiable in the held arrays
    g = eqx.filter_grad(lambda s: jnp.sum(s(x) ** 2))(small)
    assert jax.tree.structure(g.variables) == jax.tree.structure(small.variables)


def _as_function(m):
    """The same network as a function of a dict of params (for cross-kind comparisons)."""
    if isinstance(m, nnx.Module):
        p = {
            k: {"kernel": getattr(m, k).kernel[...], "bias": getattr(m, k).bias[...]}
            for k in ("fc1", "fc2", "fc3")
        }

        def f(p, x):
            h = jax.nn.relu(x @ p["fc1"]["kernel"] + p["fc1"]["bias"])
            h = h @ p["fc2"]["kernel"] + p["fc2"]["bias"]
            return jax.nn.relu(h) @ p["fc3"]["kernel"] + p["fc3"]["bias"]

        return f, p
    raise TypeError(type(m))


class NnxPair(nnx.Module):
    def __init__(self, rngs):
        self.fc1 = nnx.Linear(4, 8, rngs=rngs)
        self.fc2 = nnx.Linear(8, 8, rngs=rngs)
        self.fc3 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.fc1(x))
        return self.fc3(nnx.relu(self.fc2(h)))


def test_fuse_nnx_equals_the_same_fusion_of_the_same_function():
    m = NnxPair(nnx.Rngs(0))
    data = [jax.random.normal(jax.random.key(i), (64, 4)) for i in range(3)]
    result = jp.fuse(m, None, ("fc1", "fc2"), data=data)
    fused, fv = result.model, result.variables
    mse = result.report.mse[("fc1", "fc2")]
    f, p = _as_function(m)
    result = jp.fuse(f, p, ("fc1", "fc2"), data=data)
    ffused, fp = result.model, result.variables
    fmse = result.report.mse[("fc1", "fc2")]
    assert isinstance(fused, nnx.Module) and sorted(fv) == ["fc1", "fc3"]
    assert _size(fv) == (4 * 8 + 8) + (8 * 3 + 3)
    np.testing.assert_allclose(mse, fmse, rtol=1e-4)
    np.testing.assert_allclose(fv["fc1"]["kernel"], fp["fc1"]["kernel"], **TOL)
    np.testing.assert_allclose(fused(data[0]), ffused(fp, data[0]), **TOL)


def test_swap_and_fold_linear_on_nnx():
    m = NnxPair(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (6, 4))
    result = jp.rewrites.swap_relu_for_prelu(m, None, x)
    pm, pv = result.model, result.variables
    assert isinstance(pm, nnx.Module)
    assert sorted(pv["prelu"]) == ["fc1", "fc2"]
    assert isinstance(pm.prelu.fc1.slope, nnx.Param)  # trainable like any parameter
    np.testing.assert_array_equal(pm(x), m(x))  # slope 0: bit-identical
    # fc1's group linear (slope 1): fold fc1 into fc2 -> 4 -> 8 (prelu) -> 3
    pm.prelu.fc1.slope[...] = jnp.ones(8)
    pm.prelu.fc2.slope[...] = jnp.full(8, 0.25)
    h = np.asarray(x) @ np.asarray(m.fc1.kernel[...]) + np.asarray(m.fc1.bias[...])
    h = h @ np.asarray(m.fc2.kernel[...]) + np.asarray(m.fc2.bias[...])
    h = np.where(h > 0, h, 0.25 * h)
    want = h @ np.asarray(m.fc3.kernel[...]) + np.asarray(m.fc3.bias[...])
    np.testing.assert_allclose(pm(x), want, **TOL)
    result = jp.rewrites.fold_linear(pm, None, x)
    small, sv = result.model, result.variables
    assert isinstance(small, nnx.Module) and "fc1" not in sv
    assert _size(sv) == (4 * 8 + 8) + 8 + (8 * 3 + 3)  # fc2 (folded), its slopes, fc3
    np.testing.assert_allclose(small(x), want, **TOL)


def test_swap_on_equinox_is_bit_identical_and_takes_slopes():
    case = make_equinox_mlp()
    result = jp.rewrites.swap_relu_for_prelu(case.model, None, case.x)
    pm = result.model
    assert isinstance(pm, eqx.Module)
    assert sorted(pm.variables["prelu"]) == ["layers/0", "layers/1"]  # keyed by unit
    np.testing.assert_array_equal(pm(case.x), case.model(case.x))
    a0 = jnp.linspace(0, 1, 8)
    pm = eqx.tree_at(lambda t: t.variables["prelu"]["layers/0"]["slope"], pm, a0)
    ls = case.model.layers
    h = np.asarray(case.x) @ np.asarray(ls[0].weight).T + np.asarray(ls[0].bias)
    h = np.where(h > 0, h, np.asarray(a0) * h)
    h = np.maximum(h @ np.asarray(ls[1].weight).T + np.asarray(ls[1].bias), 0)
    want = h @ np.asarray(ls[2].weight).T + np.asarray(ls[2].bias)
    np.testing.assert_allclose(pm(case.x), want, **TOL)
    result = jp.rewrites.fold_linear(pm, None, case.x)  # no group is all-linear
    same, arrays = result.model, result.variables
    assert same is pm and _size(arrays) == _size(eqx.filter(pm, eqx.is_array))


def test_fold_linear_rejects_models_not_from_swap():
    m = NnxChain(nnx.Rngs(0))
    with pytest.raises(TypeError, match="swap_relu_for_prelu"):
        jp.rewrites.fold_linear(m, None, jnp.ones((2, 4)))
