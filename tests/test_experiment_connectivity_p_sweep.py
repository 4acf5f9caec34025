"""Paper 003 sec. 2.4 sweep: closed form at p = 0, all-positive weights at p = 1, --resume."""

import json

import numpy as np
import pytest

from experiments import connectivity_p_sweep as sweep


def test_p_sweep_closed_form_endpoints_table_and_resume(tmp_path, monkeypatch):
    argv = ["--quick", "--no-progress", "--out", str(tmp_path), "--ps", "1", "0", "--epochs", "1"]
    out = sweep.main(argv)
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["ps"] == [0.0, 1.0]
    zero = results["runs"][sweep.run_id("lenet", "free_pruning", 0.0)]
    one = results["runs"][sweep.run_id("lenet", "free_pruning", 1.0)]
    # p = 0: all weights negative, pixels >= 0, so all logits are 0 and argmax is class 0.
    assert zero["positive_fraction"] == 0.0
    np.testing.assert_allclose(zero["accuracy"], np.full((2, 1), zero["class0_share"]), rtol=1e-6)
    assert zero["final_changed"] == 0.0  # every score gradient vanishes: nothing is pruned
    assert 0.05 < zero["class0_share"] < 0.15  # digits: about a tenth of the test set
    # p = 1: every weight positive; the scores get gradients and some weights are pruned.
    assert one["positive_fraction"] == 1.0
    assert 0.0 <= one["best_mean_accuracy"] <= 1.0
    assert one["final_changed"] > 0.0
    table = (out / "table.md").read_text()
    assert "about 65% of weights pruned" in table and "**not** measured here" in table
    assert f"| 1 | 1.0000 | {100 * one['best_mean_accuracy']:.2f} (" in table
    assert (out / "accuracy_vs_p.png").stat().st_size > 10_000

    trained = []
    real = sweep.train_curves
    monkeypatch.setattr(sweep, "train_curves", lambda *a, **k: trained.append(1) or real(*a, **k))
    sweep.main([*argv, "--resume"])
    assert trained == []  # every cell kept
    assert json.loads((out / "results.json").read_text()) == results


def test_p_sweep_conv6_at_p_zero_is_the_closed_form(tmp_path):
    """Conv6 is in the sweep (Fig. 4's right panel): at p = 0 every first-layer conv output is
    <= 0 on non-negative pixels, so every ReLU, every logit is 0 and the accuracy is the test
    share of class 0, with nothing pruned."""
    argv = ["--quick", "--no-progress", "--out", str(tmp_path), "--nets", "conv6", "--ps", "0"]
    out = sweep.main([*argv, "--epochs", "1", "--train-limit", "50"])
    run = json.loads((out / "results.json").read_text())["runs"]["conv6/free_pruning/p=0"]
    np.testing.assert_allclose(run["accuracy"], np.full((2, 1), run["class0_share"]), rtol=1e-6)
    assert run["final_changed"] == 0.0 and run["positive_fraction"] == 0.0


def test_p_sweep_rejects_p_outside_unit_interval(tmp_path):
    with pytest.raises(SystemExit):
        sweep.main(["--quick", "--out", str(tmp_path), "--ps", "0.5", "1.5"])
