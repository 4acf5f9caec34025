"""save_rewritten / load_rewritten: a rewritten model rebuilt in a new process from the original
model constructed again, the rewrite description and the variables, for models that do not
pickle (linen ``nn.Sequential`` with ``nn.relu``, ``nnx.Sequential``, ``eqx.nn.MLP``) and for
NNX modules and functions; a different original is an error naming the difference."""

import io
import pickle
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from rewritten_pickle_models import DropNet, NNXNet, mlp

import jaxprune as jp

HERE = Path(__file__).resolve().parent

# The originals, built the same way here and in the new process (other seeds there: the
# variables come from the file).
ORIGINALS = """
import flax.linen as nn, equinox as eqx, jax
from flax import nnx
from rewritten_pickle_models import NNXNet, mlp


def linen_seq():
    return nn.Sequential([nn.Dense(8), nn.Dense(6), nn.relu, nn.Dense(3)])


def nnx_net(seed):
    m = NNXNet(nnx.Rngs(seed))
    m.eval()
    return m


def nnx_seq(seed):
    r = nnx.Rngs(seed)
    m = nnx.Sequential(
        nnx.Linear(5, 8, rngs=r), nnx.relu, nnx.Dropout(0.5, rngs=r), nnx.Linear(8, 3, rngs=r)
    )
    m.eval()
    return m


def eqx_mlp(seed):
    return eqx.nn.MLP(5, 3, 8, 2, key=jax.random.key(seed))


def originals(seed):
    return {
        "linen_collapse": linen_seq(),
        "nnx_collapse": nnx_net(seed),
        "nnx_seq_prune": nnx_seq(seed),
        "equinox_prune": eqx_mlp(seed),
        "equinox_prelu": eqx_mlp(seed),
        "function_prune": mlp,
    }


def call(model, variables, x):
    if isinstance(model, nnx.Module):
        return model(x)
    if isinstance(model, eqx.Module):
        return jax.vmap(model)(x)
    if hasattr(model, "apply"):
        return model.apply(variables, x)
    return model(variables, x)
"""

_LOADER = """
import sys
sys.path[:0] = {paths!r}
import numpy as np, jax, jaxprune as jp
exec(open({originals!r}).read())
x = np.load({x!r})
outs = {{}}
for name, original in originals(seed=11).items():
    model, variables = jp.graph.load_rewritten({folder!r} + "/" + name + ".npz", original)
    outs[name] = np.asarray(call(model, variables, x))
np.savez({dst!r}, **outs)
"""


def _namespace(tmp_path):
    src = tmp_path / "originals.py"
    src.write_text(ORIGINALS)
    ns: dict = {}
    exec(compile(ORIGINALS, str(src), "exec"), ns)
    return ns, src


def _parts(result):
    return result.model, result.variables


def _rewrite(ns, x):
    orig = ns["originals"](0)
    out = {}
    seq = orig["linen_collapse"]
    v = seq.init(jax.random.key(1), x)
    out["linen_collapse"] = _parts(jp.collapse(seq, v, x))  # Dense 8 -> Dense 6 folds
    out["nnx_collapse"] = _parts(jp.collapse(orig["nnx_collapse"], None, x))  # BatchNorm folds
    keep = {"layers/0": np.arange(8) < 5}
    out["nnx_seq_prune"] = _parts(jp.prune_units(orig["nnx_seq_prune"], None, keep, x))
    out["equinox_prune"] = _parts(jp.prune_units(orig["equinox_prune"], None, keep, x[0]))
    out["equinox_prelu"] = _parts(
        jp.rewrites.swap_relu_for_prelu(orig["equinox_prelu"], None, x[0], slope=0.2)
    )
    params = {
        "w1": jax.random.normal(jax.random.key(1), (5, 7)),
        "b1": 0.1 * jnp.ones(7),
        "w2": jax.random.normal(jax.random.key(2), (7, 3)),
        "b2": jnp.zeros(3),
    }
    out["function_prune"] = _parts(jp.prune_units(mlp, params, {"w1": np.arange(7) < 4}, x))
    return out


