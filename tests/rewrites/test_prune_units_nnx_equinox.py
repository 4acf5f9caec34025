"""jp.prune_units on NNX and equinox models: the narrow model is an nnx.Module / eqx.Module of
the same state structure, equal to the masked network, with hand parameter counts, and it
works under jit, vmap, grad and jax.export."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from zoo import ZOO, make_equinox_mlp, make_nnx_cnn, make_nnx_mlp

import jaxprune as jp

TOL = dict(rtol=1e-5, atol=1e-5)  # float32: the narrow sums skip exact zeros


def _size(tree):
    return sum(int(np.size(a)) for a in jax.tree.leaves(tree))


def _paths(tree):
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _random_keep(graph, seed):
    rng = np.random.default_rng(seed)
    keep = {}
    for name, unit in graph.units.items():
        m = rng.random(unit.width) < 0.5
        m[rng.integers(unit.width)] = True
        keep[name] = m
    return keep


@pytest.mark.parametrize("name", ["nnx_mlp", "nnx_cnn", "equinox_mlp"])
@pytest.mark.parametrize("seed", [0, 1])
def test_prune_equals_masked_network_and_keeps_kind(name, seed):
    case = ZOO[name]()
    graph = jp.trace(case.model, case.variables, case.x)
    keep = _random_keep(graph, seed)
    result = jp.prune_units(case.model, case.variables, keep, case.x)
    narrow, nv = result.model, result.variables
    if name.startswith("nnx"):
        assert isinstance(narrow, nnx.Module)
        original = nnx.state(case.model)
        # the same state paths and variable types (Param, BatchStat), narrowed values
        assert [(p, type(v)) for p, v in nnx.to_flat_state(nnx.state(narrow))] == [
            (p, type(v)) for p, v in nnx.to_flat_state(original)
        ]
        assert _paths(nv) == _paths(nnx.to_pure_dict(original))
    else:
        assert isinstance(narrow, eqx.Module)
        # it holds the original's arrays structure, narrowed; nv is its own arrays
        assert _paths(narrow.variables) == _paths(eqx.filter(case.model, eqx.is_array))
        assert _paths(nv) == _paths(narrow)
    masked = graph.apply(graph.model.variables, case.x, masks=keep)
    np.testing.assert_allclose(narrow(case.x), masked, **TOL)
    # another batch size: the narrow model re-traces the original at the new shape
    x2 = jnp.concatenate([case.x, case.x[:1]])
    g2 = jp.trace(case.model, case.variables, x2)
    np.testing.assert_allclose(narrow(x2), g2.apply(g2.model.variables, x2, masks=keep), **TOL)


def test_nnx_mlp_parameter_count_by_hand():
    case = make_nnx_mlp()  # Linear 5->8, BatchNorm(8), relu, Linear 8->3
    kept = np.array([0, 3, 6])
    keep = {"fc1": np.isin(np.arange(8), kept)}
    result = jp.prune_units(case.model, None, keep, case.x)
    narrow, nv = result.model, result.variables
    assert _size(nv) == (5 * 3 + 3) + 4 * 3 + (3 * 3 + 3)
    assert _size(nnx.state(narrow, nnx.Param)) == (5 * 3 + 3) + 2 * 3 + (3 * 3 + 3)
    assert _size(nnx.state(narrow, nnx.BatchStat)) == 2 * 3  # running mean and var
    m = case.model
    np.testing.assert_array_equal(nv["fc1"]["kernel"], m.fc1.kernel[...][:, kept])
    np.testing.assert_array_equal(nv["bn"]["var"], m.bn.var[...][kept])
    np.testing.assert_array_equal(nv["fc2"]["kernel"], m.fc2.kernel[...][kept])
    np.testing.assert_array_equal(nv["fc2"]["bias"], m.fc2.bias[...])


def test_nnx_cnn_parameter_count_by_hand():
    case = make_nnx_cnn()  # conv3x3 2->6, relu, conv3x3 6->4, relu, flatten 6*6*4 -> 3
    keep = {"conv1": np.arange(6) < 2, "conv2": np.arange(4) % 2 == 1}
    result = jp.prune_units(case.model, None, keep, case.x)
    nv = result.variables
    assert _size(nv) == (9 * 2 * 2 + 2) + (9 * 2 * 2 + 2) + (36 * 2 * 3 + 3)
    assert nv["head"]["kernel"].shape == (72, 3)
    # the flatten reads channels fastest: the head keeps rows 1, 3 of every pixel's four
    rows = np.flatnonzero(np.tile(np.arange(4) % 2 == 1, 36))
    np.testing.assert_array_equal(nv["head"]["kernel"], case.model.head.kernel[...][rows])


def test_equinox_mlp_parameter_count_by_hand():
    case = make_equinox_mlp()  # Linear 5->8, relu, Linear 8->6, relu, Linear 6->3
    keep = {"layers/0": np.arange(8) < 3, "layers/1": np.arange(6) >= 4}
    result = jp.prune_units(case.model, None, keep, case.x)
    nv = result.variables
    assert _size(nv) == (5 * 3 + 3) + (3 * 2 + 2) + (2 * 3 + 3)
    w1 = case.model.layers[1].weight  # equinox: (out, in)
    np.testing.assert_array_equal(nv.variables.layers[1].weight, w1[4:, :3])


def test_nnx_jit_vmap_grad_and_export_round_trip():
    case = make_nnx_cnn()
    graph = jp.trace(case.model, None, case.x)
    keep = _random_keep(graph, 3)
    result = jp.prune_units(case.model, None, keep, case.x)
    narrow, nv = result.model, result.variables
    ref = graph.apply(graph.model.variables, case.x, masks=keep)
    np.testing.assert_allclose(jax.jit(lambda m, x: m(x))(narrow, case.x), ref, **TOL)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(narrow, case.x), ref, **TOL)
    per_example = jax.vmap(lambda x: narrow(x[None])[0])(case.x)
    np.testing.assert_allclose(per_example, ref, **TOL)
    grads = nnx.grad(lambda m: m(case.x).sum())(narrow)
    assert jax.tree.map(np.shape, nnx.to_pure_dict(grads)) == jax.tree.map(np.shape, nv)
    graphdef, state = nnx.split(narrow)

    def fwd(pure, x):  # a pure function of the state's pure dict
        s = jax.tree.map(lambda a: a, state)
        nnx.replace_by_pure_dict(s, pure)
        return nnx.merge(graphdef, s)(x)

    exported = jax.export.export(jax.jit(fwd))(nv, case.x)
    restored = jax.export.deserialize(exported.serialize())
    np.testing.assert_allclose(restored.call(nv, case.x), ref, **TOL)


def test_nnx_optimizer_step_trains_the_narrow_model():
    import optax

    case = make_nnx_mlp()
    result = jp.prune_units(case.model, None, {"fc1": np.arange(8) < 5}, case.x)
    narrow, nv = result.model, result.variables
    opt = nnx.Optimizer(narrow, optax.sgd(0.5), wrt=nnx.Param)
    loss = lambda m: (m(case.x) ** 2).mean()  # noqa: E731
    g = nnx.grad(loss)(narrow)
    opt.update(narrow, g)
    expect = nv["fc2"]["kernel"] - 0.5 * g["fc2"]["kernel"][...]
    np.testing.assert_allclose(narrow.fc2.kernel[...], expect, **TOL)
    np.testing.assert_array_equal(narrow.bn.mean[...], nv["bn"]["mean"])  # eval mode


def test_equinox_filter_jit_partition_grad_and_export_round_trip():
    case = make_equinox_mlp()
    graph = jp.trace(case.model, None, case.x)
    keep = _random_keep(graph, 4)
    result = jp.prune_units(case.model, None, keep, case.x)
    narrow, arrays = result.model, result.variables
    ref = graph.apply(graph.model.variables, case.x, masks=keep)
    np.testing.assert_allclose(eqx.filter_jit(lambda m, x: m(x))(narrow, case.x), ref, **TOL)
    params, static = eqx.partition(narrow, eqx.is_array)
    assert jax.tree.structure(params) == jax.tree.structure(arrays)
    np.testing.assert_allclose(eqx.combine(params, static)(case.x), ref, **TOL)
    per_example = jax.vmap(lambda x: narrow(x[None])[0])(case.x)
    np.testing.assert_allclose(per_example, ref, **TOL)
    g = eqx.filter_grad(lambda m: m(case.x).sum())(narrow)
    assert jax.tree.map(np.shape, eqx.filter(g, eqx.is_array)) == jax.tree.map(np.shape, arrays)

    def fwd(p, x):
        return eqx.combine(p, static)(x)

    leaves, treedef = jax.tree.flatten(params)  # export takes standard pytrees: a list
    exported = jax.export.export(jax.jit(lambda ls, x: fwd(treedef.unflatten(ls), x)))(
        leaves, case.x
    )
    restored = jax.export.deserialize(exported.serialize())
    np.testing.assert_allclose(restored.call(leaves, case.x), ref, **TOL)


def test_nnx_with_a_state_passed_prunes_that_state():
    case = make_nnx_mlp()
    state = jax.tree.map(lambda a: a * 2 + 1, nnx.state(case.model))  # not the module's own
    keep = {"fc1": np.arange(8) % 3 != 1}
    result = jp.prune_units(case.model, state, keep, case.x)
    narrow, nv = result.model, result.variables
    np.testing.assert_array_equal(nv["bn"]["mean"], state["bn"]["mean"][...][keep["fc1"]])
    graph = jp.trace(case.model, state, case.x)
    masked = graph.apply(graph.model.variables, case.x, masks=keep)
    np.testing.assert_allclose(narrow(case.x), masked, **TOL)
    plain = jp.trace(case.model, None, case.x)
    assert not np.allclose(masked, plain.apply(plain.model.variables, case.x, masks=keep))
