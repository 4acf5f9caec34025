import json
import math

from experiments import reinit_synthetic


def test_quick_run_writes_finite_results(tmp_path):
    # three of the six methods keep the test's compile time down; --quick runs all six
    args = ["--quick", "--no-progress", "--methods", "bl,fc,lw", "--out", str(tmp_path)]
    out = reinit_synthetic.main(args)
    data = json.loads((out / "results.json").read_text())
    methods = {r["method"] for r in data["runs"]}
    assert methods == {"bl", "fc", "lw"}
    for run in data["runs"]:
        assert len(run["test_acc"]) == data["config"]["seeds"] == 2
        assert all(0.0 <= a <= 100.0 and math.isfinite(a) for a in run["test_acc"])
        assert all(math.isfinite(v) for v in run["final_train_loss"])
        expect = 60  # K x N x steps = 3 x 1 x 20, the same budget for every method (BL included)
        assert all(s == expect for s in run["steps"])
    table = (out / "table.md").read_text()
    assert "this run" in table and "paper (Table 1)" in table
    for m in ("BL", "FC", "LW"):
        assert m in table
    assert "| 1.0 | paper (Table 1) | 50.7 (±5.4) | 68.6 (±2.1) | 72.3 (±3.6) |" in table
    assert (out / "accuracy.png").stat().st_size > 1000
