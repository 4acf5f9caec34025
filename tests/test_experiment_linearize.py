import json
import math

import pytest

from experiments import linearize

ARGS = ["--quick", "--no-progress"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return linearize.main([*ARGS, "--out", str(tmp_path_factory.mktemp("results"))])


def test_linearize_quick_writes_finite_results(out):
    res = json.loads((out / "results.json").read_text())
    assert list(res["seeds"]) == ["0"]
    run = res["seeds"]["0"]
    assert run["swap_max_abs_diff"] == 0.0  # the ReLU -> PReLU swap is exact
    for row in run["lambdas"]:
        for k in ("test_acc", "inactive_fraction", "apl", "napl", "enw"):
            assert math.isfinite(row[k])
        assert 0 <= row["napl"] <= len(res["config"]["hidden"])
        assert row["fold_max_abs_diff"] < 1e-4  # folding the linear channels is exact
        assert row["cost_folded"]["params"] <= row["cost_before"]["params"]
    # a stronger penalty linearizes more units
    assert run["lambdas"][-1]["inactive_fraction"] >= run["lambdas"][0]["inactive_fraction"]
    # the transferred masks keep exactly the number of inactive units: retraining is with
    # unregularized PReLUs, nothing more freezes (quick: the heat-map lambda is the last one)
    fracs = {m: v["inactive_fraction"] for m, v in run["transfer"].items()}
    assert all(f == run["lambdas"][-1]["inactive_fraction"] for f in fracs.values())
    # target mode ends at the goal, ceil(0.7 * 36) = 26 of 36 units (the controller on lambda)
    goal = math.ceil(res["config"]["target"] * 36 - 1e-9) / 36
    assert all(a["inactive_fraction"] == pytest.approx(goal) for a in run["advantage"])
    assert len(run["heatmap"]) == res["config"]["post_epochs"]
    table = (out / "table.md").read_text()
    assert "NOT measured here" in table and "| 0.03 |" in table
    for png in ("accuracy_vs_napl.png", "inactive_heatmap.png", "nonlinear_advantage.png"):
        assert (out / png).stat().st_size > 1000


def test_resume_skips_saved_seeds_and_recomputes_a_deleted_one_identically(out, monkeypatch):
    path = out / "results.json"
    before = json.loads(path.read_text())
    calls = []
    real = linearize.run_seed
    monkeypatch.setattr(linearize, "run_seed", lambda s, *a: calls.append(s) or real(s, *a))
    linearize.main([*ARGS, "--out", str(out.parent), "--resume"])
    assert calls == [] and json.loads(path.read_text()) == before
    # a run killed before seed 0 was saved: the file holds everything but that seed
    path.write_text(json.dumps({**before, "seeds": {}}))
    linearize.main([*ARGS, "--out", str(out.parent), "--resume"])
    after = json.loads(path.read_text())
    assert calls == [0]
    redone, orig = after["seeds"]["0"], before["seeds"]["0"]
    assert redone.pop("seconds") > 0 and orig.pop("seconds") > 0
    assert redone == orig  # same seed, same device: the same numbers, bit for bit
    with pytest.raises(ValueError, match="--resume: .* was written with config"):
        linearize.main([*ARGS, "--seed", "1", "--out", str(out.parent), "--resume"])
