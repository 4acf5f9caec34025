import json
import math

import jax
import numpy as np
import optax
import pytest

import jaxprune as jp
from experiments import reinit_l2


def test_quick_run_writes_finite_numbers_beside_the_papers(tmp_path):
    args = ["--quick", "--no-progress", "--seeds", "2", "--steps", "4", "--out", str(tmp_path)]
    out = reinit_l2.main([*args, "--penalties", "0.01"])
    data = json.loads((out / "results.json").read_text())
    assert sorted(data["runs"]) == ["l2=0.01/baseline", "l2=0.01/lw", "l2=0.01/rescaling"]
    for run in data["runs"].values():
        assert len(run["test_acc"]) == 2
        assert all(0.0 <= a <= 1.0 for a in run["test_acc"] + run["train_acc"])
        assert all(math.isfinite(v) for v in run["final_train_loss"])
        assert run["steps"] == [20, 20]  # 5 rounds x 4 steps for every scheme, baseline included
    table = (out / "table.md").read_text()
    assert "LW (paper, Table 4)" in table and "Baseline (this run)" in table
    assert "| 0.01 |" in table and "| 0.54 |" in table and "| 0.89 |" in table
    assert (out / "accuracy.png").stat().st_size > 1000


def test_rescaling_scheme_rescales_every_layer_to_its_initial_norm():
    # An "optimizer" whose update is the params doubles every weight at each step. Rescaling
    # only: each of the 5 rounds starts from the initial norms, so the result is 2**2 * init;
    # the baseline doubles 10 times: 2**10 * init. Powers of two are exact in float32.
    double = optax.GradientTransformation(lambda p: optax.EmptyState(), lambda u, s, p: (p, s))
    model = jp.models.BlockMLP(hidden=(4, 4), out=8)
    (x, y), _ = jp.data.signal_task(jax.random.key(0), n_train=16, n_test=4)
    keys = jax.random.split(jax.random.key(1), 2)
    kw = dict(optimizer=double, steps_per_round=2)
    res = jp.training.train_rounds(
        model, (x, y), keys=keys, **kw, **reinit_l2.method_kwargs("rescaling"), loss="cross_entropy"
    )
    base = jp.training.train_rounds(
        model, (x, y), keys=keys, **kw, **reinit_l2.method_kwargs("baseline"), loss="cross_entropy"
    )
    assert res.history["steps"].sum() == base.history["steps"].sum() == 2 * 10
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(a * 256, b),
        res.variables["params"],
        base.variables["params"],
    )
    jax.tree.map(np.testing.assert_array_equal, res.variables["lw_norm"], base.variables["lw_norm"])
    assert reinit_l2.method_kwargs("lw")["schedule"] == (1, 1, 2, 2, 2)
    with pytest.raises(ValueError, match="method: expected one of"):
        reinit_l2.method_kwargs("fc")


def test_penalty_conventions_get_their_own_folder_and_description():
    assert reinit_l2.variant_name("sum", False, None, None) == ""  # the default: results/reinit_l2
    assert reinit_l2.variant_name("half_sum", False, None, None) == "half_sum"
    assert reinit_l2.variant_name("sum", True, None, None) == "sum+biases"
    assert reinit_l2.variant_name("mean", False, 8000, 32) == "mean,steps=8000,batch=32"
    assert reinit_l2.variant_name("sum", False, 8000, None) == "steps=8000"
    assert reinit_l2.convention("sum", False, None) == (
        "penalty l2 * sum(w^2) over kernels only; full batch SGD"
    )
    assert reinit_l2.convention("mean", True, 32) == (
        "penalty l2 * mean(w^2) per tensor, summed over kernels and biases; minibatch 32 SGD"
    )
