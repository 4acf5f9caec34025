"""Paper 004's Fig. 3 experiment on its CIFAR networks, ``--quick`` on mock TFDS data."""

import json
import math

import jax
import jax.numpy as jnp
import pytest

import jaxprune as jp
from experiments import linearize

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module", params=["resnet56_noshort", "resnet56"])
def quick_run(request, tmp_path_factory):
    """One ``--quick`` run per ResNet-56 variant (about 45 s each on 2 CPU cores: two compiles;
    PyramidNet-110 builds and trains a step in tests/models/test_architectures.py)."""
    argv = ["--quick", "--no-progress", "--arch", request.param, "--dataset", "cifar10"]
    with tfds.testing.mock_data(num_examples=64):
        out = linearize.main([*argv, "--out", str(tmp_path_factory.mktemp("results"))])
    return request.param, json.loads((out / "results.json").read_text()), out


def _units(arch):
    model = linearize._linearize_cifar.get_arch(arch).build(10, True)
    x = jnp.ones((1, 32, 32, 3))
    return jp.trace(model, jax.jit(model.init)(jax.random.key(0), x), x).units


def test_quick_linearizes_each_snapshot_to_the_target(quick_run):
    arch, res, out = quick_run
    cfg, run = res["config"], res["seeds"]["0"]
    assert cfg["arch"] == arch and cfg["t_values"] == [0, 2] and cfg["epochs"] == 2
    assert len(run["relu_test_acc_curve"]) == 2
    assert all(0.0 <= a <= 1.0 for a in run["relu_test_acc_curve"])
    units = _units(arch)
    n = sum(u.width for u in units.values())
    for row in run["advantage"]:
        # target mode stops at exactly ceil(target * n) linear units (the controller on lambda)
        counts = row["active_units"]
        assert sorted(counts) == sorted(units)
        assert {k: w for k, (_, w) in counts.items()} == {k: u.width for k, u in units.items()}
        linear = n - sum(a for a, _ in counts.values())
        assert linear == math.ceil(cfg["target"] * n - 1e-9)
        assert row["inactive_fraction"] == pytest.approx(linear / n)
        assert row["napl"] < run["all_active"]["napl"] and row["apl"] < run["all_active"]["apl"]
        assert 0.0 <= row["test_acc"] <= 1.0
    table = (out / "table.md").read_text()
    assert "NOT measured here" in table and "| 2 |" in table
    assert (out / "nonlinear_advantage.png").stat().st_size > 1000


@pytest.mark.parametrize("quick_run", ["resnet56_noshort"], indirect=True)
def test_noshort_path_lengths_equal_the_active_share_summed_over_its_relu_layers(quick_run):
    """NoShort at depth 8 is a chain of 7 ReLU layers, one unit group each, every channel
    reading every channel of the layer before: every path crosses each layer once, through
    any of its channels alike, so APL = NAPL = sum over layers of (active / width), and 7 with
    every unit active (2 per block x 3 blocks + the head's)."""
    _, res, _ = quick_run
    run = res["seeds"]["0"]
    assert run["all_active"] == {"apl": pytest.approx(7.0), "napl": pytest.approx(7.0)}
    for row in run["advantage"]:
        counts = row["active_units"]
        assert len(counts) == 7
        expect = sum(a / w for a, w in counts.values())
        assert row["napl"] == pytest.approx(expect, rel=1e-9)
        assert row["apl"] == pytest.approx(expect, rel=1e-9)


def test_short_all_active_napl_is_half_a_block_per_skip():
    """NAPL of an all-active Short v2 ResNet with option-A shortcuts: at a residual add each
    operand weighs 1/2, so an identity block adds (0 + 2) / 2 = 1 active ReLU on average; a
    stage's first block doubles the channels and zero-pads the shortcut, so half its output
    channels have only the residual branch: (1 + 2) / 2 = 1.5; the head's ReLU adds 1.
    ResNet-56: 25 identity blocks + 2 doubling ones + 1 = 29; depth 8: 1 + 1.5 + 1.5 + 1 = 5."""
    for depth, expect in ((8, 5.0), (56, 29.0)):
        model = jp.models.CifarResNet(depth=depth, version=2, shortcut="A", residual=True)
        x = jnp.ones((1, 32, 32, 3))
        graph = jp.trace(model, jax.jit(model.init)(jax.random.key(0), x), x)
        assert linearize._linearize_cifar.path_measures(graph)["napl"] == pytest.approx(expect)


def test_arch_and_dataset_must_match_their_tasks(capsys):
    with pytest.raises(SystemExit):
        linearize.main(["--quick", "--arch", "resnet56"])  # the spirals are for the MLP
    assert "--arch resnet56 --dataset spirals" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        linearize.main(["--quick", "--dataset", "cifar10"])


def test_full_config_is_the_papers_recipe_for_figs_3_and_4():
    import argparse

    from experiments import _linearize_cifar as lc

    args = argparse.Namespace(arch="resnet56", dataset="cifar10", quick=False, seeds=None, seed=0)
    cfg = lc.config(args)
    assert cfg["epochs"] == 200 and cfg["post_epochs"] == 30 and cfg["seeds"] == 1
    assert cfg["t_values"] == [0, 2, 5, 10, 15, 30, 60, 100, 200]  # ends at the trained network
    assert cfg["recipe"] == (
        "SGD lr 0.1, momentum 0.9, x0.1 at epochs 100, 150, weight decay 0.0001, batch 256, "
        "200 epochs, augment flip (paper 004, App. C.2, Fig. 26)"
    )
    assert cfg["post_recipe"].startswith(
        "SGD lr 0.1, momentum 0.9, x0.1 at epochs 10, 20, weight decay 0.0001, batch 256, "
        "30 epochs, augment flip"
    )
    assert (cfg["strength"], cfg["target"], cfg["quick_note"]) == (0.05, 0.9, "")


@pytest.mark.parametrize("quick_run", ["resnet56_noshort"], indirect=True)
def test_resume_redoes_only_the_parts_not_saved_and_gets_the_same_numbers(quick_run, monkeypatch):
    from experiments import _linearize_cifar as lc

    _, before, out = quick_run
    path = out / "results.json"
    calls = []
    real = lc.train
    monkeypatch.setattr(lc, "train", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    argv = ["--quick", "--no-progress", "--arch", "resnet56_noshort", "--dataset", "cifar10"]
    argv += ["--out", str(out.parent), "--resume"]
    with tfds.testing.mock_data(num_examples=64):
        linearize.main(argv)
        assert calls == [] and json.loads(path.read_text()) == before
        # killed during the last post-training: its part is missing, the snapshots are there
        runs = dict(before["runs"])
        del runs["0/t=2"]
        path.write_text(json.dumps({**before, "runs": runs}))
        linearize.main(argv)
    after = json.loads(path.read_text())
    assert calls == [before["config"]["post_epochs"]]  # one post-training, nothing else
    redone, orig = dict(after["runs"]["0/t=2"]), dict(before["runs"]["0/t=2"])
    assert redone.pop("seconds") > 0 and orig.pop("seconds") > 0
    assert redone == orig  # the same snapshot, seed and device: the same numbers