def test_rewritten_models_save_and_load_in_a_new_process(tmp_path):
    ns, src = _namespace(tmp_path)
    x = np.asarray(jax.random.normal(jax.random.key(0), (6, 5)))
    np.save(tmp_path / "x.npy", x)
    rewrites = _rewrite(ns, x)
    for name in ("linen_collapse", "nnx_seq_prune", "equinox_prune"):  # they do not pickle
        with pytest.raises(Exception, match="[Pp]ickl"):
            pickle.dumps(rewrites[name])
    want = {}
    for name, (model, variables) in rewrites.items():
        jp.graph.save_rewritten(tmp_path / f"{name}.npz", model, variables)
        want[name] = np.asarray(ns["call"](model, variables, x))
    paths = [str(HERE), str(HERE.parent), str(HERE.parent.parent)]
    code = _LOADER.format(
        paths=paths,
        originals=str(src),
        x=str(tmp_path / "x.npy"),
        folder=str(tmp_path),
        dst=str(tmp_path / "outs.npz"),
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    outs = np.load(tmp_path / "outs.npz")
    assert sorted(outs.files) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(outs[name], want[name], err_msg=name)


def _roundtrip(model, variables, original):
    f = io.BytesIO()
    jp.graph.save_rewritten(f, model, variables)
    f.seek(0)
    return jp.graph.load_rewritten(f, original)


def test_loaded_model_has_the_same_description_init_and_variables():
    x = jax.random.normal(jax.random.key(0), (16, 5))
    net = DropNet()
    v = net.init(jax.random.key(0), x)
    for model, variables in (
        _parts(jp.prune_units(net, v, {"Dense_0": np.arange(8) % 2 == 0}, x)),
        _parts(jp.collapse(net, v, x)),
        _parts(jp.rewrites.swap_relu_for_prelu(net, v, x, slope=0.3)),
        _parts(jp.fuse(net, v, ("Dense_1", "Dense_2"), [x])),
    ):
        loaded, lv = _roundtrip(model, variables, DropNet())
        assert loaded.spec == model.spec  # runner, keep, initializer, shapes: all equal
        assert jax.tree.structure(lv) == jax.tree.structure(variables)
        for a, b in zip(jax.tree.leaves(lv), jax.tree.leaves(variables), strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        key = jax.random.key(4)
        for a, b in zip(
            jax.tree.leaves(loaded.init(key, x)), jax.tree.leaves(model.init(key, x)), strict=True
        ):
            np.testing.assert_array_equal(a, b)
        rngs = {"dropout": jax.random.key(2)}
        np.testing.assert_array_equal(
            loaded.apply(lv, x, train=True, rngs=rngs),
            model.apply(variables, x, train=True, rngs=rngs),
        )


def test_bfloat16_variables_and_nnx_rng_keys_round_trip():
    from jaxprune.graph._rewritten_io import _leaf_arrays, _leaf_values

    half = jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3) / 3
    f = io.BytesIO()
    np.savez(f, **_leaf_arrays([half])[0])
    f.seek(0)
    (back,) = _leaf_values(np.load(f, allow_pickle=False), _leaf_arrays([half])[1])
    assert back.dtype == jnp.bfloat16 and back.shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(back, np.float32), np.asarray(half, np.float32))
    ns: dict = {}
    exec(ORIGINALS, ns)
    seq = ns["nnx_seq"](0)
    result = jp.prune_units(seq, None, {"layers/0": np.arange(8) < 5}, jnp.ones((2, 5)))
    small, sv = result.model, result.variables
    loaded, lv = _roundtrip(small, sv, ns["nnx_seq"](3))
    key = lv["layers"][2]["rngs"]["key"]
    assert jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(
        jax.random.key_data(key), jax.random.key_data(sv["layers"][2]["rngs"]["key"])
    )


def test_a_different_original_is_an_error_naming_the_difference(tmp_path):
    ns, _ = _namespace(tmp_path)
    x = np.asarray(jax.random.normal(jax.random.key(0), (6, 5)))
    rewrites = _rewrite(ns, x)
    model, variables = rewrites["linen_collapse"]
    wider = nn.Sequential([nn.Dense(8), nn.Dense(16), nn.relu, nn.Dense(3)])
    with pytest.raises(
        ValueError, match=r"not the model that was rewritten \(at layers\[1\].features\)"
    ):
        _roundtrip(model, variables, wider)
    other = nn.Sequential([nn.Dense(8), nn.Dense(6), nn.tanh, nn.Dense(3)])
    with pytest.raises(ValueError, match=r"\(at layers\[2\]\): saved .*relu.* given .*tanh"):
        _roundtrip(model, variables, other)
    with pytest.raises(TypeError, match=r"original: expected a flax.linen Module .* got an eqx"):
        _roundtrip(model, variables, ns["eqx_mlp"](0))
    model, variables = rewrites["nnx_collapse"]
    with pytest.raises(
        ValueError, match=r"\(at bn.use_running_average\).*call model.eval\(\) first"
    ):
        _roundtrip(model, variables, NNXNet(nnx.Rngs(0)))  # left in training mode
    model, variables = rewrites["equinox_prune"]
    with pytest.raises(
        ValueError, match=r"\(at layers\[0\].out_features\): saved .*out_features=8"
    ):
        _roundtrip(model, variables, eqx.nn.MLP(5, 3, 4, 2, key=jax.random.key(0)))
    model, variables = rewrites["function_prune"]

    def mlp2(params, x):
        return x @ params["w1"] @ params["w2"]

    with pytest.raises(ValueError, match=r"not the model that was rewritten: saved …"):
        _roundtrip(model, variables, mlp2)


def test_save_rewritten_rejects_bad_arguments(tmp_path):
    x = jnp.ones((2, 5))
    net = DropNet()
    v = net.init(jax.random.key(0), x)
    with pytest.raises(TypeError, match=r"model: expected a rewritten model .* got DropNet"):
        jp.graph.save_rewritten(tmp_path / "a.npz", net, v)
    result = jp.prune_units(net, v, {"Dense_0": np.arange(8) < 4}, x)
    narrow = result.model
    with pytest.raises(ValueError, match=r"variables: a rewritten linen model's variables"):
        jp.graph.save_rewritten(tmp_path / "a.npz", narrow, None)
    with pytest.raises(
        ValueError, match=r"variables\['params/Dense_0/bias'\]: expected shape \(4,\)"
    ):
        jp.graph.save_rewritten(tmp_path / "a.npz", narrow, v)
    (tmp_path / "b.npz").write_bytes(b"not a file of jaxprune")
    with pytest.raises(ValueError, match=r"path: not a file written by save_rewritten"):
        jp.graph.load_rewritten(tmp_path / "b.npz", net)
