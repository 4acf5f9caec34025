import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from jaxprune.training import train_rounds

MODEL = jp.models.BlockMLP(hidden=(6, 5), out=4)
(X, Y), _ = jp.data.signal_task(jax.random.key(0), n_train=24, n_test=1, dim=9, bits=2)
KEYS = jax.random.split(jax.random.key(5), 2)
FROZEN = optax.sgd(0.0)  # params move only through the reinitialization rounds


def _init(key, r=0):
    """The documented draws: round r's eta (round 0's is the initialization)."""
    _, k_rounds = jax.random.split(key)
    k_eta = jax.random.split(jax.random.fold_in(k_rounds, r), 3)[0]
    return MODEL.init(k_eta, X[:1])


def test_bl_equals_full_batch_gradient_descent_by_hand():
    tx = optax.sgd(0.05)
    res = train_rounds(
        MODEL,
        (X, Y),
        keys=KEYS[0],
        method="bl",
        optimizer=tx,
        steps_per_round=4,
        rounds=3,
        loss="cross_entropy",
    )
    params = _init(KEYS[0])["params"]
    step = jp.training.make_train_step(MODEL, "cross_entropy", tx)
    state = tx.init(params)
    for _ in range(12):
        params, state, _ = step(params, state, (X, Y))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
        res.variables["params"],
        params,
    )
    assert res.history["loss"].shape == (1,) and int(res.history["steps"][0]) == 12
    np.testing.assert_allclose(
        res.loss, jp.training.evaluate(MODEL, params, (X, Y), "cross_entropy"), rtol=1e-5
    )


@pytest.mark.parametrize("method", ["welsr", "wels", "dsd", "fc"])
def test_mask_methods_redraw_the_right_entries(method):
    res = train_rounds(
        MODEL,
        (X, Y),
        keys=KEYS,
        method=method,
        optimizer=FROZEN,
        steps_per_round=40,
        rounds=3,
        fraction=0.2,
        validation=(X, Y),
        eval_every=3,
        patience=2,
        loss="cross_entropy",
    )
    assert res.history["loss"].shape == (2, 3)
    # no progress at all: the first evaluation is the best, then `patience` more are run
    np.testing.assert_array_equal(res.history["steps"], 3 * (1 + 2))
    val = res.history["val_loss"]
    assert val.shape == (2, 3) and bool(jnp.isfinite(val).all())
    for s in range(2):
        before = _init(KEYS[s])["params"]
        after = jax.tree.map(lambda a, s=s: a[s], res.variables["params"])
        changed = {n: np.asarray(after[n]["kernel"] != before[n]["kernel"]) for n in before}
        if method == "fc":
            assert changed["out"].all() and not changed["relu_0"].any()
            assert not changed["relu_1"].any()
        elif method == "dsd":
            # two rounds of smallest-20% redraws: only small entries of the initial kernel moved
            for n, c in changed.items():
                w = np.abs(np.asarray(before[n]["kernel"]))
                k = int(np.floor(0.2 * w.size + 0.5))
                assert 0 < c.sum() <= 2 * k
        else:
            for c in changed.values():
                k = int(np.floor(0.2 * c.size + 0.5))
                # WELS redraws one fixed subset twice; WELSR two fresh subsets (union of two)
                if method == "wels":
                    assert c.sum() == k
                else:
                    assert k <= c.sum() <= 2 * k


def test_lw_with_frozen_training_follows_algorithm_1():
    res = train_rounds(
        MODEL,
        (X, Y),
        keys=KEYS,
        method="lw",
        optimizer=FROZEN,
        steps_per_round=1,
        schedule=(1, 1, 2),
        sample_size=16,
        loss="cross_entropy",
    )
    v0 = _init(KEYS[1])
    v = jax.tree.map(lambda a: a[1], res.variables)
    p0, p = v0["params"], v["params"]
    np.testing.assert_allclose(p["relu_0"]["kernel"], p0["relu_0"]["kernel"], rtol=1e-6)
    # round 0 trains the initialization; round 1 (k=1) redraws blocks 2-3; round 2 (k=2) block 3
    # ... and round 2 (k=2) scaled block 2 back to the norm recorded at initialization
    eta1 = _init(KEYS[1], 1)["params"]["relu_1"]
    norms = jp.analysis.layer_norms
    scale = norms(p0)["relu_1"] / norms({"relu_1": eta1})["relu_1"]
    np.testing.assert_allclose(p["relu_1"]["kernel"], scale * eta1["kernel"], rtol=1e-5)
    np.testing.assert_array_equal(p["out"]["kernel"], _init(KEYS[1], 2)["params"]["out"]["kernel"])
    # slot 1 set in round 1 with the initial block 1; slot 2 in round 2 from the final params
    h1 = jax.nn.relu(X[:16] @ p0["relu_0"]["kernel"] + p0["relu_0"]["bias"])
    np.testing.assert_allclose(v["lw_norm"]["block_1"]["mean"], h1.mean(), rtol=1e-5)
    z1 = (h1 - h1.mean()) / h1.std()
    h2 = jax.nn.relu(z1 @ p["relu_1"]["kernel"] + p["relu_1"]["bias"])
    np.testing.assert_allclose(v["lw_norm"]["block_2"]["std"], h2.std(), rtol=1e-4)
    assert float(v["lw_norm"]["block_3"]["std"]) == 1.0


