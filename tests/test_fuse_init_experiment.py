"""The FuseInit experiment runs end to end in --quick mode and writes finite numbers."""

import json
import math

from experiments import fuse_init


def test_quick_run_writes_table_json_and_figure(tmp_path):
    out = fuse_init.main(
        [
            "--quick",
            "--part",
            "dense_dense",
            "--epochs",
            "3",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    res = json.loads((out / "results.json").read_text())
    part = res["parts"]["dense_dense"]
    assert res["seeds"] == 2 and res["epochs"] == 3
    assert part["shallow"] == [
        "DenseLayer(features=16, activation='relu')",
        "DenseLayer(features=2, activation='identity')",
    ]
    for key in ("deep_final", "fuseinit_final", "random_final", "fusion_mse"):
        assert len(part[key]) == 2 and all(math.isfinite(v) for v in part[key]), key
    assert all(v > 0 for v in part["fusion_mse"])  # a ReLU layer does not fuse exactly
    assert len(part["fuseinit_curve"][0]) == 3
    table = (out / "table.md").read_text()
    assert "| dense_dense | fused 16-2 |" in table and "Table V" in table
    assert f"{sum(part['fuseinit_final']) / 2:.3f}" in table
    assert (out / "curves_dense_dense.png").stat().st_size > 1000
