"""Rewritten models are first-class models: ``init`` draws from the original's initializers,
dropout runs with ``rngs=``, they pickle (and load in a new process), compare and hash by
content, keep a bounded plan cache and expose the original's call signature."""

import inspect
import math
import pickle
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from random_nets import block, build
from rewritten_pickle_models import DropNet, EqxNet, NNXNet, mlp
from zoo import make_cnn, make_mlp, make_nested, make_resnet_v1

import jaxprune as jp
from jaxprune.graph._adapters import path_str

HERE = Path(__file__).resolve().parent


def _flat(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_str(p): np.asarray(v) for p, v in flat}


def _half(graph):
    return {n: np.arange(u.width) % 2 == 0 for n, u in graph.units.items() if not u.coupled}


def _prune(case, key_seed=None):
    graph = jp.trace(case.model, case.variables, case.x, model_kwargs=case.kwargs)
    keep = _half(graph)
    result = jp.prune_units(case.model, case.variables, keep, case.x, model_kwargs=case.kwargs)
    narrow, nv = result.model, result.variables
    return narrow, nv, keep, graph


def _sliced(graph, keep, variables):
    """The prune of ``variables`` by hand: the kept slices of every leaf."""
    from jaxprune.graph._rewritten import leaf_keep

    out = _flat(variables)
    for (leaf, axis), idx in leaf_keep(graph, keep).items():
        out[leaf] = np.take(out[leaf], idx, axis=axis)
    return out


# -- init ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [make_mlp, make_nested, make_cnn, make_resnet_v1])
def test_pruned_init_is_the_kept_slices_of_the_original_init(make):
    case = make()
    narrow, nv, keep, graph = _prune(case)
    for seed in (3, 4):
        key = jax.random.key(seed)
        got = _flat(narrow.init(key, case.x, **case.kwargs))
        want = _sliced(graph, keep, case.model.init(key, case.x, **case.kwargs))
        assert sorted(got) == sorted(want) == sorted(_flat(nv))
        for path in want:
            np.testing.assert_array_equal(got[path], want[path], err_msg=path)
    a = _flat(narrow.init(jax.random.key(3), case.x, **case.kwargs))
    b = _flat(narrow.init(jax.random.key(4), case.x, **case.kwargs))
    kernels = [p for p in a if p.endswith("kernel")]
    assert kernels and all(not np.array_equal(a[p], b[p]) for p in kernels)


def test_pruned_init_has_the_layer_initializers_scale():
    """lecun_normal: std sqrt(1/fan_in) per kernel, biases 0 (the original's initializers)."""
    case = make_mlp()  # Dense 5->8, 8->6, 6->3
    narrow, _, _, _ = _prune(case)  # 5->4, 4->3, 3->3
    stds = {"Dense_0": [], "Dense_1": [], "Dense_2": []}
    for seed in range(40):
        p = narrow.init(jax.random.key(seed), case.x)["params"]
        for k in stds:
            stds[k].append(np.asarray(p[k]["kernel"]).ravel())
            assert not np.asarray(p[k]["bias"]).any()
    for k, fan_in in (("Dense_0", 5), ("Dense_1", 8), ("Dense_2", 6)):  # the original's fan-in
        assert abs(np.std(np.concatenate(stds[k])) / math.sqrt(1 / fan_in) - 1) < 0.1, k


def test_collapsed_init_is_the_collapse_of_the_original_init():
    for case in (make_cnn(), make_resnet_v1("B")):
        result = jp.collapse(case.model, case.variables, case.x, model_kwargs=case.kwargs)
        small, sv = result.model, result.variables
        for seed in (0, 1):
            key = jax.random.key(seed)
            fresh = case.model.init(key, case.x, **case.kwargs)
            want = jp.collapse(case.model, fresh, case.x, model_kwargs=case.kwargs).variables
            got = _flat(small.init(key, case.x, **case.kwargs))
            want = _flat(want)
            assert sorted(got) == sorted(want) == sorted(_flat(sv))
            for path in want:
                np.testing.assert_allclose(got[path], want[path], rtol=1e-6, atol=1e-6)
        assert any(np.asarray(v).std() > 0.01 for v in got.values())


