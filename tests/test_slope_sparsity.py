import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxprune.analysis import inactive_fraction
from jaxprune.transforms import SlopeSparsityState, slope_sparsity


def make_params(dtype=jnp.float32):
    return {
        "dense_0": {"kernel": jnp.ones((2, 3), dtype)},
        "prelu_0": {"slope": jnp.array([0.0, 0.995, 0.5], dtype)},
        "prelu_1": {"slope": jnp.array([0.992, 0.2], dtype)},
    }


def run(tx, params, grads, steps):
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        step.traces += 1  # runs at trace time only: one trace per compilation
        u, s = tx.update(grads, s, p)
        return optax.apply_updates(p, u), s

    step.traces = 0

    for _ in range(steps):
        params, state = step(params, state)
    return params, state, step


def test_penalty_subgradient_and_freezing_hand_computed():
    params = make_params()
    grads = jax.tree.map(lambda a: jnp.full_like(a, 0.5), params)
    tx = slope_sparsity(optax.sgd(0.1), strength=2.0)
    p1, state, _ = run(tx, params, grads, 1)
    # active slopes: alpha - 0.1 * (0.5 - 2 * sign(1 - alpha)) = alpha + 0.15; frozen -> exactly 1
    np.testing.assert_allclose(p1["prelu_0"]["slope"], [0.15, 1.0, 0.65], rtol=1e-6)
    np.testing.assert_allclose(p1["prelu_1"]["slope"], [1.0, 0.35], rtol=1e-6)
    assert p1["prelu_0"]["slope"][1] == 1.0 and p1["prelu_1"]["slope"][0] == 1.0
    np.testing.assert_allclose(p1["dense_0"]["kernel"], 1 - 0.05)  # untouched by the penalty
    assert state.inactive["prelu_0"].tolist() == [False, True, False]
    assert state.inactive["prelu_1"].tolist() == [True, False]
    assert float(inactive_fraction(state)) == pytest.approx(2 / 5)


def test_frozen_slopes_stay_exactly_one_under_adam_momentum():
    params = make_params()
    grads = jax.tree.map(lambda a: jnp.full_like(a, -3.0), params)  # pushes slopes up past 1
    tx = slope_sparsity(optax.adam(0.05), strength=0.1)
    p, state, _ = run(tx, params, grads, 30)
    frozen = np.concatenate([np.asarray(state.inactive[k]) for k in ("prelu_0", "prelu_1")])
    slopes = np.concatenate([np.asarray(p[k]["slope"]) for k in ("prelu_0", "prelu_1")])
    assert frozen.all()  # every slope crossed 0.99 and was frozen
    np.testing.assert_array_equal(slopes, 1.0)


def test_target_mode_never_overshoots_and_switches_off():
    params = {
        "prelu_0": {"slope": jnp.array([0.999, 0.995, 0.0, 0.9999])},
        "prelu_1": {"slope": jnp.array([0.993, 0.1, 0.2, 0.3])},
    }
    zero = jax.tree.map(jnp.zeros_like, params)
    tx = slope_sparsity(optax.sgd(0.01), strength=1.0, target=0.25)  # 2 of 8 units
    p, state, step = run(tx, params, zero, 1)
    # 4 candidates > 0.99; only the 2 largest slopes are frozen
    assert state.inactive["prelu_0"].tolist() == [True, False, False, True]
    assert state.inactive["prelu_1"].tolist() == [False, False, False, False]
    assert float(state.strength) == 0.0
    p2, state2 = step(p, state)
    assert int(sum(m.sum() for m in state2.inactive.values())) == 2
    np.testing.assert_array_equal(p2["prelu_1"]["slope"], p["prelu_1"]["slope"])  # no penalty


def test_target_mode_lowers_strength_near_target():
    params = {"prelu_0": {"slope": jnp.array([0.995] + [0.0] * 19)}}
    tx = slope_sparsity(optax.sgd(1.0), strength=1.0, target=0.1, slow_margin=0.05, slow_factor=0.1)
    _, state, _ = run(tx, params, jax.tree.map(jnp.zeros_like, params), 1)
    # 1/20 = 0.05 inactive, within 0.05 of the 0.1 target -> strength 0.1
    assert float(state.strength) == pytest.approx(0.1)
    far = slope_sparsity(optax.sgd(1.0), strength=1.0, target=0.5)
    _, state, _ = run(far, params, jax.tree.map(jnp.zeros_like, params), 1)
    assert float(state.strength) == 1.0


