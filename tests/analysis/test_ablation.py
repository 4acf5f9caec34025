"""unit_ablation / active_units on the layer graph: hand-written masked forward passes, every
zoo model against zeroing the unit's outgoing weights, vmapped == Python loop, bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from zoo import ZOO

import jaxprune as jp
from jaxprune.graph import as_model
from jaxprune.models import MLP


class Net(nn.Module):
    """The user's model: three units on 1-D input."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(3)(x))
        return nn.Dense(1)(h)


def _hand_built():
    """u0 = relu(x) carries y = x; u1 is dead; u2 adds a small bump."""
    params = {
        "Dense_0": {"kernel": jnp.array([[1.0, -1.0, 1.0]]), "bias": jnp.array([0.0, -10.0, -1.5])},
        "Dense_1": {"kernel": jnp.array([[1.0], [7.0], [0.2]]), "bias": jnp.array([0.0])},
    }
    x = jnp.array([[0.5], [1.0], [2.0]])
    return Net(), {"params": params}, x


def _mse(pred, y):
    return float(jnp.mean((pred - y) ** 2))


def test_unit_ablation_hand_computed():
    model, variables, x = _hand_built()
    y = x + 0.05  # intact prediction: [0.5, 1.0, 2.1] -> errors [-0.05, -0.05, 0.05]
    ratios = jp.analysis.unit_ablation(model, variables, (x, y))["Dense_0"]
    base = 0.05**2
    # Without u0: prediction [0, 0, 0.1] -> errors [0.55, 1.05, 1.95]
    no_u0 = (0.55**2 + 1.05**2 + 1.95**2) / 3
    # Without u2: prediction [0.5, 1.0, 2.0] -> errors [0.05, 0.05, 0.05]
    np.testing.assert_allclose(ratios, [no_u0 / base, 1.0, 1.0], rtol=1e-5)


def test_active_units_uses_ratio_at_least_threshold():
    model, variables, x = _hand_built()
    y = x + 0.05
    active = jp.analysis.active_units(model, variables, (x, y))["Dense_0"]
    assert active.tolist() == [True, False, False]
    # A lower threshold never marks fewer units active.
    assert jp.analysis.active_units(model, variables, (x, y), threshold=1.0)["Dense_0"].all()


def _ratios_by_hand(forward, x, y, widths):
    """Loop over units; forward(masks) is the test's own masked forward pass."""
    base = _mse(forward({}), y)
    out = {}
    for name, w in widths.items():
        out[name] = [_mse(forward({name: jnp.ones(w).at[i].set(0)}), y) / base for i in range(w)]
    return out


def test_mlp_equals_hand_written_masked_forward():
    case = ZOO["mlp"]()
    p = case.variables["params"]
    y = jax.random.normal(jax.random.key(5), (case.x.shape[0], 3))

    def forward(m):
        h = jax.nn.relu(case.x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
        h = h * m.get("Dense_0", 1.0)
        h = jax.nn.relu(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
        h = h * m.get("Dense_1", 1.0)
        return h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]

    expected = _ratios_by_hand(forward, case.x, y, case.units)
    got = jp.analysis.unit_ablation(case.model, case.variables, (case.x, y), chunk_size=5)
    assert list(got) == ["Dense_0", "Dense_1"]
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5)


def test_function_equals_hand_written_masked_forward():
    case = ZOO["function"]()
    p = case.variables
    y = jax.random.normal(jax.random.key(5), (case.x.shape[0], 2))

    def forward(m):
        h = jnp.maximum(case.x @ p["w1"] + p["b1"], 0.0) * m.get("w1", 1.0)
        return h @ p["w2"] + p["b2"]

    expected = _ratios_by_hand(forward, case.x, y, case.units)
    got = jp.analysis.unit_ablation(case.model, p, (case.x, y))
    np.testing.assert_allclose(got["w1"], expected["w1"], rtol=1e-5)
    assert np.ptp(np.asarray(got["w1"])) > 0.01  # the units differ: not a vacuous check