def test_fused_init_draws_the_first_layers_initializer():
    case = make_mlp()  # fuse Dense_1 (8->6) and Dense_2 (6->3): fused kernel 8->3
    data = [case.x]
    result = jp.fuse(case.model, case.variables, ("Dense_1", "Dense_2"), data)
    small, sv = result.model, result.variables
    assert jax.tree.map(jnp.shape, sv)["params"]["Dense_1"]["kernel"] == (8, 3)
    draws = []
    for seed in range(60):
        key = jax.random.key(seed)
        got = _flat(small.init(key, case.x))
        fresh = _flat(case.model.init(key, case.x))
        for p in ("params/Dense_0/kernel", "params/Dense_0/bias"):  # untouched layers: as drawn
            np.testing.assert_array_equal(got[p], fresh[p])
        np.testing.assert_array_equal(got["params/Dense_1/bias"], np.zeros(3))
        draws.append(got["params/Dense_1/kernel"].ravel())
    draws = np.concatenate(draws)
    assert abs(np.std(draws) / math.sqrt(1 / 8) - 1) < 0.1  # Dense_1's lecun_normal, fan-in 8
    assert not np.array_equal(draws[:24], draws[24:48])


def test_prelu_init_is_the_original_init_plus_initial_slopes_and_folds():
    case = make_mlp()
    result = jp.rewrites.swap_relu_for_prelu(case.model, case.variables, case.x, slope=0.25)
    pnet, pv = result.model, result.variables
    key = jax.random.key(5)
    got, fresh = _flat(pnet.init(key, case.x)), _flat(case.model.init(key, case.x))
    assert sorted(got) == sorted(_flat(pv))
    for p, v in got.items():
        want = np.full(v.shape, 0.25) if p.endswith("slope") else fresh[p]
        np.testing.assert_array_equal(v, want, err_msg=p)
    lin = jp.rewrites.set_linear_slopes(pv["params"], {"prelu/Dense_0": jnp.ones(8, bool)})
    result = jp.rewrites.fold_linear(pnet, {"params": lin}, case.x)
    small, sv = result.model, result.variables
    got = _flat(small.init(key, case.x))
    assert sorted(got) == sorted(_flat(sv))
    w = fresh["params/Dense_0/kernel"] @ fresh["params/Dense_1/kernel"]
    np.testing.assert_allclose(got["params/Dense_1/kernel"], w, rtol=1e-5, atol=1e-6)
    b = fresh["params/Dense_0/bias"] @ fresh["params/Dense_1/kernel"] + fresh["params/Dense_1/bias"]
    np.testing.assert_allclose(got["params/Dense_1/bias"], b, atol=1e-6)
    np.testing.assert_array_equal(got["params/prelu/Dense_1/slope"], np.full(6, 0.25))


@settings(max_examples=5, deadline=None)
@given(conv=st.booleans(), blocks=st.lists(block, min_size=1, max_size=3), seed=st.integers(0, 9))
def test_pruned_init_on_random_architectures(conv, blocks, seed):
    model, variables, x = build(conv, blocks, seed)
    graph = jp.trace(model, variables, x)
    keep = _half(graph)
    narrow = jp.prune_units(model, variables, keep, x).model
    key = jax.random.key(seed + 7)
    got = _flat(narrow.init(key, x))
    want = _sliced(graph, keep, model.init(key, x))
    assert sorted(got) == sorted(want)
    for p in want:
        np.testing.assert_array_equal(got[p], want[p], err_msg=p)


def _ce_data(n=96, seed=0):
    x = jax.random.normal(jax.random.key(seed), (n, 5))
    y = (x[:, 0] > 0).astype(jnp.int32) + (x[:, 1] > 0.5).astype(jnp.int32)
    return x, y


def test_pruned_model_trains_from_init_without_variables():
    case = make_mlp()
    narrow, _, _, _ = _prune(case)
    x, y = _ce_data()
    res = jp.training.fit(
        narrow,
        (x, y),
        keys=jax.random.split(jax.random.key(0), 2),
        loss="cross_entropy",
        optimizer=optax.adam(0.03),
        batch_size=32,
        max_epochs=40,
        progress=False,
    )
    assert np.all(np.asarray(res.loss) < math.log(3) - 0.3)
    k = res.params["Dense_0"]["kernel"]
    assert not np.allclose(k[0], k[1])  # the seeds start from different draws


