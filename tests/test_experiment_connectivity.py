"""The paper-003 Table 1 experiment runs end to end (--quick) and writes finite numbers."""

import json
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from experiments import connectivity

METHODS = ["baseline", "free_pruning", "minimal_flipping"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    # Three of the five methods keep the suite within its time budget; --quick runs all five.
    tmp = tmp_path_factory.mktemp("connectivity")
    out = connectivity.main(["--quick", "--no-progress", "--out", str(tmp), "--methods", *METHODS])
    return out, json.loads((out / "results.json").read_text())


def test_quick_run_writes_table_figures_and_finite_results(quick_run):
    out, results = quick_run
    methods = METHODS
    lenet = {m: results["runs"][connectivity.run_id("lenet", m)] for m in methods}
    assert sorted(results["runs"]) == sorted(f"signed_he_constant/lenet/{m}" for m in methods)
    for method in methods:
        acc = np.asarray(lenet[method]["accuracy"])
        assert acc.shape == (2, 2) and np.isfinite(acc).all()
        assert 0.5 < lenet[method]["best_mean_accuracy"] <= 1.0  # 10 classes: chance is 0.1
    for method in ("free_pruning", "minimal_flipping"):
        r = lenet[method]
        assert r["weights_unchanged"] is True
        assert 0.0 < r["final_changed"] < 0.5
        assert sorted(r["layers"]) == ["dense_0", "dense_1", "out"]
        assert r["factored_agreement"] == 1.0
    n = 64 * 300 + 300 * 100 + 100 * 10
    assert lenet["minimal_flipping"]["bits"] == {
        "weights": n,
        "dense_bits": 32 * n,
        "factored_bits": n + 32,
    }
    table = (out / "table.md").read_text()
    assert "97.96" in table and "not** measured here" in table  # paper numbers, labelled
    measured = f"{100 * lenet['baseline']['best_mean_accuracy']:.2f}"
    assert f"| baseline | {measured} |" in table
    assert "## signed_he_constant" in table
    for name in ("signed_he_constant_lenet.png", "signed_he_constant_lenet_layers.png"):
        assert (out / name).stat().st_size > 10_000


def test_resume_recomputes_a_deleted_cell_identically(quick_run, tmp_path, monkeypatch):
    # Also the determinism test: the recomputed cell equals the first run's, bit for bit.
    src, first = quick_run
    out = tmp_path / "connectivity"
    shutil.copytree(src, out)
    saved = json.loads((out / "results.json").read_text())
    cell = connectivity.run_id("lenet", "minimal_flipping")
    deleted = saved["runs"].pop(cell)
    (out / "results.json").write_text(json.dumps(saved))
    trained = []
    real = connectivity.train_curves
    monkeypatch.setattr(
        connectivity, "train_curves", lambda *a, **k: trained.append(a[0].kind) or real(*a, **k)
    )
    argv = ["--quick", "--no-progress", "--out", str(tmp_path), "--methods", *METHODS]
    connectivity.main([*argv, "--resume"])
    assert trained == ["flip"]  # only the deleted cell was trained again
    again = json.loads((out / "results.json").read_text())
    assert again["config"] == first["config"]
    assert sorted(again["runs"]) == sorted(first["runs"])
    for run, record in first["runs"].items():  # kept cells: untouched, wall time included
        if run != cell:
            assert again["runs"][run] == record
    recomputed = dict(again["runs"][cell])
    assert recomputed.pop("seconds") >= 0 and deleted.pop("seconds") >= 0
    assert recomputed == deleted
    with pytest.raises(ValueError, match="--resume: .* was written with config"):
        connectivity.main([*argv[:-1], "--resume"])  # another method list: another config


def test_digits_split_is_deterministic_and_disjoint():
    x_tr, y_tr = jp.data.image_dataset("digits", "train")
    x_te, y_te = jp.data.image_dataset("digits", "test")
    assert x_tr.shape == (1438, 8, 8, 1) and x_te.shape == (359, 8, 8, 1)
    assert x_tr.dtype == np.float32 and 0.0 <= x_tr.min() and x_tr.max() == 1.0
    assert sorted(set(y_tr.tolist())) == list(range(10))
    np.testing.assert_array_equal(jp.data.image_dataset("digits", "test")[0], x_te)
    flat_tr = {r.tobytes() for r in x_tr.reshape(len(x_tr), -1)}
    overlap = sum(r.tobytes() in flat_tr for r in x_te.reshape(len(x_te), -1))
    assert overlap <= 5  # the 1,797 digits hold a few exact duplicates, no shared rows else
    assert math.isclose(len(y_te) / (len(y_te) + len(y_tr)), 0.2, abs_tol=1e-3)


def test_image_dataset_bad_input():
    with pytest.raises(ValueError, match="name"):
        jp.data.image_dataset("svhn")
    with pytest.raises(ValueError, match="split"):
        jp.data.image_dataset("digits", "validation")
    with pytest.raises(ValueError, match="test_fraction"):
        jp.data.image_dataset("digits", test_fraction=1.0)


def test_train_curves_records_each_epoch_of_the_runs_it_returns():
    # The curves are measured on the runs train_curves returns; masked runs move only scores.
    from experiments.connectivity_train import initial_params, train_curves

    train = jp.data.image_dataset("digits", "train")
    train = (train[0][:110], train[1][:110])
    test = jp.data.image_dataset("digits", "test")
    model = jp.models.MaskedMLP(hidden=(16,), kind="mask", weight_init="signed_he_constant")
    keys = jax.random.split(jax.random.key(0), 2)
    p0 = initial_params(model, train[0], keys)
    tx = connectivity.optimizer("lenet", "free_pruning")
    c = train_curves(model, tx, train, test, p0, keys, epochs=2, kind="mask")
    assert c.accuracy.shape == c.changed.shape == (2, 2)
    for s in range(2):
        p = jax.tree.map(lambda a, s=s: a[s], c.params)
        acc = jnp.mean(jnp.argmax(model.apply({"params": p}, test[0]), -1) == test[1])
        # in and outside the program the logits round differently: a near-tie may flip
        assert abs(float(acc) - c.accuracy[s, -1]) <= 1.01 / len(test[1])
        assert abs(float(jp.analysis.changed_fraction(p, "mask")) - c.changed[s, -1]) < 1e-6
        np.testing.assert_array_equal(p["dense_0"]["weights"], p0["dense_0"]["weights"][s])
    assert set(c.layers) == set(jp.analysis.layer_fractions(p, "mask"))
    assert not np.array_equal(c.params["dense_0"]["scores"], p0["dense_0"]["scores"])
    with pytest.raises(ValueError, match="batch_size: 200 exceeds"):
        train_curves(model, tx, train, test, p0, keys, epochs=1, batch_size=200)


def test_resume_with_other_nets_adds_them_beside_the_finished_ones(
    quick_run, tmp_path, monkeypatch
):
    # A cell depends only on its own net: --resume --nets conv2 keeps lenet's cells, trains only
    # conv2's, and table.md shows both nets.
    src, first = quick_run
    shutil.copytree(src, tmp_path / "connectivity")
    trained = []

    def fake_train_net(args, net, init, methods, seeds, epochs, store):
        trained.append((net, list(methods)))
        for m in methods:
            cell = first["runs"][connectivity.run_id("lenet", m, init)]
            store.put(connectivity.run_id(net, m, init), cell)

    monkeypatch.setattr(connectivity, "_train_net", fake_train_net)
    argv = ["--quick", "--no-progress", "--out", str(tmp_path), "--methods", *METHODS]
    out = connectivity.main([*argv, "--nets", "conv2", "--resume"])
    assert trained == [("conv2", METHODS)]
    again = json.loads((out / "results.json").read_text())
    for m in METHODS:
        cell = connectivity.run_id("lenet", m)
        assert again["runs"][cell] == first["runs"][cell]
    table = (out / "table.md").read_text()
    assert "lenet measured acc %" in table and "conv2 measured acc %" in table


def test_layer_figure_is_skipped_without_masked_methods(tmp_path):
    # --methods baseline alone used to crash in matplotlib (a figure with zero columns).
    connectivity._plot_layers("conv4", {"baseline": {"layers": {}}}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_each_initializer_draws_the_papers_distribution(tmp_path, monkeypatch):
    """``--inits``: each cell's fixed weights come from its initializer (sec. 2.2): LeNet's
    first layer on 8x8 digits (fan-in 64, fan-out 300) has std sqrt(2 / 64) for He normal,
    sqrt(2 / 364) for Glorot normal; one table per initializer."""
    drawn = {}
    real = connectivity.train_curves

    def spy(model, tx, train, test, params, keys, **kw):
        drawn[model.weight_init] = np.asarray(params["dense_0"]["weights"])
        return real(model, tx, (train[0][:100], train[1][:100]), test, params, keys, **kw)

    monkeypatch.setattr(connectivity, "train_curves", spy)
    argv = ["--quick", "--no-progress", "--out", str(tmp_path), "--methods", "free_flipping"]
    out = connectivity.main([*argv, "--epochs", "1", "--inits", "he_normal", "glorot_normal"])
    assert sorted(drawn) == ["glorot_normal", "he_normal"]
    np.testing.assert_allclose(drawn["he_normal"].std(), math.sqrt(2 / 64), rtol=0.02)
    np.testing.assert_allclose(drawn["glorot_normal"].std(), math.sqrt(2 / 364), rtol=0.02)
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert sorted(runs) == ["glorot_normal/lenet/free_flipping", "he_normal/lenet/free_flipping"]
    table = (out / "table.md").read_text()
    for init in ("he_normal", "glorot_normal"):
        acc = 100 * runs[f"{init}/lenet/free_flipping"]["best_mean_accuracy"]
        section = table.split(f"## {init}")[1].split("## ")[0]
        assert f"| free_flipping | {acc:.2f} |" in section
