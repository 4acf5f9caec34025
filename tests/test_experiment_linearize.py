import json
import math

from experiments import linearize


def test_linearize_quick_writes_finite_results(tmp_path):
    out = linearize.main(["--quick", "--no-progress", "--out", str(tmp_path)])
    res = json.loads((out / "results.json").read_text())
    run = res["seeds"][0]
    assert run["swap_max_abs_diff"] == 0.0  # the ReLU -> PReLU swap is exact
    for row in run["lambdas"]:
        for k in ("test_acc", "inactive_fraction", "apl", "napl", "enw"):
            assert math.isfinite(row[k])
        assert 0 <= row["napl"] <= len(res["config"]["hidden"])
        assert row["fold_max_abs_diff"] < 1e-4  # folding the linear channels is exact
        assert row["cost_folded"]["params"] <= row["cost_before"]["params"]
    # a stronger penalty linearizes more units
    assert run["lambdas"][-1]["inactive_fraction"] >= run["lambdas"][0]["inactive_fraction"]
    # the transferred masks keep the number of inactive units
    fracs = {m: v["inactive_fraction"] for m, v in run["transfer"].items()}
    assert min(fracs.values()) >= run["lambdas"][-1]["inactive_fraction"] - 1e-9
    goal = math.ceil(res["config"]["target"] * 36 - 1e-9) / 36
    assert all(a["inactive_fraction"] <= goal + 1e-9 for a in run["advantage"])
    assert len(run["heatmap"]) == res["config"]["post_epochs"]
    table = (out / "table.md").read_text()
    assert "NOT measured here" in table and "| 0.03 |" in table
    for png in ("accuracy_vs_napl.png", "inactive_heatmap.png", "nonlinear_advantage.png"):
        assert (out / png).stat().st_size > 1000