def test_initial_mask_freezes_with_zero_strength():
    params = make_params()
    mask = {"prelu_0": jnp.array([True, False, False])}
    tx = slope_sparsity(optax.sgd(0.1), strength=0.0, inactive=mask)
    p, state, _ = run(tx, params, jax.tree.map(jnp.ones_like, params), 2)
    assert p["prelu_0"]["slope"][0] == 1.0
    np.testing.assert_allclose(p["prelu_0"]["slope"][2], 0.5 - 0.2, rtol=1e-6)
    # strength 0: a slope above the threshold still freezes (it is linear)
    assert state.inactive["prelu_0"].tolist() == [True, True, False]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_invariants_jit_dtype_structure_chain_no_recompile(dtype):
    params = make_params(dtype)
    grads = jax.tree.map(lambda a: jnp.full_like(a, 0.3), params)
    tx = optax.chain(
        optax.clip_by_global_norm(1.0), slope_sparsity(optax.adam(0.01), strength=0.5, target=0.8)
    )
    state0 = tx.init(params)
    p, state, step = run(tx, params, grads, 3)
    assert jax.tree.structure(state) == jax.tree.structure(state0)
    assert all(
        a.dtype == b.dtype
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(state0), strict=True)
    )
    assert all(a.dtype == dtype for a in jax.tree.leaves(p))
    assert step.traces == 1  # three steps, one trace: no recompilation
    assert isinstance(state[1], SlopeSparsityState)


def test_bad_arguments():
    with pytest.raises(ValueError, match="strength"):
        slope_sparsity(optax.sgd(0.1), strength=-1.0)
    with pytest.raises(ValueError, match="target"):
        slope_sparsity(optax.sgd(0.1), strength=1.0, target=1.5)
    with pytest.raises(ValueError, match="threshold"):
        slope_sparsity(optax.sgd(0.1), strength=1.0, threshold=0.0)
    tx = slope_sparsity(optax.sgd(0.1), strength=1.0)
    with pytest.raises(ValueError, match="no leaf named 'slope'"):
        tx.init({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="needs the current params"):
        tx.update(make_params(), tx.init(make_params()))
    bad = slope_sparsity(optax.sgd(0.1), strength=1.0, inactive={"prelu_9": jnp.ones(3, bool)})
    with pytest.raises(ValueError, match="'prelu_9' is not a slope layer"):
        bad.init(make_params())
    bad = slope_sparsity(optax.sgd(0.1), strength=1.0, inactive={"prelu_0": jnp.ones(2, bool)})
    with pytest.raises(ValueError, match=r"inactive\['prelu_0'\]: expected shape"):
        bad.init(make_params())


def test_target_controller_reaches_the_target_where_a_fixed_slow_down_stalls():
    # 9 of 20 slopes freeze at once (0.45, within 0.05 of the 0.5 target: goal 10 units); the
    # loss gradient +0.5 on every slope outweighs the lowered penalty 1.0 * 0.1, so with a fixed
    # slow-down (slow_growth=1) the other 11 slopes only fall and the run stalls at 9.
    slopes = jnp.array([0.995] * 9 + [0.9] * 11)
    params = {"prelu_0": {"slope": slopes}}
    grads = {"prelu_0": {"slope": jnp.full(20, 0.5)}}

    def frozen(growth, steps):
        tx = slope_sparsity(optax.sgd(0.01), strength=1.0, target=0.5, slow_growth=growth)
        p, state, _ = run(tx, params, grads, steps)
        return int(state.inactive["prelu_0"].sum()), state, p

    assert frozen(1.0, 600)[0] == 9
    count, state, p = frozen(1.02, 600)
    assert count == 10  # the goal exactly (never more)
    assert float(state.strength) == 0.0
    # controller: lambda = 0.1 * 1.02**s after s steps without a freeze; it passes the gradient
    # 0.5 at s = ceil(ln 5 / ln 1.02) = 82, so after 3 steps the strength is 0.1 * 1.02**2
    _, state3, _ = frozen(1.02, 3)
    assert int(state3.stall) == 2
    assert float(state3.strength) == pytest.approx(0.1 * 1.02**2, rel=1e-5)
    assert int(np.ceil(np.log(5) / np.log(1.02))) == 82
    _, state81, _ = frozen(1.02, 83)
    assert float(state81.strength) == pytest.approx(0.1 * 1.02**82, rel=1e-4)
    assert float(state81.strength) > 0.5


def test_freeze_new_false_keeps_crossing_slopes_trainable():
    # the paper retrains a transferred mask with unregularized PReLUs: a slope that crosses 0.99
    # keeps training (here 0.995 + 0.1 * 0.5 = 1.045 after one SGD step on gradient -0.5)
    params = {"prelu_0": {"slope": jnp.array([1.0, 0.995, 0.5])}}
    grads = {"prelu_0": {"slope": jnp.full(3, -0.5)}}
    mask = {"prelu_0": jnp.array([True, False, False])}
    tx = slope_sparsity(optax.sgd(0.1), strength=0.0, inactive=mask, freeze_new=False)
    p, state, _ = run(tx, params, grads, 2)
    assert state.inactive["prelu_0"].tolist() == [True, False, False]
    np.testing.assert_allclose(p["prelu_0"]["slope"], [1.0, 0.995 + 0.1, 0.5 + 0.1], rtol=1e-6)
    with pytest.raises(ValueError, match="freeze_new=True"):
        slope_sparsity(optax.sgd(0.1), strength=1.0, target=0.5, freeze_new=False)
