import json
import math
import pathlib
import shutil

import pytest

from experiments import paint_reinit

ARGS = ["--quick", "--seeds", "2", "--size", "32", "--max-epochs", "8", "--no-progress"]
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
    assert len(best["prediction"]) == 32 * 32
    assert "sides per active unit: runs with >= 1 active unit (# runs)" in table
    assert "sides per active unit: 0 active counted as 0" in table
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


def test_sides_per_active_unit_both_conventions():
    runs = [(6, 4), (0, 0), (2, 0), (9, 3)]  # (sides, active units)
    active_only, zero_counted = paint_reinit.sides_per_active_unit(
        [{"sides": s, "active_units": a} for s, a in runs]
    )
    assert active_only == [1.5, 3.0]
    assert zero_counted == [1.5, 0.0, 0.0, 3.0]


def _run(seed, sides, active):
    return {"seed": seed, "sides": sides, "active_units": active, "loss": 0.01 * (seed + 1)}


def test_render_only_rewrites_the_table_from_results_in_the_old_layout(tmp_path):
    out = tmp_path / "paint_reinit"
    out.mkdir()
    runs = [_run(0, 6, 3), _run(1, 0, 0), _run(2, 4, 4)]
    record = {"reinits": 0, "width": 30, "wall_seconds_all_runs": 3.0, "runs": runs}
    (out / "results.json").write_text(json.dumps({"config": {}, "settings": [record]}))
    assert paint_reinit.main(["--render-only", "--out", str(tmp_path)]) == out
    table = (out / "table.md").read_text()
    # ratios 2, -, 1: mean 1.5 +- 0.5 over 2 runs; counted as 0: 2, 0, 1 -> 1.00 +- 0.82
    assert "| 0 / 30 | 3.3 ± 2.5 | 2.3 ± 1.7 | 1.50 ± 0.50 (2) | 1.00 ± 0.82 |" in table
    assert "| 3.0 (1.00) | 0 | 1 |" in table  # run time, # stars, # blank


def test_committed_table_is_the_rendering_of_the_committed_results(tmp_path):
    committed = pathlib.Path(__file__).parents[1] / "results" / "paint_reinit"
    shutil.copy(committed / "results.json", tmp_path / "results.json")
    paint_reinit.render(tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert table == (committed / "table.md").read_text()
    assert "| 0 / 30 | 6.9 ± 3.8 | 5.6 ± 3.8 | 1.33 ± 0.38 (26) | 1.15 ± 0.57 |" in table
    assert "Up to 3 settings trained at the same time" in table


def test_sizes_the_side_count_does_not_support_are_refused_before_training(tmp_path):
    with pytest.raises(SystemExit):
        paint_reinit.main(["--quick", "--size", "20", "--out", str(tmp_path)])


def test_settings_side_by_side_give_the_numbers_of_a_setting_alone(out, tmp_path):
    both = paint_reinit.main([*ARGS, "1/3", "--out", str(tmp_path)])  # 2/4 and 1/3 at once
    saved = json.loads((both / "results.json").read_text())["settings"]
    alone = json.loads((out / "results.json").read_text())["settings"]["2/4"]
    assert list(saved) == ["2/4", "1/3"]  # the order of --settings, whichever ended first
    assert [saved[s].pop("side_by_side") for s in saved] == [2, 2]
    assert alone.pop("side_by_side") == 1
    for rec in (alone, saved["2/4"]):
        assert rec.pop("wall_seconds_all_runs") > 0
    assert saved["2/4"] == alone
    assert "Up to 2 settings trained at the same time" in (both / "table.md").read_text()
