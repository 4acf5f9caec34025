import json
import math

from experiments import paint_reinit

ARGS = ["--quick", "--seeds", "2", "--size", "16", "--max-epochs", "8", "--no-progress"]


def test_quick_run_writes_table_json_and_figures(tmp_path):
    out = paint_reinit.main([*ARGS, "--settings", "2/4", "--out", str(tmp_path)])
    table = (out / "table.md").read_text()
    assert "| 2 / 4 |" in table and "This run (measured)" in table
    assert "Paper 000, Table 3 (as printed in the paper, not measured here)" in table
    assert "| 1 / 15 | 11 ± 2 | 10 ± 2 |" in table  # the paper's row, labelled as the paper's
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["seeds"] == 2 and saved["config"]["settings"] == ["2/4"]
    (setting,) = saved["settings"]
    assert setting["reinits"] == 2 and setting["width"] == 4
    assert math.isfinite(setting["wall_seconds_all_runs"])
    for run in setting["runs"]:
        assert isinstance(run["sides"], int) and run["sides"] >= 0
        assert 0 <= run["active_units"] <= run["kept_units"] <= 4
        assert math.isfinite(run["loss"]) and 0 <= run["loss"] <= 1
        assert len(run["reverted"]) == len(run["baseline"]) == 2
        assert all(math.isfinite(b) for b in run["baseline"] + run["sub_loss"])
        assert run["epochs"] == 6 * 8  # 6 phases (R = 2), each capped at 8 < patience epochs
    for png in ("sides_histogram.png", "paintings.png"):
        assert (out / png).stat().st_size > 1000
