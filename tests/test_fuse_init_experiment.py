"""The FuseInit experiment runs end to end in --quick mode, writes finite numbers, resumes."""

import json
import math

import pytest

from experiments import fuse_init

ARGS = ["--quick", "--part", "dense_dense", "--epochs", "3", "--no-progress"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return fuse_init.main([*ARGS, "--out", str(tmp_path_factory.mktemp("results"))])


def test_quick_run_writes_table_json_and_figure(out):
    res = json.loads((out / "results.json").read_text())
    part = res["parts"]["dense_dense"]
    assert res["seeds"] == 2 and res["epochs"] == 3
    assert res["config"] == {"seeds": 2, "epochs": 3, "quick": True, "seed": 0, "n_train": 512}
    assert part["shallow"] == [
        "DenseLayer(features=16, activation='relu')",
        "DenseLayer(features=2, activation='identity')",
    ]
    for key in ("deep_final", "fuseinit_final", "random_final", "fusion_mse"):
        assert len(part[key]) == 2 and all(math.isfinite(v) for v in part[key]), key
    assert all(v > 0 for v in part["fusion_mse"])  # a ReLU layer does not fuse exactly
    assert len(part["fuseinit_curve"][0]) == 3
    # equal total budget: Random trains the deep stage's 3 epochs plus the retraining's 3
    assert [len(c) for c in part["random_curve"]] == [6, 6]
    assert part["random_final"] == [c[5] for c in part["random_curve"]]
    assert part["random_final_half"] == [c[2] for c in part["random_curve"]]
    assert "Random (6, equal total)" in (out / "table.md").read_text()
    table = (out / "table.md").read_text()
    assert "| dense_dense | fused 16-2 |" in table and "Table V" in table
    assert f"{sum(part['fuseinit_final']) / 2:.3f}" in table
    assert (out / "curves_dense_dense.png").stat().st_size > 1000


def test_resume_skips_saved_parts_and_recomputes_a_deleted_one_identically(out, monkeypatch):
    path = out / "results.json"
    before = json.loads(path.read_text())
    table = (out / "table.md").read_text()
    calls = []
    real = fuse_init.run_part
    spy = lambda name, *a, **k: calls.append(name) or real(name, *a, **k)
    monkeypatch.setattr(fuse_init, "run_part", spy)
    fuse_init.main([*ARGS, "--out", str(out.parent), "--resume"])
    assert calls == [] and json.loads(path.read_text()) == before
    assert (out / "table.md").read_text() == table
    # a run killed before the part was saved: the file holds everything but that part
    path.write_text(json.dumps({**before, "parts": {}}))
    fuse_init.main([*ARGS, "--out", str(out.parent), "--resume"])
    after = json.loads(path.read_text())
    assert calls == ["dense_dense"]
    redone, orig = after["parts"]["dense_dense"], before["parts"]["dense_dense"]
    assert redone.pop("seconds") > 0 and orig.pop("seconds") > 0
    assert redone == orig  # same seed, same device: the same numbers, bit for bit
    with pytest.raises(ValueError, match="--resume: .* was written with config"):
        fuse_init.main([*ARGS, "--epochs", "4", "--out", str(out.parent), "--resume"])