def test_reinit_units_on_a_pruned_graph_draws_the_layer_initializer():
    case = make_mlp()
    narrow, nv, _, _ = _prune(case)
    graph = jp.trace(narrow, nv, case.x)
    cols = []
    for seed in range(40):
        q, _ = jp.rewrites.reinit_units(
            graph, nv["params"], {"Dense_0": jnp.ones(4, bool)}, jax.random.key(seed)
        )
        cols.append(np.asarray(q["Dense_0"]["kernel"]).ravel())
    assert abs(np.std(np.concatenate(cols)) / math.sqrt(1 / 5) - 1) < 0.1


# -- dropout ------------------------------------------------------------------------------------
def _drop_case():
    x, y = _ce_data()
    net = DropNet()
    v = net.init(jax.random.key(0), x)
    keep = {"Dense_0": np.arange(8) % 2 == 0, "Dense_1": np.arange(6) < 4}
    return net, v, keep, x, y


def test_pruned_dropout_model_equals_the_masked_original_in_train_mode():
    net, v, keep, x, _ = _drop_case()
    result = jp.prune_units(net, v, keep, x)
    narrow, nv = result.model, result.variables
    rngs = {"dropout": jax.random.key(2)}
    got = narrow.apply(nv, x, train=True, rngs=rngs)
    graph = jp.trace(net, v, x)
    masked = {
        **v,
        "params": {
            **v["params"],
            "Dense_1": {
                "kernel": v["params"]["Dense_1"]["kernel"] * keep["Dense_0"][:, None],
                "bias": v["params"]["Dense_1"]["bias"],
            },
            "Dense_2": {
                "kernel": v["params"]["Dense_2"]["kernel"] * keep["Dense_1"][:, None],
                "bias": v["params"]["Dense_2"]["bias"],
            },
        },
    }
    want = net.apply(masked, x, train=True, rngs=rngs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, narrow.apply(nv, x, train=False), atol=1e-3)  # dropout acts
    again = jax.jit(lambda k: narrow.apply(nv, x, train=True, rngs={"dropout": k}))
    np.testing.assert_allclose(again(jax.random.key(2)), want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(again(jax.random.key(3)), want, atol=1e-3)
    del graph


def test_pruned_dropout_model_trains_with_fit():
    net, v, keep, x, y = _drop_case()
    result = jp.prune_units(net, v, keep, x)
    narrow, nv = result.model, result.variables
    res = jp.training.fit(
        narrow,
        (x, y),
        keys=jax.random.key(0),
        variables=nv,
        loss="cross_entropy",
        optimizer=optax.adam(0.03),
        batch_size=32,
        max_epochs=30,
        progress=False,
    )
    assert float(res.loss) < math.log(3) - 0.2


# -- pickle, equality, cache, signature -------------------------------------------------------
def _parts(result, x):
    return result.model, result.variables, x


def _rewrites():
    x = _ce_data()[0]
    net = DropNet()
    v = net.init(jax.random.key(0), x)
    keep = {"Dense_0": np.arange(8) % 2 == 0}
    out = {"linen": _parts(jp.prune_units(net, v, keep, x), x)}
    out["linen_collapse"] = _parts(jp.collapse(net, v, x), x)
    out["linen_prelu"] = _parts(jp.rewrites.swap_relu_for_prelu(net, v, x, slope=0.1), x)
    nm = NNXNet(nnx.Rngs(0))
    nm.eval()
    out["nnx"] = _parts(jp.prune_units(nm, None, {"fc1": np.arange(8) < 5}, x), x)
    em = EqxNet(jax.random.key(0))
    out["equinox"] = _parts(jp.prune_units(em, None, {"layers/0": np.arange(8) < 5}, x), x)
    params = {
        "w1": jax.random.normal(jax.random.key(1), (5, 7)),
        "b1": jnp.zeros(7),
        "w2": jax.random.normal(jax.random.key(2), (7, 3)),
        "b2": jnp.zeros(3),
    }
    out["function"] = _parts(jp.prune_units(mlp, params, {"w1": np.arange(7) < 4}, x), x)
    return out


def _call(model, variables, x):
    if isinstance(model, (nnx.Module, eqx.Module)):
        return model(x)
    if hasattr(model, "apply"):
        return model.apply(variables, x)
    return model(variables, x)


_LOADER = """
import pickle, sys
import numpy as np
sys.path[:0] = {paths!r}
import jax, equinox as eqx
from flax import nnx
with open({src!r}, "rb") as f:
    models = pickle.load(f)
outs = {{}}
for name, (model, variables, x) in models.items():
    if isinstance(model, (nnx.Module, eqx.Module)):
        outs[name] = np.asarray(model(x))
    elif hasattr(model, "apply"):
        outs[name] = np.asarray(model.apply(variables, x))
    else:
        outs[name] = np.asarray(model(variables, x))
np.savez({dst!r}, **outs)
"""


def test_rewritten_models_pickle_and_load_in_a_new_process(tmp_path):
    models = _rewrites()
    src, dst = tmp_path / "models.pkl", tmp_path / "outs.npz"
    src.write_bytes(pickle.dumps(models))
    for name, (model, variables, x) in pickle.loads(src.read_bytes()).items():
        np.testing.assert_array_equal(_call(model, variables, x), _call(*models[name]))
    paths = [str(HERE), str(HERE.parent), str(HERE.parent.parent)]
    code = _LOADER.format(paths=paths, src=str(src), dst=str(dst))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    outs = np.load(dst)
    assert sorted(outs.files) == sorted(models)
    for name, (model, variables, x) in models.items():
        np.testing.assert_array_equal(outs[name], _call(model, variables, x), err_msg=name)


def test_equal_rewrites_compare_and_hash_equal_and_jit_does_not_recompile():
    a, b = _rewrites(), _rewrites()
    for name in a:
        assert a[name][0].spec == b[name][0].spec, name
        assert hash(a[name][0].spec) == hash(b[name][0].spec), name
        if name == "nnx":  # a mutable nnx.Module: nnx.jit caches on the graph definition
            assert nnx.graphdef(a[name][0]) == nnx.graphdef(b[name][0])
        elif name == "equinox":  # holds arrays: eqx.filter_jit caches on the static part
            assert jax.tree.structure(a[name][0]) == jax.tree.structure(b[name][0])
        else:
            assert a[name][0] == b[name][0], name
            assert hash(a[name][0]) == hash(b[name][0]), name
    c = jp.prune_units(
        make_mlp().model, make_mlp().variables, {"Dense_0": np.arange(8) < 3}, make_mlp().x
    ).model
    d = jp.prune_units(
        make_mlp().model, make_mlp().variables, {"Dense_0": np.arange(8) < 4}, make_mlp().x
    ).model
    assert c != d
    traces = []

    def f(model, variables, x):
        traces.append(1)
        return model.apply(variables, x)

    g = jax.jit(f, static_argnums=0)
    (m1, v1, x), (m2, v2, _) = a["linen"], b["linen"]
    np.testing.assert_array_equal(g(m1, v1, x), g(m2, v2, x))
    assert len(traces) == 1


def test_plan_cache_is_bounded():
    from jaxprune.graph._rewritten import PLAN_CACHE_SIZE

    case = make_mlp()
    narrow, nv, _, _ = _prune(case)
    x = jnp.tile(case.x, (4, 1))
    for n in range(1, 2 * PLAN_CACHE_SIZE + 3):
        out = narrow.apply(nv, x[:n])
        assert out.shape == (n, 3)
    assert len(narrow.spec.cache) == PLAN_CACHE_SIZE


def test_rewritten_models_expose_the_original_signature():
    case = make_resnet_v1("B")
    narrow, nv, _, _ = _prune(case)
    want = inspect.signature(case.model.__call__)
    assert inspect.signature(narrow.__call__) == want
    assert list(want.parameters) == ["x", "train"]
    small = jp.collapse(case.model, case.variables, case.x, model_kwargs={"train": False}).model
    assert inspect.signature(small.__call__) == want
    models = _rewrites()
    assert inspect.signature(models["function"][0]) == inspect.signature(mlp)
    assert inspect.signature(models["nnx"][0].__call__) == inspect.signature(
        NNXNet(nnx.Rngs(0)).__call__
    )
    assert inspect.signature(models["equinox"][0].__call__) == inspect.signature(
        EqxNet(jax.random.key(0)).__call__
    )