def _zeroed_outgoing(graph, variables, unit, i):
    """The variables with unit i's outgoing weights (kernel rows in every reader) zeroed."""
    leaves = dict(graph.model.leaves(variables))
    for leaf, axis, idx in graph.slices(unit, incoming=False, outgoing=True):
        a = leaves[leaf]
        hit = (idx == i).reshape([-1 if d == axis else 1 for d in range(a.ndim)])
        leaves[leaf] = jnp.where(hit, 0, a)
    flat, tree = jax.tree_util.tree_flatten(variables)
    return jax.tree_util.tree_unflatten(tree, list(leaves.values()))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model_equals_zeroing_outgoing_weights(name):
    case = ZOO[name]()
    adapter = as_model(case.model, case.variables)
    graph = jp.trace(adapter, adapter.variables, case.x, model_kwargs=case.kwargs)
    v = adapter.variables
    out = adapter.apply(v, case.x, **case.kwargs)
    y = out + jax.random.normal(jax.random.key(9), out.shape)  # a nonzero baseline loss
    got = jp.analysis.unit_ablation(
        case.model, case.variables, (case.x, y), chunk_size=3, model_kwargs=case.kwargs
    )
    assert {k: r.shape for k, r in got.items()} == {k: (w,) for k, w in case.units.items()}
    base = _mse(out, y)
    apply = jax.jit(lambda v: adapter.apply(v, case.x, **case.kwargs))  # the model itself
    for unit, w in case.units.items():
        expected = [_mse(apply(_zeroed_outgoing(graph, v, unit, i)), y) / base for i in range(w)]
        np.testing.assert_allclose(got[unit], expected, rtol=2e-4, atol=1e-5, err_msg=unit)


def test_resnet_stem_unit_removed_through_the_identity_shortcut():
    # Zeroing stem channel 0 (and block 1's output channel 0, tied by the skip) where read:
    # block 1's first conv input rows and block 2's conv and projection input rows.
    case = ZOO["resnet_v1_b"]()
    v = case.variables
    y = jnp.zeros((4, 3))
    p = v["params"]
    zero_row = lambda k: k.at[:, :, 0, :].set(0)  # noqa: E731
    q = {
        **p,
        "ResBlockV1_0": {
            **p["ResBlockV1_0"],
            "Conv_0": {"kernel": zero_row(p["ResBlockV1_0"]["Conv_0"]["kernel"])},
        },
        "ResBlockV1_1": {
            **p["ResBlockV1_1"],
            "Conv_0": {"kernel": zero_row(p["ResBlockV1_1"]["Conv_0"]["kernel"])},
            "Conv_2": {"kernel": zero_row(p["ResBlockV1_1"]["Conv_2"]["kernel"])},
        },
    }
    base = _mse(case.model.apply(v, case.x, train=False), y)
    removed = _mse(case.model.apply({**v, "params": q}, case.x, train=False), y)
    got = jp.analysis.unit_ablation(case.model, v, (case.x, y), model_kwargs={"train": False})[
        "Conv_0"
    ]
    np.testing.assert_allclose(got[0], removed / base, rtol=1e-5)


def test_vmapped_equals_python_loop_over_units():
    case = ZOO["resnet_v1_b"]()
    graph = jp.trace(case.model, case.variables, case.x, model_kwargs={"train": False})
    y = jnp.ones((4, 3))
    got = jp.analysis.unit_ablation(graph, None, (case.x, y), chunk_size=7)
    base = _mse(graph.apply(case.variables, case.x), y)
    for unit, u in graph.units.items():
        loop = [
            _mse(
                graph.apply(case.variables, case.x, masks={unit: jnp.ones(u.width).at[i].set(0)}), y
            )
            / base
            for i in range(u.width)
        ]
        np.testing.assert_allclose(got[unit], loop, rtol=1e-5)


