"""Straight-through gates, effective params, score-only optimizers and Eq. 4's penalty."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from jaxprune.models import effective_params, gate, init_scores
from jaxprune.training import minimal_penalty
from jaxprune.transforms import add_minimal_penalty, train_scores


def _tiny(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    w = rng.normal(size=(3, 2)).astype(np.float32)
    t = rng.normal(size=(3, 2)).astype(np.float32)
    y = rng.normal(size=(5, 2)).astype(np.float32)
    return x, w, t, y


def test_gate_forward_values():
    t = jnp.array([-2.0, -1e-8, 0.0, 1e-8, 3.0])
    np.testing.assert_array_equal(gate(t, "mask"), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(gate(t, "flip"), [-1, -1, 1, 1, 1])
    assert gate(t.astype(jnp.bfloat16), "flip").dtype == jnp.bfloat16


@pytest.mark.parametrize("kind", ["mask", "flip"])
def test_ste_gradient_is_effective_gradient_times_weight(kind):
    # loss = 0.5 * ||x @ (w * g(t)) - y||^2 ; dL/dW_eff = x^T (x W_eff - y) in closed form.
    x, w, t, y = _tiny()
    g = (t > 0).astype(np.float32) if kind == "mask" else np.where(t >= 0, 1.0, -1.0)
    w_eff = w * g
    grad_eff = x.T @ (x @ w_eff - y)

    def loss(w, t):
        pred = x @ effective_params({"k": w}, {"k": t}, kind)["k"]
        return 0.5 * jnp.sum((pred - y) ** 2)

    gw, gt = jax.grad(loss, argnums=(0, 1))(jnp.asarray(w), jnp.asarray(t))
    np.testing.assert_allclose(gt, grad_eff * w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gw, grad_eff * g, rtol=1e-5, atol=1e-5)


def test_effective_params_bad_input():
    w = {"a": jnp.ones((2, 2)), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match="scores: expected the structure"):
        effective_params(w, {"a": jnp.ones((2, 2))}, "mask")
    with pytest.raises(ValueError, match=r"scores: shape \(2,\)"):
        effective_params(w, {"a": jnp.ones(2), "b": jnp.ones(3)}, "mask")
    with pytest.raises(ValueError, match="kind: expected one of"):
        effective_params(w, w, "prune")
    with pytest.raises(ValueError, match="scores: expected a float"):
        gate(jnp.ones(2, jnp.int32), "mask")


def test_init_scores_in_half_open_interval(key):
    weights = {"a": jnp.zeros((200, 50)), "b": {"c": jnp.zeros((7,), jnp.bfloat16)}}
    scores = init_scores(key, weights)
    a = np.asarray(scores["a"])
    assert a.min() > 0 and a.max() <= 0.1 and a.max() > 0.099  # uniform on (0, 0.1]
    assert abs(a.mean() - 0.05) < 0.002
    assert scores["b"]["c"].dtype == jnp.bfloat16
    assert all(bool(gate(t, "mask").all()) for t in jax.tree.leaves(scores))
    np.testing.assert_array_equal(a, init_scores(key, weights)["a"])  # deterministic
    with pytest.raises(ValueError, match="high"):
        init_scores(key, weights, high=0.0)


def test_minimal_penalty_value_and_gradient():
    t = {"a": jnp.array([0.3, -0.2, 0.0]), "b": jnp.array([[1.0, 2.0], [-1.0, 0.5]])}
    m = 7
    assert float(minimal_penalty(t, "mask")) == pytest.approx(-4 / m)  # 4 of 7 kept
    assert float(minimal_penalty(t, "flip")) == pytest.approx(-5 / m)  # 5 of 7 unflipped
    for kind, c in (("mask", -1 / m), ("flip", -1 / (2 * m))):
        grads = jax.grad(minimal_penalty)(t, kind)
        for leaf in jax.tree.leaves(grads):
            np.testing.assert_allclose(leaf, c, rtol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        minimal_penalty({}, "mask")


@pytest.mark.parametrize("kind", ["mask", "flip"])
def test_add_minimal_penalty_equals_gradient_of_eq4(kind):
    x, w, t, y = _tiny(1)
    params = {"l": {"weights": jnp.asarray(w), "scores": jnp.asarray(t)}}

    def task(p):
        pred = x @ effective_params(p["l"]["weights"], p["l"]["scores"], kind)
        return 0.5 * jnp.mean((pred - y) ** 2)

    def eq4(p):
        return task(p) + minimal_penalty({"s": p["l"]["scores"]}, kind)

    ref_tx = train_scores(optax.sgd(0.5))
    ref, _ = ref_tx.update(jax.grad(eq4)(params), ref_tx.init(params), params)
    tx = train_scores(optax.chain(add_minimal_penalty(kind), optax.sgd(0.5)))
    got, _ = tx.update(jax.grad(task)(params), tx.init(params), params)
    np.testing.assert_allclose(got["l"]["scores"], ref["l"]["scores"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got["l"]["weights"], 0.0)


def test_train_scores_transform_invariants():
    params = {
        "d": {"weights": jnp.ones((3, 2)), "scores": jnp.full((3, 2), 0.05, jnp.float32)},
        "h": {"weights": jnp.ones(4, jnp.bfloat16), "scores": jnp.full(4, 0.05, jnp.bfloat16)},
    }
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        train_scores(optax.chain(add_minimal_penalty("mask"), optax.adam(0.1))),
    )
    traces = []

    @jax.jit
    def step(p, s):
        traces.append(1)
        grads = jax.tree.map(jnp.ones_like, p)
        u, s = tx.update(grads, s, p)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    p1, s1 = step(params, state)
    p2, s2 = step(p1, s1)
    assert len(traces) == 1  # no recompilation on the second step
    assert jax.tree.structure(s2) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(s2), jax.tree.leaves(state), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
    for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(params), strict=True):
        assert a.dtype == b.dtype
    np.testing.assert_array_equal(p2["d"]["weights"], params["d"]["weights"])
    np.testing.assert_array_equal(p2["h"]["weights"], params["h"]["weights"])
    assert float(p2["d"]["scores"][0, 0]) < 0.05  # gradient +1 with Adam lowers scores


def _bits(tree):
    return [np.asarray(a).view(np.uint32) for a in jax.tree.leaves(tree)]


def test_weights_fixed_bit_for_bit_after_fit():
    kind = "mask"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = (x[:, :3].sum(1) > 0).astype(np.int32) + (x[:, 3] > 0)
    model = jp.models.MaskedMLP(hidden=(16,), out=3, kind=kind, weight_init="he_normal")
    keys = jax.random.split(jax.random.key(1), 2)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x[:1])["params"]
    params = jax.tree.map(  # 2 seeds, drawn with numpy: scores in (0, 0.1], He-like weights
        lambda s: jnp.asarray(
            rng.normal(size=(2, *s.shape)) * np.sqrt(2 / s.shape[0]), jnp.float32
        ),
        shapes,
    )
    params = {k: {**v, "scores": jnp.abs(v["scores"]) % 0.1 + 1e-3} for k, v in params.items()}
    tx = train_scores(optax.chain(add_minimal_penalty(kind), optax.adam(3e-2)))
    runs = jp.training.fit(
        model,
        (x, y),
        keys=keys,
        optimizer=tx,
        loss="cross_entropy",
        batch_size=16,
        patience=100,
        max_epochs=20,
        params=params,
        progress=False,
    )
    before = {k: v["weights"] for k, v in params.items()}
    after = {k: v["weights"] for k, v in runs.params.items()}
    for a, b in zip(_bits(after), _bits(before), strict=True):
        np.testing.assert_array_equal(a, b)
    moved = jax.tree.map(
        lambda a, b: a["scores"] - b["scores"],
        runs.params,
        params,
        is_leaf=lambda v: isinstance(v, dict) and "scores" in v,
    )
    assert max(float(jnp.abs(m).max()) for m in jax.tree.leaves(moved)) > 1e-2
    loss0 = jax.vmap(lambda p: jp.training.evaluate(model, p, (x, y), "cross_entropy"))(params)
    assert bool((runs.loss < loss0).all())
