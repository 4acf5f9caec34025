import json
import math

import numpy as np

from experiments import _scnn_plots, reinit_scnn


def test_quick_run_writes_accuracies_margins_sharpness_and_plots(tmp_path):
    args = ["--quick", "--no-progress", "--methods", "bl,lw", "--steps", "6", "--margins", "50"]
    # --draws 0 skips the sharpness: its noisy conv forward takes about a minute to compile on
    # a 2-core CPU (the figure is tested below on synthetic records)
    args += ["--analysis-size", "64", "--draws", "0", "--out", str(tmp_path)]
    out = reinit_scnn.main(args)
    data = json.loads((out / "results.json").read_text())
    assert sorted(data["runs"]) == ["bl", "lw"]
    assert data["config"]["rounds"] == 4  # K = 4 conv blocks, N = 1
    for method, run in data["runs"].items():
        assert len(run["test_acc"]) == 2
        assert all(0.0 <= a <= 100.0 for a in run["test_acc"] + run["train_acc"])
        steps = np.asarray(run["steps"])
        assert steps.shape == ((2, 1) if method == "bl" else (2, 4))
        assert (steps.sum(-1) <= 24).all() and (steps > 0).all()
        for margins in run["margins"]:
            assert len(margins) == 50
            assert np.all(np.diff(margins) >= 0) and -1.0 <= margins[0] <= margins[-1] <= 1.0
        assert run["loss_increase"] == [] and run["accuracy_drop"] == []
        assert all(h > 0 and math.isfinite(h) for h in run["head_product"])
    table = (out / "table.md").read_text()
    assert "paper Table 6: scnn CIFAR10" in table and "*different datasets*" in table
    assert "| LW |" in table and "| 75.9 |" in table and "| 92.1 |" in table
    bl_ratio = np.asarray(data["runs"]["bl"]["head_product"])
    assert f"| {np.mean(bl_ratio / bl_ratio.mean()):.2f}" in table  # BL's own ratio is 1.00
    assert (out / "margins.png").stat().st_size > 1000
    assert not (out / "sharpness.png").exists()


def test_outputs_from_synthetic_records(tmp_path):
    sigmas = [0.0, 0.01, 0.02]
    rec = lambda acc, head: {
        "test_acc": [acc, acc + 2.0],
        "train_acc": [100.0, 100.0],
        "steps": [[10, 10], [10, 12]],
        "margins": [[-0.5, 0.1, 0.2], [-0.3, 0.2, 0.4]],
        "loss_increase": [[0.0, 0.1, 0.3], [0.0, 0.3, 0.5]],
        "accuracy_drop": [[0.0, 1.0, 2.0], [0.0, 1.0, 4.0]],
        "head_product": head,
    }
    records = {"bl": rec(50.0, [2.0, 2.0]), "lw": rec(60.0, [1.0, 3.0])}
    config = {"dataset": "digits", "seeds": 2, "rounds": 4, "steps_per_round": 10}
    config |= {"patience": 3, "model": "SCNN", "sigmas": sigmas}
    _scnn_plots.write_outputs(tmp_path, records, config)
    table = (tmp_path / "table.md").read_text()
    # test 61 ± 1; steps 20 and 22; smallest margin -0.4 ± 0.1; loss increase at 0.01: 0.2 ± 0.1;
    # head products over BL's mean 2: 0.5 and 1.5 -> 1.00 ± 0.50
    assert "| LW | 61.0 ± 1.0 | 100.0 ± 0.0 | 21 ± 1 | -0.400 ± 0.100 | 0.200 ± 0.100 |" in table
    assert "| 1.00 ± 0.50 | 92.1 | 75.9 |" in table
    assert "| BL | 51.0 ± 1.0 |" in table and "| 1.00 ± 0.00 | 91.8 | 72.2 |" in table
    for png in ("margins.png", "sharpness.png"):
        assert (tmp_path / png).stat().st_size > 1000
