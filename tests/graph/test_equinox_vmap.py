"""An equinox model written the usual way (``jax.vmap`` of per-example ``eqx.nn.Linear``
layers inside its ``__call__``: ``W @ x`` products and transposes in the jaxpr) has the same
fusable pairs, fusion MSEs and fused outputs as its linen twin holding the same weights."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from zoo import make_equinox_mlp

import jaxprune as jp

TOL = dict(rtol=1e-4, atol=1e-5)  # float32 moments summed in another order


class Twin(nn.Module):
    """The zoo's equinox MLP written in linen: 5 -> 8 (relu) -> 6 (relu) -> 3."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(8)(x))
        x = nn.relu(nn.Dense(6)(x))
        return nn.Dense(3)(x)


def _twin(model):
    params = {
        f"Dense_{i}": {"kernel": layer.weight.T, "bias": layer.bias}
        for i, layer in enumerate(model.layers)
    }
    return Twin(), {"params": params}


def _data():
    return [jax.random.normal(jax.random.key(10 + i), (64, 5)) for i in range(4)]


def test_fusion_candidates_equal_the_linen_twins():
    model = make_equinox_mlp().model
    twin, tv = _twin(model)
    data = _data()
    np.testing.assert_allclose(model(data[0]), twin.apply(tv, data[0]), **TOL)
    got = jp.analysis.fusion_candidates(model, None, data)
    want = jp.analysis.fusion_candidates(twin, tv, data)
    rename = {"layers/0": "Dense_0", "layers/1": "Dense_1", "layers/2": "Dense_2"}
    assert [tuple(rename[n] for n in c.layers) for c in got] == [c.layers for c in want]
    assert sorted(c.layers for c in want) == [("Dense_0", "Dense_1"), ("Dense_1", "Dense_2")]
    assert [(c.kind, c.n_params) for c in got] == [(c.kind, c.n_params) for c in want]
    assert {c.n_params for c in got} == {5 * 6 + 6, 8 * 3 + 3}  # fused a0 -> y by hand
    np.testing.assert_allclose([c.mse for c in got], [c.mse for c in want], rtol=1e-4)
    np.testing.assert_allclose(
        [c.relative_mse for c in got], [c.relative_mse for c in want], rtol=1e-4
    )
    assert all(c.mse > 0 for c in got)  # relu pairs: not exact


def test_fuse_equals_the_linen_twins_fusion():
    model = make_equinox_mlp().model
    twin, tv = _twin(model)
    data = _data()
    result = jp.fuse(model, None, ("layers/0", "layers/1"), data=data)
    fused = result.model
    mse = result.report.mse[("layers/0", "layers/1")]
    result = jp.fuse(twin, tv, ("Dense_0", "Dense_1"), data=data)
    tfused, tfv = result.model, result.variables
    tmse = result.report.mse[("Dense_0", "Dense_1")]
    assert isinstance(fused, eqx.Module)
    np.testing.assert_allclose(mse, tmse, rtol=1e-4)
    # the fused layer is held in the first layer's own orientation ([out, in], like eqx.nn.Linear)
    held = fused.variables["layers"]["0"]
    np.testing.assert_allclose(held["weight"], tfv["params"]["Dense_0"]["kernel"].T, **TOL)
    np.testing.assert_allclose(held["bias"], tfv["params"]["Dense_0"]["bias"], **TOL)
    assert "1" not in fused.variables["layers"]  # the second layer's leaves are gone
    x = jax.random.normal(jax.random.key(3), (7, 5))  # another batch size
    np.testing.assert_allclose(fused(x), tfused.apply(tfv, x), **TOL)
    # by hand: relu(K~ x + b~) then the untouched last layer
    h = jax.nn.relu(x @ held["weight"].T + held["bias"])
    want = h @ model.layers[2].weight.T + model.layers[2].bias
    np.testing.assert_allclose(fused(x), want, **TOL)
    np.testing.assert_allclose(eqx.filter_jit(lambda m, x: m(x))(fused, x), want, **TOL)


def test_fuse_the_last_pair_matches_too():
    model = make_equinox_mlp().model
    twin, tv = _twin(model)
    data = _data()
    result = jp.fuse(model, None, ("layers/1", "layers/2"), data=data)
    fused = result.model
    mse = result.report.mse[("layers/1", "layers/2")]
    result = jp.fuse(twin, tv, ("Dense_1", "Dense_2"), data=data)
    tfused, tfv = result.model, result.variables
    tmse = result.report.mse[("Dense_1", "Dense_2")]
    np.testing.assert_allclose(mse, tmse, rtol=1e-4)
    x = data[1]
    np.testing.assert_allclose(fused(x), tfused.apply(tfv, x), **TOL)
    assert jnp.shape(fused.variables["layers"]["1"]["weight"]) == (3, 8)
