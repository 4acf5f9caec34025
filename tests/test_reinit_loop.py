import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from jaxprune.training import pruned_model, train_with_reinit

# One model, optimizer and data for every test: thresholds, patiences and R are data, so all
# calls below share one set of compiled programs.
MODEL = jp.models.MLP(hidden=(5,), linear_after=((3,),))
OPT = optax.adam(3e-2)
DATA = jp.data.paint("square", size=10)
KW = dict(loss="mse", optimizer=OPT, patience=4, sub_patience=2, max_epochs=15, batch_size=32)
KEYS = jax.random.split(jax.random.key(0), 3)


@pytest.fixture(scope="module")
def result():
    return train_with_reinit(MODEL, DATA, keys=KEYS, reinits=1, **KW)


def test_each_seed_is_independent_of_the_batch(result):
    perm = np.array([2, 0, 1])
    other = train_with_reinit(MODEL, DATA, keys=KEYS[perm], reinits=1, **KW)
    for a, b in zip(jax.tree.leaves(other[:-1]), jax.tree.leaves(result[:-1]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b)[perm], rtol=1e-5, atol=1e-7)


def test_revert_decision_is_per_seed_and_follows_the_rule(result):
    ratio = np.asarray(result.history["sub_loss"] / result.history["baseline"])[:, 0]
    assert np.array_equal(result.history["reverted"][:, 0], ratio > 1.25)
    # A threshold between the seeds' ratios: some seeds revert, the others keep their reinit.
    cut = float(np.sort(ratio)[1]) - 1e-6
    mixed = train_with_reinit(MODEL, DATA, keys=KEYS, reinits=1, revert_threshold=cut, **KW)
    np.testing.assert_allclose(mixed.history["sub_loss"], result.history["sub_loss"], rtol=1e-6)
    expected = ratio > cut
    assert expected.any() and not expected.all()
    assert np.array_equal(np.asarray(mixed.history["reverted"][:, 0]), expected)


def test_pruned_units_are_zero_and_the_narrow_model_paints_the_same(result):
    keep = np.asarray(result.keep["relu_0"])
    assert keep.any(axis=1).all()  # a layer always keeps at least one unit
    p = result.params
    dead = ~keep
    k = np.asarray(p["relu_0"]["kernel"])  # (seeds, 2, 5)
    assert np.all(np.where(dead[:, None, :], k, 0) == 0)
    assert np.all(np.where(dead, np.asarray(p["relu_0"]["bias"]), 0) == 0)
    out_rows = np.asarray(p["linear_0_0"]["kernel"])  # (seeds, 5, 3)
    assert np.all(np.where(dead[:, :, None], out_rows, 0) == 0)
    x = DATA[0]
    for s in range(3):
        pruned = pruned_model(MODEL, result, s, x)
        narrow, v = pruned.model, pruned.variables
        assert v["params"]["relu_0"]["kernel"].shape == (2, int(keep[s].sum()))
        full = jax.tree.map(lambda a, s=s: a[s], p)
        np.testing.assert_allclose(narrow.apply(v, x), MODEL.apply({"params": full}, x), atol=1e-6)
        loss = jp.training.evaluate(MODEL, full, DATA, "mse")
        np.testing.assert_allclose(result.loss[s], loss, rtol=1e-5)


def test_shapes_of_the_round_records(result):
    h = result.history
    assert h["reverted"].shape == h["baseline"].shape == (3, 1)
    assert h["reinitialized"].shape == (3, 1)
    assert np.all((h["reinitialized"] >= 0) & (h["reinitialized"] <= 5))
    # Four phases, each at least patience + 1 epochs (the first epoch always improves).
    assert np.all(result.epochs >= 5 + 3 + 5 + 5)
    zero = train_with_reinit(MODEL, DATA, keys=KEYS, reinits=0, **KW)
    assert zero.history["reverted"].shape == (3, 0) and np.isfinite(zero.loss).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reinits": -1}, "reinits: expected an integer >= 0"),
        ({"ablation_threshold": 0.0}, "ablation_threshold: expected a value in"),
        ({"redundancy_threshold": float("nan")}, "redundancy_threshold: expected a value in"),
        ({"revert_threshold": float("inf")}, "revert_threshold: expected a value in"),
        ({"sub_patience": 0}, "sub_patience: expected an integer >= 1"),
        ({"outgoing": "x"}, "outgoing: expected one of"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_with_reinit(MODEL, DATA, keys=KEYS, **{**KW, **kwargs})


def test_bad_data_and_keys_raise():
    with pytest.raises(ValueError, match="data: x and y need the same non-zero length"):
        train_with_reinit(MODEL, (jnp.zeros((0, 2)), jnp.zeros((0, 1))), keys=KEYS, **KW)
    with pytest.raises(ValueError, match="keys: expected"):
        train_with_reinit(MODEL, DATA, keys=jnp.zeros((3, 2), jnp.uint32), **KW)
