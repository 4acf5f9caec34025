import json

import pytest

from experiments import paint_collapse

ARGS = ["--quick", "--max-epochs", "40", "--size", "16", "--no-progress", "--seeds", "2"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return paint_collapse.main([*ARGS, "--out", str(root)])


def test_quick_run_writes_table_json_and_figure(out):
    table = (out / "table.md").read_text()
    for model in (1, 2, 3, 4):
        assert f"\n| {model} |" in table
    assert "55 → 13" in table and "49 → 13" in table
    assert "paper" in table
    assert "up to 4 models trained at the same time" in table  # the default: all at once
    assert (out / "paintings.png").stat().st_size > 1000
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["seeds"] == 2
    for model in ("2", "3"):
        for run in saved["models"][model]["runs"]:
            assert run["collapse_rel_diff"] < 1e-5  # collapsed net's loss == uncollapsed one
            assert 0 <= run["active_nodes"] <= 3
    assert all(r["epochs"] <= 40 for m in saved["models"].values() for r in m["runs"])


def test_resume_reuses_finished_models_and_rejects_other_config(out):
    before = json.loads((out / "results.json").read_text())
    paint_collapse.main([*ARGS, "--out", str(out.parent), "--resume", "--models", "2"])
    after = json.loads((out / "results.json").read_text())
    assert after["models"]["2"]["runs"] == before["models"]["2"]["runs"]
    with pytest.raises(ValueError, match="--resume: .* was written with config"):
        paint_collapse.main([*ARGS[:-1], "3", "--out", str(out.parent), "--resume"])


def test_resume_recomputes_only_a_deleted_model_and_gets_identical_numbers(out, monkeypatch):
    path = out / "results.json"
    before = json.loads(path.read_text())
    calls = []
    real = paint_collapse.run_model
    monkeypatch.setattr(paint_collapse, "run_model", lambda i, *a: calls.append(i) or real(i, *a))
    # a run killed before model 1 was saved: the file holds every model but that one
    kept = {k: v for k, v in before["models"].items() if k != "1"}
    path.write_text(json.dumps({**before, "models": kept}))
    paint_collapse.main([*ARGS, "--out", str(out.parent), "--resume"])
    after = json.loads(path.read_text())
    assert calls == [1]  # models 2-4 were kept, not retrained
    redone, orig = after["models"]["1"], before["models"]["1"]
    assert redone.pop("wall_seconds_all_runs") > 0 and orig.pop("wall_seconds_all_runs") > 0
    assert (redone.pop("side_by_side"), orig.pop("side_by_side")) == (1, 4)  # alone / all 4
    assert redone == orig  # same seed, same device: the same numbers, bit for bit
    assert {k: after["models"][k] for k in kept} == kept


def test_models_trained_side_by_side_equal_models_trained_in_turn(out, tmp_path, capsys):
    # the fixture trained the 4 models in 4 threads at once; one after another they give the
    # same numbers, bit for bit (only the wall times differ)
    alone = paint_collapse.main([*ARGS, "--jobs", "1", "--out", str(tmp_path)])
    side_by_side = json.loads((out / "results.json").read_text())["models"]
    in_turn = json.loads((alone / "results.json").read_text())["models"]
    assert sorted(side_by_side) == sorted(in_turn) == ["1", "2", "3", "4"]
    for rec in (*side_by_side.values(), *in_turn.values()):
        assert rec.pop("wall_seconds_all_runs") > 0
    # the resume tests before this one retrained model 1 alone
    assert [side_by_side[m].pop("side_by_side") for m in "1234"] in ([4] * 4, [1, 4, 4, 4])
    assert [in_turn[m].pop("side_by_side") for m in "1234"] == [1] * 4
    assert side_by_side == in_turn
    assert "trained at the same time" not in (alone / "table.md").read_text()
    with pytest.raises(SystemExit):
        paint_collapse.main([*ARGS, "--jobs", "0", "--out", str(tmp_path)])
    assert "--jobs: expected a positive number of cells, got '0'" in capsys.readouterr().err


def test_threshold_table_counts_the_stored_ratios_at_each_threshold():
    # two runs of a 3-unit model: run a has ratios 1.6, 1.2, 1.5 (1.5 counts: ">= 1.5"), run b
    # none above 1.0; counts per run at 1.5 are (2, 0): mean 1, std 1 (population)
    records = {
        "1": {"runs": [{"ablation_ratios": [1.6, 1.2, 1.5]}, {"ablation_ratios": [1.0] * 3}]}
    }
    table = paint_collapse._threshold_table(records)
    row = next(line for line in table.splitlines() if line.startswith("| 1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    by_threshold = dict(zip(paint_collapse.THRESHOLDS, cells[1:-1], strict=True))
    assert by_threshold[1.5] == "1.00 ± 1.00"  # 1.6 and 1.5 in run a
    assert by_threshold[1.55] == "0.50 ± 0.50"  # only 1.6
    assert by_threshold[1.7] == "0.00 ± 0.00"
    assert cells[-1] == "1 of 6"  # 1.5 lies in [1.49, 1.51)


def test_quick_run_shows_the_threshold_sensitivity(out):
    table = (out / "table.md").read_text()
    saved = json.loads((out / "results.json").read_text())
    assert "## Active units against the ablation threshold" in table
    row = next(
        line
        for line in table.split("against the ablation threshold")[1].splitlines()
        if line.startswith("| 1 |")
    )
    at_15 = row.strip("|").split("|")[1 + paint_collapse.THRESHOLDS.index(1.5)].strip()
    counts = [r["active_nodes"] for r in saved["models"]["1"]["runs"]]
    assert at_15.startswith(f"{sum(counts) / len(counts):.2f}")  # the Table 1 column's count