def test_unit_selection_and_graph_input():
    case = ZOO["mlp"]()
    y = jnp.zeros((16, 3))
    full = jp.analysis.unit_ablation(case.model, case.variables, (case.x, y))
    only = jp.analysis.unit_ablation(case.model, case.variables, (case.x, y), units=["Dense_1"])
    assert list(only) == ["Dense_1"]
    np.testing.assert_allclose(only["Dense_1"], full["Dense_1"], rtol=1e-6)
    sel = jnp.zeros(8, bool).at[jnp.array([1, 4])].set(True)
    part = jp.analysis.unit_ablation(
        case.model, case.variables, (case.x, y), units={"Dense_0": sel}
    )["Dense_0"]
    np.testing.assert_allclose(
        np.asarray(part)[[1, 4]], np.asarray(full["Dense_0"])[[1, 4]], rtol=1e-6
    )
    assert np.isnan(np.asarray(part)[[0, 2, 3, 5, 6, 7]]).all()
    graph = jp.trace(case.model, case.variables, case.x)
    from_graph = jp.analysis.unit_ablation(graph, case.variables, (case.x, y))
    np.testing.assert_allclose(from_graph["Dense_0"], full["Dense_0"], rtol=1e-6)


def test_reference_mlp_units_keep_their_names_and_vmap_over_seeds(key):
    model = MLP(hidden=(3,))
    x, y = jp.data.paint("square", size=8)
    params = jax.vmap(lambda k: model.init(k, x)["params"])(jax.random.split(key, 4))
    batched = jax.vmap(lambda p: jp.analysis.unit_ablation(model, p, (x, y))["relu_0"])(params)
    single = jp.analysis.unit_ablation(model, jax.tree.map(lambda a: a[2], params), (x, y))
    assert list(single) == ["relu_0"]
    np.testing.assert_allclose(batched[2], single["relu_0"], rtol=1e-6)


def test_ablation_bad_input():
    model, v, x = _hand_built()
    with pytest.raises(ValueError, match="threshold: expected a positive"):
        jp.analysis.active_units(model, v, (x, x), threshold=0.0)
    with pytest.raises(ValueError, match="threshold: expected a positive"):
        jp.analysis.active_units(model, v, (x, x), threshold=-1.5)
    with pytest.raises(ValueError, match=r"units: unknown unit\(s\) \['relu_0'\]"):
        jp.analysis.unit_ablation(model, v, (x, x), units=["relu_0"])
    with pytest.raises(ValueError, match=r"units: unknown unit"):
        jp.analysis.active_units(model, v, (x, x), units={"nope": jnp.ones(3, bool)})
    with pytest.raises(
        ValueError, match=r"units\['Dense_0'\]: expected shape \(3,\) and dtype bool"
    ):
        jp.analysis.unit_ablation(model, v, (x, x), units={"Dense_0": jnp.ones(3)})
    with pytest.raises(ValueError, match="chunk_size: expected a positive int"):
        jp.analysis.unit_ablation(model, v, (x, x), chunk_size=0)
    graph = jp.trace(model, v, x)
    with pytest.raises(ValueError, match="data: the inputs have shapes"):
        jp.analysis.unit_ablation(graph, v, (x[:2], x[:2]))


def test_jit_with_traced_variables_and_unit_selection():
    model, v, x = _hand_built()
    y = x + 0.05
    sel = jnp.array([True, False, True])
    run = jax.jit(
        lambda v, s: jp.analysis.unit_ablation(model, v, (x, y), units={"Dense_0": s})["Dense_0"]
    )
    got = np.asarray(run(v, sel))
    eager = np.asarray(jp.analysis.unit_ablation(model, v, (x, y))["Dense_0"])
    np.testing.assert_allclose(got[[0, 2]], eager[[0, 2]], rtol=1e-6)
    assert np.isnan(got[1])
