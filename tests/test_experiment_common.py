"""The shared resume store of experiments: atomic per-run saves, config checks."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments._common import RunStore


def test_run_store_keeps_finished_runs_across_restarts(tmp_path):
    path = tmp_path / "results.json"
    store = RunStore(path, {"seeds": 3, "alphas": (0.5, 1.0)}, resume=False)
    store.put("a", {"acc": np.array([0.25, 0.5])})
    store.put(1, {"acc": [1.0]})
    again = RunStore(path, {"seeds": 3, "alphas": (0.5, 1.0)}, resume=True)
    assert again.resumed == ["1", "a"]
    assert 1 in again and "a" in again and "b" not in again
    assert again["a"] == {"acc": [0.25, 0.5]}
    assert json.loads(path.read_text())["config"] == {"seeds": 3, "alphas": [0.5, 1.0]}


def test_run_store_without_resume_starts_over(tmp_path):
    path = tmp_path / "results.json"
    RunStore(path, {"seeds": 3}, resume=False).put("a", 1)
    fresh = RunStore(path, {"seeds": 3}, resume=False)
    assert "a" not in fresh
    fresh.put("b", 2)
    assert json.loads(path.read_text())["runs"] == {"b": 2}


def test_run_store_lists_runs_in_the_given_order_whatever_order_they_finish(tmp_path):
    path = tmp_path / "results.json"
    store = RunStore(path, {"seeds": 3}, resume=False, order=[1, 2, 3])
    for run in (3, "x", 1, 2):
        store.put(run, run)
    assert list(json.loads(path.read_text())["runs"]) == ["1", "2", "3", "x"]
    unordered = RunStore(tmp_path / "other.json", {"seeds": 3}, resume=False)
    for run in (3, 1):
        unordered.put(run, run)
    assert list(json.loads((tmp_path / "other.json").read_text())["runs"]) == ["3", "1"]


def test_run_store_rejects_other_config_and_corrupt_file(tmp_path):
    path = tmp_path / "results.json"
    RunStore(path, {"seeds": 3}, resume=False).put("a", 1)
    with pytest.raises(ValueError, match="was written with config"):
        RunStore(path, {"seeds": 4}, resume=True)
    path.write_text(path.read_text()[:-5])
    with pytest.raises(ValueError, match="is not valid JSON"):
        RunStore(path, {"seeds": 3}, resume=True)


def test_experiments_command_uses_every_core_as_a_host_device():
    code = (
        "import os, experiments.__main__ as m; m.use_every_core(); import jax; "
        "print(jax.device_count(), os.cpu_count())"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    devices, cores = out.stdout.split()
    assert devices == cores
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=3"  # the user's choice stays
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split()[0] == "3"
