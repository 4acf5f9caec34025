import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from jaxprune.models import MLP

X, Y = jp.data.paint("square", size=12)  # 144 rows: 2 batches of 128, the last one partial
MODEL = MLP(hidden=(3,), linear_after=((9,),))
TX = optax.adam(1e-2)


def _fit(keys, **kw):
    kw = {"loss": "mse", "optimizer": TX, "patience": 3, "max_epochs": 40, "progress": False, **kw}
    return jp.training.fit(MODEL, (X, Y), keys=keys, **kw)


def test_batched_run_equals_single_run(monkeypatch):
    fit_module = importlib.import_module("jaxprune.training._fit")
    widths, compact = [], fit_module._compact
    monkeypatch.setattr(
        fit_module,
        "_compact",
        lambda f, s, d, take, *a: widths.append(len(take)) or compact(f, s, d, take, *a),
    )
    keys = jax.random.split(jax.random.key(3), 5)
    many = _fit(keys, min_delta=2e-3, max_epochs=200)
    assert len(set(many.epochs.tolist())) > 1, "runs should stop at different epochs"
    assert 0 < widths[0] < 5, f"the batch should shrink before the last run ends: {widths}"
    for k in (0, 3):
        one = _fit(keys[k], min_delta=2e-3, max_epochs=200)
        assert int(one.epochs) == int(many.epochs[k])
        assert int(one.best_epoch) == int(many.best_epoch[k])
        np.testing.assert_allclose(one.loss, many.loss[k], rtol=1e-6)
        jax.tree.map(
            lambda a, b, k=k: np.testing.assert_allclose(a, b[k], rtol=1e-5, atol=1e-7),
            one.params,
            many.params,
        )


def test_fit_matches_hand_written_loop():
    """One epoch of fit == the same minibatches through make_train_step, Keras partial batch."""
    key = jax.random.key(11)
    res = _fit(key, max_epochs=1, patience=5)
    k_init, k_run = jax.random.split(key)
    params = MODEL.init(k_init, X[:1])["params"]
    _, k_perm = jax.random.split(k_run)
    perm = np.asarray(jp.training.feistel_permutation(len(X), key=k_perm))
    step = jp.training.make_train_step(MODEL, "mse", TX)
    opt_state = TX.init(params)
    losses = []
    for b in (perm[:128], perm[128:]):
        params, opt_state, m = step(params, opt_state, (X[b], Y[b]))
        losses.append(float(m["loss"]) * len(b))
    np.testing.assert_allclose(res.loss, sum(losses) / len(X), rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), res.params, params
    )


def test_early_stopping_restores_best_and_respects_patience():
    res = _fit(jax.random.split(jax.random.key(0), 4), patience=2, optimizer=optax.sgd(5.0))
    # A huge SGD step diverges: training stops `patience` epochs after the best one.
    stopped = np.asarray(res.stopped_early)
    assert stopped.any()
    np.testing.assert_array_equal(res.epochs[stopped], res.best_epoch[stopped] + 1 + 2)
    # Restored params reproduce the best loss's order of magnitude (it is the epoch mean).
    for k in np.flatnonzero(stopped):
        p = jax.tree.map(lambda a, k=k: a[k], res.params)
        assert np.isfinite(jp.training.evaluate(MODEL, p, (X, Y), "mse"))


def test_max_epochs_caps_every_run():
    res = _fit(jax.random.split(jax.random.key(1), 3), patience=10**6, max_epochs=7, chunk_epochs=3)
    assert res.epochs.tolist() == [7, 7, 7]
    assert not res.stopped_early.any()


