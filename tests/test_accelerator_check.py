"""The accelerator check at --quick size on CPU: every slice builds, two run end to end."""

import json

import jax
import jax.numpy as jnp
import pytest

from benchmarks import accelerator_check as ac


@pytest.mark.parametrize("name", sorted(ac.SLICES))
def test_every_slice_builds_at_both_sizes_and_gives_one_logit_per_class(name):
    s = ac.SLICES[name]
    for quick, shape in ((True, (32, 32, 3)), (False, s.shape)):
        model = s.build(quick)
        x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
        variables = jax.eval_shape(model.init, jax.random.key(0), x)
        out = jax.eval_shape(model.apply, variables, x)
        assert out.shape == (2, s.classes)


def test_synthetic_data_has_the_real_shapes_and_one_mean_image_per_class():
    x, y = ac.synthetic(jax.random.key(0), 64, (8, 8, 3), 4)
    assert x.shape == (64, 8, 8, 3) and y.shape == (64,) and int(y.max()) < 4
    # images of a class scatter around their class mean with unit noise
    for c in range(4):
        xc = x[y == c]
        if len(xc) > 4:
            assert abs(float(jnp.std(xc - xc.mean(0))) - 1.0) < 0.2


def test_quick_check_writes_step_times_memory_and_falling_losses(tmp_path):
    argv = ["--quick", "--only", "004_resnet56_short", "003_conv6", "--steps", "2"]
    out = json.loads(ac.main([*argv, "--epochs", "2", "--out", str(tmp_path)]).read_text())
    assert " --quick --only 004_resnet56_short 003_conv6" in out["command"]
    assert out["machine"]["backend"] == "cpu"
    assert list(out["slices"]) == ["004_resnet56_short", "003_conv6"]
    assert out["skipped_for_time"] == []
    for r in out["slices"].values():
        assert r["batch"] == 8 and r["steps_timed"] == 4 and len(r["epoch_loss"]) == 2
        assert r["images_per_s"] == pytest.approx(8 / r["step_s"])
        assert r["loss_fell"] == (r["epoch_loss"][1] < r["epoch_loss"][0])
        assert r["peak_bytes"] is None  # the CPU backend keeps no memory statistics
    short = out["slices"]["004_resnet56_short"]
    assert short["loss_fell"] and short["post_training"]["step_s"] > 0
    # depth-8 v2 ResNet by hand: stem 3x3x3x16; blocks (BN scale+bias, two 3x3 convs) 16->16,
    # 16->32, 32->64; the final BN; the 64x10 head with bias
    blocks = sum(2 * i + 9 * i * o + 2 * o + 9 * o * o for i, o in ((16, 16), (16, 32), (32, 64)))
    assert short["params"] == 27 * 16 + blocks + 2 * 64 + 64 * 10 + 10


def test_slices_past_the_time_budget_are_skipped_and_listed(tmp_path):
    argv = ["--quick", "--only", "001_table1", "003_conv6", "--max-minutes", "0"]
    out = json.loads(ac.main([*argv, "--out", str(tmp_path)]).read_text())
    # the first slice always runs; the second would start after the budget
    assert list(out["slices"]) == ["001_table1"] and out["skipped_for_time"] == ["003_conv6"]
