"""fuse_init --part table_<N>: paper 001's networks, successive fusions, the paper's init."""

import json
import math

import jax
import numpy as np

import jaxprune as jp
from experiments import _fuse_tables as tables
from experiments import fuse_init


def test_table_v_successive_fusions_quick(tmp_path):
    argv = ["--quick", "--part", "table_V", "--epochs", "2", "--no-progress"]
    out = fuse_init.main([*argv, "--out", str(tmp_path)])
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["init_std"] == math.sqrt(0.05)
    part = res["parts"]["table_V"]
    assert [r["layers"] for r in part["rows"]] == [3, 2, 1]  # 16-128-2 -> 16-2 -> 2
    first, *fused = part["rows"]
    assert "fuseinit_final" not in first and len(first["random_final"]) == 2
    for row in fused:
        for key in ("fuseinit_final", "random_final", "fusion_mse"):
            assert len(row[key]) == 2 and all(math.isfinite(v) for v in row[key]), key
        assert all(m >= 0 for m in row["fusion_mse"])
        assert len(row["fuseinit_curve"][0]) == len(row["random_curve"][0]) == 2
    table = (out / "table.md").read_text()
    assert "| V (MAE) | 2-layer |" in table and "7.221 ± 0.336" in table  # paper, labelled
    assert f"{np.mean(fused[0]['fuseinit_final']):.4f}" in table


def test_fused_row_is_the_next_rows_network_with_the_fused_weights():
    """Table III (1-D convs 18-36 -> one 36-filter conv of width 5): the renamed fused weights
    fit ``fusion_net("III", 1)`` and compute what ``jp.fuse``'s own model computes."""
    (x, _), _ = tables.load("III", quick=True)
    x = jax.numpy.asarray(x[:64])
    net = tables.network("III", 2, math.sqrt(0.05))
    params = net.init(jax.random.key(0), x[:1])["params"]
    stacked = jax.tree.map(lambda a: a[None], params)
    fused, mses, _ = tables.fuse_into_next("III", 2, stacked, x, math.sqrt(0.05))
    one = jax.tree.map(lambda a: a[0], fused)
    assert one["conv_0"]["kernel"].shape == (5, 9, 36)
    direct = jp.fuse(net, {"params": params}, ("conv_0", "conv_1"), data=[x])
    want = direct.model.apply(direct.variables, x)
    got = tables.network("III", 1, math.sqrt(0.05)).apply({"params": one}, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert mses[0] > 0  # ReLU between the convs: not an exact fusion


def test_paper_init_std_draws_variance_005():
    net = tables.network("I", 6, math.sqrt(0.05))
    k = net.init(jax.random.key(0), jax.numpy.zeros((1, 32, 32, 3)))["params"]["conv_5"]["kernel"]
    np.testing.assert_allclose(float(k.var()), 0.05, rtol=0.02)  # 147,456 draws


def test_table_i_conv_dense_row_fuses_in_seconds():
    """Table I, row 5 -> 4: conv_4 (8x8x64 = 4,096 inputs) fused into the 10-way head. With
    fewer images than inputs the minimum-norm fit interpolates them: the next row's network
    with the fused weights reproduces row 5's outputs on those images (fusion MSE 0)."""
    x = jax.random.normal(jax.random.key(3), (32, 32, 32, 3))
    net = tables.network("I", 5, math.sqrt(0.05))
    params = net.init(jax.random.key(0), x[:1])["params"]
    stacked = jax.tree.map(lambda a: a[None], params)
    fused, mses, n_warn = tables.fuse_into_next("I", 5, stacked, x, math.sqrt(0.05))
    one = jax.tree.map(lambda a: a[0], fused)
    assert one["out"]["kernel"].shape == (4096, 10) and n_warn == 1  # 32 samples < 4,096
    want = net.apply({"params": params}, x)
    got = tables.network("I", 4, math.sqrt(0.05)).apply({"params": one}, x)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, atol=1e-3 * scale)
    assert mses[0] < 1e-6 * float(np.var(np.asarray(want), 0).sum())