def test_fit_learns_the_square():
    res = jp.training.fit(
        MLP(hidden=(12,)),
        (X, Y),
        keys=jax.random.key(0),
        loss="mse",
        optimizer=TX,
        patience=20,
        max_epochs=400,
        progress=False,
    )
    assert float(jp.training.evaluate(MLP(hidden=(12,)), res.params, (X, Y), "mse")) < 0.05


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="data: x and y"):
        jp.training.fit(MODEL, (X, Y[:-1]), keys=jax.random.key(0), loss="mse", optimizer=TX)
    with pytest.raises(ValueError, match="batch_size: must be >= 1"):
        _fit(jax.random.key(0), batch_size=0)
    with pytest.raises(ValueError, match="keys: expected"):
        _fit(jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="loss: unknown loss 'l3'"):
        _fit(jax.random.key(0), loss="l3")


def test_feistel_permutation_is_a_permutation():
    for n in (1, 2, 5, 128, 1000, 4096):
        p = np.asarray(jp.training.feistel_permutation(n, key=jax.random.key(n)))
        np.testing.assert_array_equal(np.sort(p), np.arange(n))
    a = jp.training.feistel_permutation(1000, key=jax.random.key(0))
    b = jp.training.feistel_permutation(1000, key=jax.random.key(1))
    assert (np.asarray(a) != np.asarray(b)).mean() > 0.9


def test_feistel_permutation_positions_are_spread():
    """Where element 0 lands over 2000 keys: roughly uniform over 16 bins (chi-square)."""
    keys = jax.random.split(jax.random.key(0), 2000)
    perms = jax.vmap(lambda k: jp.training.feistel_permutation(256, key=k))(keys)
    pos = np.argmax(np.asarray(perms) == 0, axis=1)
    counts = np.bincount(pos // 16, minlength=16)
    chi2 = ((counts - 125) ** 2 / 125).sum()
    assert chi2 < 40, counts  # 15 dof: p < 1e-3 above ~37.7


def test_early_stopping_update_matches_keras_rule():
    s = jp.training.early_stopping_init(jnp.zeros(()))
    for e, loss in enumerate([5.0, 4.0, 4.0, 3.5, 4.5, 4.5]):
        s = jp.training.early_stopping_update(s, loss, jnp.float32(e), e, patience=2)
    assert (float(s.best_loss), int(s.best_epoch), int(s.wait), bool(s.done)) == (3.5, 3, 2, True)
    assert float(s.best_params) == 3.0


def test_runs_not_dividing_over_devices_are_padded_and_sharded(monkeypatch):
    """10 runs on 8 devices train as 16 sharded rows; the 6 padding rows are dropped."""
    fit_module = importlib.import_module("jaxprune.training._fit")
    seen, compact = [], fit_module._compact

    def spy(final, state, dest, take, *a):
        seen.append((len(dest), jax.tree.leaves(state)[0].sharding))
        return compact(final, state, dest, take, *a)

    monkeypatch.setattr(fit_module, "_compact", spy)
    keys = jax.random.split(jax.random.key(5), 10)
    many = _fit(keys, max_epochs=6)
    assert seen[0][0] == 16 and len(seen[0][1].device_set) == 8
    assert many.epochs.shape == (10,) and many.history["loss"].shape[0] == 10
    assert jax.tree.leaves(many.params)[0].shape[0] == 10
    one = _fit(keys[9], max_epochs=6)
    assert int(one.epochs) == int(many.epochs[9])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b[9], rtol=1e-5, atol=1e-7),
        one.params,
        many.params,
    )


def test_next_width_shrinks_once_idle_rows_took_half_the_work():
    next_width = importlib.import_module("jaxprune.training._fit")._next_width
    assert jax.device_count() == 8  # tests/conftest.py
    assert next_width(0, 16, 0, 0) == 0  # all finished
    assert next_width(5, 16, 7, 16) == 16  # idle 7 of 16 row-epochs: keep the width
    assert next_width(5, 16, 8, 16) == 5  # half: shrink; fewer than 8 runs stay on one device
    assert next_width(9, 32, 16, 32) == 16  # a multiple of the 8 devices (seed sharding)
    assert next_width(15, 16, 100, 100) == 16  # rounding up gives no smaller batch


