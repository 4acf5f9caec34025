import json
import math

import numpy as np

from experiments import reinit_scnn


def test_quick_run_writes_accuracies_margins_sharpness_and_plots(tmp_path):
    args = ["--quick", "--no-progress", "--methods", "bl,lw", "--steps", "6", "--margins", "50"]
    args += ["--analysis-size", "64", "--out", str(tmp_path)]
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
        for li, ad in zip(run["loss_increase"], run["accuracy_drop"], strict=True):
            assert li[0] == 0.0 and ad[0] == 0.0  # sigma = 0: no noise, no change
            assert all(math.isfinite(v) for v in li)
        assert all(h > 0 for h in run["head_product"])
    table = (out / "table.md").read_text()
    assert "paper Table 6: scnn CIFAR10" in table and "*different datasets*" in table
    assert "| LW |" in table and "| 75.9 |" in table and "| 92.1 |" in table
    bl_ratio = np.asarray(data["runs"]["bl"]["head_product"])
    assert f"| {np.mean(bl_ratio / bl_ratio.mean()):.2f}" in table  # BL's own ratio is 1.00
    for png in ("margins.png", "sharpness.png"):
        assert (out / png).stat().st_size > 1000
