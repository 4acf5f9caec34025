"""The training results share their field names for the same things: FitResult, RoundsResult
and ReinitResult all carry variables, params, state, history, loss and seconds, with the same
meaning (params is variables["params"], state the other collections, loss the final one)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprune as jp

SHARED = ("variables", "params", "state", "history", "loss", "seconds")
X = jax.random.normal(jax.random.key(0), (32, 3))
Y = jax.nn.one_hot(jnp.arange(32) % 2, 2)


def test_the_three_results_list_the_shared_fields():
    for cls in (jp.training.FitResult, jp.training.RoundsResult, jp.training.ReinitResult):
        assert set(SHARED) <= set(cls._fields), cls.__name__


def _check_shared(res, model, n_seeds):
    assert jax.tree.structure(res.params) == jax.tree.structure(res.variables["params"])
    jax.tree.map(np.testing.assert_array_equal, res.params, res.variables["params"])
    assert sorted(res.state) == sorted(k for k in res.variables if k != "params")
    assert res.loss.shape == (n_seeds,) and isinstance(res.seconds, float)
    # loss is the training loss of the returned variables, whatever the loop
    for s in range(n_seeds):
        v = jax.tree.map(lambda a, s=s: a[s], res.variables)
        want = jp.training.evaluate(model, v["params"], (X, Y), "cross_entropy")
        if res.state:  # LW slots: evaluate with them
            logits = model.apply(v, X)
            want = optax.softmax_cross_entropy(logits, Y).mean()
        np.testing.assert_allclose(res.loss[s], want, rtol=1e-5, atol=1e-6)


def test_fit_rounds_and_reinit_fill_the_shared_fields_alike():
    keys = jax.random.split(jax.random.key(1), 2)
    mlp = jp.models.MLP(hidden=(4,), out=2)
    fit = jp.training.fit(
        mlp,
        (X, Y),
        keys=keys,
        loss="cross_entropy",
        optimizer=optax.sgd(0.1),
        batch_size=32,
        max_epochs=3,
        restore_best=False,
        progress=False,
    )
    block = jp.models.BlockMLP(hidden=(4,), out=2)
    rounds = jp.training.train_rounds(
        block,
        (X, Y),
        keys=keys,
        method="lw",
        loss="cross_entropy",
        optimizer=optax.sgd(0.1),
        steps_per_round=2,
        rounds=2,
    )
    reinit = jp.training.train_with_reinit(
        mlp,
        (X, Y),
        keys=keys,
        loss="cross_entropy",
        optimizer=optax.sgd(0.1),
        reinits=1,
        batch_size=32,
        patience=1,
        sub_patience=1,
        max_epochs=2,
    )
    _check_shared(rounds, rounds.model, 2)
    _check_shared(reinit, mlp, 2)
    jax.tree.map(np.testing.assert_array_equal, fit.params, fit.variables["params"])
    assert fit.state == {} and rounds.state.keys() == {"lw_norm"} and reinit.state == {}
    # history: per-epoch / per-round series with the seed axis first
    assert fit.history["loss"].shape[0] == 2
    np.testing.assert_array_equal(rounds.loss, rounds.history["loss"][:, -1])
    assert rounds.history["steps"].shape == (2, 2)
    assert set(reinit.history) == {"baseline", "sub_loss", "reverted", "reinitialized"}
    assert all(h.shape == (2, 1) for h in reinit.history.values())
