"""Benchmarks are not part of the unit suite, but their JAX side must keep working with the
library's API: every module imports, and the quick forms of the cheap ones run end to end."""

import importlib
import json
import pathlib

import jax
import optax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", MODULES)
def test_every_benchmark_imports_and_has_a_main(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(getattr(module, "main", None))


def test_cpu_convs_quick_writes_its_ratios(tmp_path):
    from benchmarks import cpu_convs

    argv = ["--quick", "--steps", "2", "--seeds", "2", "--repeats", "1", "--out", str(tmp_path)]
    out = json.loads(pathlib.Path(cpu_convs.main(argv)).read_text())
    assert set(out["ms_per_step"]) == {
        "scan", "scan_canonical", "python", "vmap_scan", "vmap_scan_canonical"
    }  # fmt: skip
    assert all(v > 0 for v in out["ratios"].values())


def test_bench_vs_torch_jax_side_runs():
    from benchmarks import bench_vs_torch

    data = bench_vs_torch.jp.data.paint("square", size=16)
    keys = jax.random.split(jax.random.key(0), 2)
    bench_vs_torch._jax_fit(keys, data, optax.adam(1e-3), 2)(2)
    bench_vs_torch._jax_fit(keys[0], data, optax.adam(1e-3), 2)(2)


@pytest.mark.parametrize("sort_free", [False, True])
def test_bench_vs_torch_hand_written_peer_trains(sort_free):
    """The JAX peer trains model 2: 20 epochs lower the MSE on the data (256 rows, 2 batches)."""
    import jax.numpy as jnp

    from benchmarks import bench_vs_torch

    x, y = bench_vs_torch.jp.data.paint("square", size=16)
    run = bench_vs_torch._hand_written((x, y), optax.adam(1e-2), sort_free=sort_free)

    def mse(p):
        return float(jnp.mean((bench_vs_torch.MODEL2.apply(p, x) - y) ** 2))

    assert mse(run(20)) < 0.9 * mse(run(0))


def test_resnet_train_quick_measures_both_dtypes(tmp_path):
    """The accelerator benchmark's quick form runs here: both dtypes train and are timed."""
    from benchmarks import resnet_train

    out = json.loads(
        pathlib.Path(resnet_train.main(["--quick", "--out", str(tmp_path)])).read_text()
    )
    assert {"jax_fp32", "jax_bf16"} <= set(out["images_per_s"])
    assert all(v > 0 for v in out["images_per_s"].values())


def test_resnet_bf16_variant_computes_in_bf16_with_float32_params():
    """``dtype=bfloat16`` changes the computation, not the parameters, and returns f32 logits."""
    import jax.numpy as jnp

    from jaxprune.models import CifarResNet

    x = jnp.ones((2, 8, 8, 3))
    f32, bf16 = CifarResNet(depth=8, version=1), CifarResNet(depth=8, version=1, dtype=jnp.bfloat16)
    v = f32.init(jax.random.key(0), x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(v))
    a, b = f32.apply(v, x), bf16.apply(v, x)
    assert a.dtype == b.dtype == jnp.float32
    assert 0 < float(jnp.max(jnp.abs(a - b))) < 0.1 * float(jnp.max(jnp.abs(a)))
