"""Common misuses of the graph and rewrites raise a specific error that names the argument at
fault and the way out (not an internal zip, flax scope or dot_general error)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from zoo import make_nnx_mlp, make_resnet_v1

import jaxprune as jp


def test_graph_apply_with_none_variables_names_them():
    case = make_nnx_mlp()
    graph = jp.trace(case.model, None, case.x)
    n = len(jax.tree.leaves(graph.model.variables))
    with pytest.raises(
        ValueError, match=rf"variables: expected the {n} arrays .*graph\.model\.variables"
    ):
        graph.apply(None, case.x)
    np.testing.assert_array_equal(graph.apply(graph.model.variables, case.x), case.model(case.x))


def test_graph_apply_with_missing_arguments_names_them():
    case = make_nnx_mlp()
    graph = jp.trace(case.model, None, case.x)
    with pytest.raises(ValueError, match=r"args: expected 1 argument array"):
        graph.apply(graph.model.variables)


def test_collapse_in_train_mode_says_evaluation_mode():
    case = make_resnet_v1()
    with pytest.raises(ValueError, match=r"model_kwargs: .*batch_stats.*'train': False"):
        jp.collapse(case.model, case.variables, case.x, model_kwargs={"train": True})


def test_linen_params_without_their_batch_stats_say_what_to_pass():
    case = make_resnet_v1()
    with pytest.raises(ValueError, match=r"variables: .*'batch_stats'.*model\.init"):
        jp.trace(case.model, case.variables["params"], case.x)


class DropNet(nnx.Module):
    def __init__(self, rngs):
        self.fc1 = nnx.Linear(5, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.fc2 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.fc2(self.drop(nnx.relu(self.bn(self.fc1(x)))))


def test_nnx_module_in_train_mode_says_call_eval():
    m = DropNet(nnx.Rngs(0))  # nnx modules start in training mode
    x = jax.random.normal(jax.random.key(1), (16, 5))
    keep = {"fc1": jnp.arange(8) % 2 == 0}
    with pytest.raises(ValueError, match=r"model: .*training mode.*'bn'.*'drop'.*model\.eval\(\)"):
        jp.prune_units(m, None, keep, x)
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        jp.trace(m, None, x)
    m.eval()  # the way out works: pruning then equals masking
    narrow = jp.prune_units(m, None, keep, x).model
    masked = jp.trace(m, None, x).apply(jp.trace(m, None, x).model.variables, x, masks=keep)
    np.testing.assert_allclose(narrow(x), masked, rtol=1e-5, atol=1e-6)


def test_per_example_equinox_module_given_a_batch_shows_vmap():
    mlp = eqx.nn.MLP(5, 3, 8, 2, key=jax.random.key(0))  # eqx.nn layers take one example
    x = jax.random.normal(jax.random.key(1), (16, 5))
    with pytest.raises(ValueError, match=r"x: .*one example.*\(16, 5\).*jax\.vmap"):
        jp.trace(mlp, None, x)
    graph = jp.trace(mlp, None, x[0])  # one example traces
    assert {k: u.width for k, u in graph.units.items()} == {"layers/0": 8, "layers/1": 8}
