import json
import math

import pytest

from experiments import paint_reinit

ARGS = ["--quick", "--seeds", "2", "--size", "16", "--max-epochs", "8", "--no-progress"]
ARGS += ["--settings", "2/4"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return paint_reinit.main([*ARGS, "--out", str(tmp_path_factory.mktemp("results"))])


def test_quick_run_writes_table_json_and_figures(out):
    table = (out / "table.md").read_text()
    assert "| 2 / 4 |" in table and "This run (measured)" in table
    assert "Paper 000, Table 3 (as printed in the paper, not measured here)" in table
    assert "| 1 / 15 | 11 ± 2 | 10 ± 2 |" in table  # the paper's row, labelled as the paper's
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["seeds"] == 2 and list(saved["settings"]) == ["2/4"]
    setting = saved["settings"]["2/4"]
    assert setting["reinits"] == 2 and setting["width"] == 4
    assert math.isfinite(setting["wall_seconds_all_runs"])
    for run in setting["runs"]:
        assert isinstance(run["sides"], int) and run["sides"] >= 0
        assert 0 <= run["active_units"] <= run["kept_units"] <= 4
        assert math.isfinite(run["loss"]) and 0 <= run["loss"] <= 1
        assert len(run["reverted"]) == len(run["baseline"]) == 2
        assert all(math.isfinite(b) for b in run["baseline"] + run["sub_loss"])
        assert run["epochs"] == 6 * 8  # 6 phases (R = 2), each capped at 8 < patience epochs
    losses = [r["loss"] for r in setting["runs"]]
    best, worst = setting["paintings"]["best"], setting["paintings"]["worst"]
    assert losses[best["seed"]] == min(losses) and losses[worst["seed"]] == max(losses)
    assert len(best["prediction"]) == 16 * 16
    for png in ("sides_histogram.png", "paintings.png"):
        assert (out / png).stat().st_size > 1000


def test_resume_skips_saved_settings_and_recomputes_a_deleted_one_identically(out, monkeypatch):
    path = out / "results.json"
    before = json.loads(path.read_text())
    table = (out / "table.md").read_text()
    calls = []
    real = paint_reinit.run_setting
    spy = lambda r, w, *a: calls.append((r, w)) or real(r, w, *a)
    monkeypatch.setattr(paint_reinit, "run_setting", spy)
    paint_reinit.main([*ARGS, "--out", str(out.parent), "--resume"])
    assert calls == [] and json.loads(path.read_text()) == before
    assert (out / "table.md").read_text() == table
    # a run killed before the setting was saved: the file holds everything but that setting
    path.write_text(json.dumps({**before, "settings": {}}))
    paint_reinit.main([*ARGS, "--out", str(out.parent), "--resume"])
    after = json.loads(path.read_text())
    assert calls == [(2, 4)]
    redone, orig = after["settings"]["2/4"], before["settings"]["2/4"]
    assert redone.pop("wall_seconds_all_runs") > 0 and orig.pop("wall_seconds_all_runs") > 0
    assert redone == orig  # same seed, same device: the same numbers, bit for bit
    with pytest.raises(ValueError, match="--resume: .* was written with config"):
        paint_reinit.main([*ARGS, "--lr", "0.01", "--out", str(out.parent), "--resume"])