def test_later_chunks_and_repeat_fits_compile_nothing_new():
    fit_module = importlib.import_module("jaxprune.training._fit")

    fit_module._PROGRAMS.clear()
    kw = dict(patience=10**6, max_epochs=6, chunk_epochs=2)  # 3 chunks, no early stop
    _fit(jax.random.split(jax.random.key(0), 3), **kw)
    ((_, (_, chunk_fn, _)),) = fit_module._PROGRAMS.entries.values()
    assert chunk_fn._cache_size() == 1  # three chunk calls, one compilation
    _fit(jax.random.split(jax.random.key(1), 3), **kw)
    assert fit_module._PROGRAMS.hits >= 1  # the same program object was reused
    assert chunk_fn._cache_size() == 1
    # early-stopping settings are values of the program, not part of it
    other = _fit(
        jax.random.split(jax.random.key(1), 3),
        patience=3,
        max_epochs=9,
        min_delta=1e-3,
        chunk_epochs=2,
    )
    assert len(fit_module._PROGRAMS.entries) == 1 and chunk_fn._cache_size() == 1
    assert int(np.max(other.epochs)) <= 9


def test_restore_best_false_returns_last_params():
    keys = jax.random.split(jax.random.key(0), 2)
    kw = dict(patience=2, optimizer=optax.sgd(5.0))
    best, last = _fit(keys, **kw), _fit(keys, restore_best=False, **kw)
    one_step_more = _fit(keys, restore_best=False, max_epochs=int(last.epochs[0]), **kw)
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(a[0], b[0]), last.params, one_step_more.params
    )
    diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), best.params, last.params)
    assert max(jax.tree.leaves(diff)) > 0  # the diverged last epoch is not the best one


def test_same_seed_gives_bit_identical_results():
    keys = jax.random.split(jax.random.key(9), 3)
    a, b = _fit(keys), _fit(keys)
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.epochs, b.epochs)


def test_fits_called_from_threads_equal_fits_in_turn():
    # fits side by side in threads (as the experiments run independent models) share the
    # program caches; each gives what it gives alone, bit for bit
    import concurrent.futures

    cases = [
        (MLP(hidden=(w,)), jax.random.split(jax.random.key(w), 2), optax.adam(1e-2))
        for w in (2, 3, 5, 7)
    ]
    run = lambda case: jp.training.fit(
        case[0],
        (X, Y),
        keys=case[1],
        loss="mse",
        optimizer=case[2],
        max_epochs=30,
        patience=3,
        progress=False,
    )
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        side_by_side = list(pool.map(run, cases))
    for case, got in zip(cases, side_by_side, strict=True):
        alone = run(case)
        jax.tree.map(np.testing.assert_array_equal, got.params, alone.params)
        np.testing.assert_array_equal(got.epochs, alone.epochs)


def test_fit_continues_from_given_params_and_opt_state():
    keys = jax.random.split(jax.random.key(4), 2)
    kw = dict(patience=10**6, restore_best=False, chunk_epochs=3, max_epochs=3)
    first = _fit(keys, **kw)
    second = _fit(keys, params=first.params, opt_state=first.opt_state, **kw)
    fresh = _fit(keys, params=first.params, **kw)
    count = lambda r: np.asarray(jax.tree.leaves(r.opt_state)[0])  # Adam's step count
    np.testing.assert_array_equal(count(second), [12, 12])  # 2 steps/epoch x 6 epochs: carried
    np.testing.assert_array_equal(count(fresh), [6, 6])  # optimizer.init(params) by default
    diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), second.params, fresh.params)
    assert max(jax.tree.leaves(diff)) > 0  # the carried Adam moments change the trajectory
    with pytest.raises(ValueError, match="opt_state: given without params"):
        _fit(keys, opt_state=first.opt_state)
    with pytest.raises(ValueError, match="opt_state: expected a leading seed axis of 2"):
        _fit(keys, params=first.params, opt_state=jax.tree.map(lambda a: a[:1], first.opt_state))
