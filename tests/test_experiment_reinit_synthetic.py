import json
import math

import pytest

import jaxprune as jp
from experiments import reinit_synthetic

ARGS = ["--quick", "--no-progress", "--steps", "10"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    # three of the six methods keep the test's compile time down; --quick runs all six
    root = tmp_path_factory.mktemp("results")
    return reinit_synthetic.main([*ARGS, "--methods", "bl,fc,lw", "--out", str(root)])


def test_quick_run_writes_finite_results(out):
    data = json.loads((out / "results.json").read_text())
    assert sorted(data["runs"]) == ["alpha=1.0/bl", "alpha=1.0/fc", "alpha=1.0/lw"]
    for run in data["runs"].values():
        assert len(run["test_acc"]) == data["config"]["seeds"] == 2
        assert all(0.0 <= a <= 100.0 and math.isfinite(a) for a in run["test_acc"])
        assert all(math.isfinite(v) for v in run["final_train_loss"])
        expect = 30  # K x N x steps = 3 x 1 x 10, the same budget for every method (BL included)
        assert all(s == expect for s in run["steps"])
    table = (out / "table.md").read_text()
    assert "this run" in table and "paper (Table 1)" in table
    for m in ("BL", "FC", "LW"):
        assert m in table
    assert "| 1.0 | paper (Table 1) | 50.7 (±5.4) | 68.6 (±2.1) | 72.3 (±3.6) |" in table
    assert (out / "accuracy.png").stat().st_size > 1000


def test_resume_recomputes_only_the_missing_cell_bit_identically(out, monkeypatch):
    path = out / "results.json"
    before = json.loads(path.read_text())
    edited = {**before, "runs": {k: v for k, v in before["runs"].items() if k != "alpha=1.0/fc"}}
    path.write_text(json.dumps(edited))
    calls = []
    real = jp.training.train_rounds
    monkeypatch.setattr(
        jp.training, "train_rounds", lambda *a, **kw: calls.append(kw["method"]) or real(*a, **kw)
    )
    reinit_synthetic.main([*ARGS, "--methods", "bl,fc,lw", "--out", str(out.parent), "--resume"])
    after = json.loads(path.read_text())
    assert calls == ["fc"]  # the kept cells were not trained again
    for cell in ("alpha=1.0/bl", "alpha=1.0/lw"):
        assert after["runs"][cell] == before["runs"][cell]  # wall times included: not rerun
    redone, original = after["runs"]["alpha=1.0/fc"], before["runs"]["alpha=1.0/fc"]
    for field in ("test_acc", "train_acc", "final_train_loss", "steps"):
        assert redone[field] == original[field]  # exactly: the run is deterministic
    assert redone["seconds"] != original["seconds"]
    with pytest.raises(ValueError, match="--resume: .* was written with config"):
        reinit_synthetic.main([*ARGS[:-1], "12", "--out", str(out.parent), "--resume"])
