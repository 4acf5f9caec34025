"""One invariant battery over every optax transform of jaxprune (STYLE practice 7).

Each transform: works with and without ``jax.jit``, keeps the state structure (and leaf shapes
and dtypes) across steps, composes in ``optax.chain``, traces once for two steps (state that
changes between steps, e.g. a new frozen mask, is data), and keeps the updates' dtypes.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized
from zoo import ZOO

import jaxprune as jp
from jaxprune.training import set_frozen_units
from jaxprune.transforms import add_minimal_penalty, freeze_units, slope_sparsity, train_scores


def _mlp():
    case = ZOO["mlp"]()
    graph = jp.trace(case.model, case.variables, case.x)
    return graph, case.variables["params"]


def _freeze():
    graph, params = _mlp()
    tx = optax.chain(optax.adam(1e-2), freeze_units(graph, {"Dense_0": jnp.arange(8) < 3}))
    # between steps, freeze other units (data, not a new program)
    change = lambda s: set_frozen_units(s, {"Dense_1": jnp.arange(6) > 2})  # noqa: E731
    return tx, params, change


def _slopes():
    params = {
        "prelu_0": {"kernel": jnp.ones((3, 4)) * 0.5, "slope": jnp.array([0.0, 0.995, 0.5, 0.2])},
        "out": {"kernel": jnp.ones((4, 1)), "bias": jnp.zeros(1)},
    }
    return slope_sparsity(optax.sgd(0.1), strength=0.5), params, None


def _scores_params():
    return {
        "dense_0": {"weights": jnp.ones((3, 4)), "scores": jnp.full((3, 4), 0.05, jnp.float32)},
        "dense_1": {"weights": jnp.ones((4, 2)), "scores": jnp.full((4, 2), -0.05, jnp.float32)},
    }


def _train_scores():
    return train_scores(optax.adam(1e-2)), _scores_params(), None


def _minimal_penalty():
    inner = optax.chain(add_minimal_penalty("mask"), optax.adam(1e-2))
    return train_scores(inner), _scores_params(), None


def _penalty_alone():
    return add_minimal_penalty("flip", 0.5), _scores_params(), None


TRANSFORMS = dict(
    freeze_units=_freeze,
    slope_sparsity=_slopes,
    train_scores=_train_scores,
    train_scores_minimal_penalty=_minimal_penalty,
    add_minimal_penalty=_penalty_alone,
)
CASES = [dict(testcase_name=k, make=v) for k, v in TRANSFORMS.items()]


def _grads(params, key, dtype=None):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    out = [
        jax.random.normal(k, a.shape, dtype or a.dtype) for k, a in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(tree, out)


def _signature(tree):
    return jax.tree.structure(tree), [
        (jnp.shape(a), jnp.result_type(a)) for a in jax.tree.leaves(tree)
    ]


class InvariantsTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*CASES)
    def test_state_is_stable_and_second_step_does_not_retrace(self, make):
        tx, params, change = make()
        traces = []

        def step(grads, state, params):
            traces.append(1)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        step = self.variant(step)
        state0 = tx.init(params)
        p1, state1 = step(_grads(params, jax.random.key(0)), state0, params)
        if change is not None:
            state1 = change(state1)
        p2, state2 = step(_grads(params, jax.random.key(1)), state1, p1)
        self.assertEqual(_signature(state0), _signature(state1))
        self.assertEqual(_signature(state1), _signature(state2))
        self.assertEqual(_signature(p2), _signature(params))
        jitted = self.variant.type == chex.ChexVariantType.WITH_JIT
        self.assertLen(traces, 1 if jitted else 2)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*CASES)
    def test_composes_in_chain(self, make):
        tx, params, _ = make()
        chained = optax.chain(tx, optax.identity(), optax.scale(1.0))
        grads = _grads(params, jax.random.key(2))
        u, _ = self.variant(tx.update)(grads, tx.init(params), params)
        v, _ = self.variant(chained.update)(grads, chained.init(params), params)
        chex.assert_trees_all_equal(u, v)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*CASES)
    def test_keeps_dtypes(self, make):
        tx, params, _ = make()
        for dtype in (jnp.float32, jnp.bfloat16):
            p = jax.tree.map(lambda a, dtype=dtype: a.astype(dtype), params)
            grads = _grads(p, jax.random.key(3))
            state = tx.init(p)
            u, state2 = self.variant(tx.update)(grads, state, p)
            self.assertEqual(
                [a.dtype for a in jax.tree.leaves(u)], [a.dtype for a in jax.tree.leaves(grads)]
            )
            self.assertEqual(_signature(state), _signature(state2))
            assert all(np.isfinite(np.asarray(a, np.float32)).all() for a in jax.tree.leaves(u))