@pytest.mark.parametrize("method", ["welsr", "dsd"])
def test_rounds_with_an_all_zero_mask_are_noops_and_equal_bl(method):
    # fraction 0: every round's mask is all False, so neither the params nor the momentum are
    # touched and 3 rounds of 3 steps are exactly BL's 9 uninterrupted steps.
    tx = optax.sgd(0.05, momentum=0.9)
    kw = dict(optimizer=tx, steps_per_round=3, rounds=3)
    res = train_rounds(
        MODEL, (X, Y), keys=KEYS, method=method, fraction=0.0, **kw, loss="cross_entropy"
    )
    bl = train_rounds(MODEL, (X, Y), keys=KEYS, method="bl", **kw, loss="cross_entropy")
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        res.variables["params"],
        bl.variables["params"],
    )
    np.testing.assert_allclose(res.loss, bl.loss, rtol=1e-6)


def test_bad_arguments_raise():
    kw = {"optimizer": FROZEN, "steps_per_round": 1}
    with pytest.raises(ValueError, match="method: expected one of"):
        train_rounds(
            MODEL,
            (X, Y),
            keys=KEYS,
            method="knowledge_evolution",
            rounds=2,
            **kw,
            loss="cross_entropy",
        )
    with pytest.raises(ValueError, match="fraction"):
        train_rounds(
            MODEL,
            (X, Y),
            keys=KEYS,
            method="welsr",
            rounds=2,
            fraction=1.2,
            **kw,
            loss="cross_entropy",
        )
    with pytest.raises(ValueError, match=r"fraction: expected a value in \[0, 1\], got -0.1"):
        train_rounds(
            MODEL,
            (X, Y),
            keys=KEYS,
            method="dsd",
            rounds=2,
            fraction=-0.1,
            **kw,
            loss="cross_entropy",
        )
    with pytest.raises(ValueError, match="k: expected 1 <= k <= 3"):
        train_rounds(
            MODEL, (X, Y), keys=KEYS, method="lw", schedule=(1, 4), **kw, loss="cross_entropy"
        )
    with pytest.raises(ValueError, match="multiple of the 3 blocks"):
        train_rounds(MODEL, (X, Y), keys=KEYS, method="lw", rounds=4, **kw, loss="cross_entropy")
    with pytest.raises(ValueError, match="'conv_9' is not a layer"):
        train_rounds(
            MODEL,
            (X, Y),
            keys=KEYS,
            method="lw",
            rounds=1,
            blocks=(("conv_9",),),
            **kw,
            loss="cross_entropy",
        )
    with pytest.raises(ValueError, match=r"layers: \['dense'\] not in params"):
        train_rounds(
            MODEL,
            (X, Y),
            keys=KEYS,
            method="fc",
            rounds=2,
            fc_layers=("dense",),
            **kw,
            loss="cross_entropy",
        )
    with pytest.raises(ValueError, match="rounds: must be >= 1"):
        train_rounds(MODEL, (X, Y), keys=KEYS, method="dsd", **kw, loss="cross_entropy")


@pytest.mark.parametrize(
    "form, biases", [("sum", False), ("half_sum", False), ("mean", False), ("sum", True)]
)
def test_l2_conventions_equal_gradient_descent_on_the_penalty_written_by_hand(form, biases):
    lam, lr = 0.3, 0.05

    def penalty(p):  # written out per convention, independently of l2_penalty
        leaves = [w for w in jax.tree.leaves(p) if biases or w.ndim == 2]
        if form == "mean":
            return lam * sum(jnp.sum(w**2) / w.size for w in leaves)
        return lam * sum(jnp.sum(w**2) for w in leaves) * (0.5 if form == "half_sum" else 1.0)

    def loss(p):
        logits = MODEL.apply({"params": p}, X)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()
        return ce + penalty(p)

    res = train_rounds(
        MODEL,
        (X, Y),
        keys=KEYS[0],
        method="bl",
        optimizer=optax.sgd(lr),
        steps_per_round=3,
        rounds=1,
        loss="cross_entropy",
        l2=lam,
        l2_form=form,
        l2_biases=biases,
    )
    params = _init(KEYS[0])["params"]
    for _ in range(3):
        params = jax.tree.map(lambda w, g: w - lr * g, params, jax.grad(loss)(params))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
        res.variables["params"],
        params,
    )
    p = {"k": jnp.ones((2, 3)), "b": jnp.full((3,), 2.0)}
    expected = {("sum", False): 6.0, ("half_sum", False): 3.0, ("mean", False): 1.0}
    expected[("sum", True)] = 18.0
    assert float(jp.training.l2_penalty(p, form=form, biases=biases)) == expected[(form, biases)]
    with pytest.raises(ValueError, match="l2_form: expected one of"):
        train_rounds(
            MODEL,
            (X, Y),
            keys=KEYS,
            method="bl",
            optimizer=FROZEN,
            steps_per_round=1,
            rounds=1,
            loss="cross_entropy",
            l2=0.1,
            l2_form="l1",
        )
