"""Paper 000's painting fits against a PyTorch eager loop, timed in the same run (issue 17, item 5).

    python -m benchmarks.bench_vs_torch               # steady state + Table 1 + reinit procedure
    python -m benchmarks.bench_vs_torch --quick       # steady state only, fewer repeats
    pip install -e .[bench]                           # the PyTorch peer (skipped when absent)

Run on its own, the process asks XLA for two host devices (both CPU cores), so ``fit`` shards
the vmapped runs over them; under ``python -m benchmarks`` JAX is already set up and the
devices are whatever it has (``machine.devices`` in the JSON says which).

Writes ``benchmarks/results/bench_vs_torch[_quick].json`` with, measured in this run:

* ``steady``: model 2 (2-3-9-1), MSE, Adam(1e-3), batch 128, the 64x64 square (32 steps per
  epoch). Seconds per run-epoch of ``jp.training.fit`` for one run and for 30 vmapped runs,
  and of a plain PyTorch eager loop of the same model, data and optimizer; each from the
  difference of two run lengths (so compilation, start-up and host checks cancel), the variants
  interleaved ``repeats`` times and the median taken, so a busy spell of the shared machine
  hits every variant alike. Ratios: ``torch / jax`` per run-epoch (targets >= 80x for one
  run, >= 150x per run with 30 vmapped runs; ``*_vs_fused_adam``: the same against the peer
  with PyTorch's fused Adam kernel, 1.4-1.7x faster than its default here), and 30 sequential runs
  against 30 vmapped ones (``30 x one run / 30 vmapped``, target >= 4x). ``compile_s``: the
  first call's time less the steady time of the same work.
  ``cpu_seconds_per_epoch`` and the ``cpu_time_*`` ratios are the same from this process's
  CPU time (all threads): on a busy machine wall time also counts waiting for a core.
  ``jax_hand_written``: the JAX peer, the same training written by hand as a JAX user would
  (``jax.random.permutation``, ``lax.scan``, default ``jax.jit``), and ``_sort_free`` the same
  loop shuffled without a sort; ``hand_written_vs_fit_one_run`` is its time over one run of
  ``fit`` (about 1 for the sort-free loop: the one-run time is XLA:CPU's for this step, not
  the library's overhead).
* ``sequential_calls``: the same, end to end: 30 ``fit`` calls of one key each against one
  call with 30 keys (compiled beforehand), as a user would run them.
* ``table1``: wall time of ``python -m experiments paint_collapse`` in a fresh process
  (4 models x 30 runs to early stop, analysis and compilation included; target <= 40 s). The
  command trains the models side by side (its default ``--jobs``), so ``fit_wall_s_per_model``
  overlap.
* ``reinit``: the paper-000 reinit procedure (``train_with_reinit``), 16 runs vmapped vs one
  after another (``benchmarks/bench_reinit.py``; target >= 2x).

``load_average`` is the machine's 1/5/15-minute load when the run started (other work on the
machine slows every variant, JAX and PyTorch alike, but not equally).
"""

from __future__ import annotations

import os

if "jax" not in __import__("sys").modules:  # run on its own: both cores as two devices
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import optax

import jaxprune as jp
from benchmarks._util import write
from benchmarks.bench_fit import torch_model2

MODEL2 = jp.models.MLP(hidden=(3,), linear_after=((9,),))
ROOT = Path(__file__).resolve().parent.parent


def _torch_loop(data, seed: int = 0, fused: bool = False):
    """``run(epochs)``: a plain PyTorch eager loop of model 2 (the peer), or None without torch.

    ``fused``: PyTorch's fused Adam kernel (``Adam(..., fused=True)``) instead of its default
    per-parameter loop; the targets are against the default, the fused peer is reported beside.
    """
    try:
        import torch
    except ImportError:
        return None
    # One intra-op thread: for layers this small PyTorch's thread pool only adds hand-offs (and
    # on a shared machine, waits), so one thread is the peer's fastest setting.
    torch.set_num_threads(1)
    x, y = torch.tensor(np.asarray(data[0])), torch.tensor(np.asarray(data[1]))
    net, opt, loss_fn = torch_model2(seed)
    if fused:
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)

    def run(epochs: int):
        for _ in range(epochs):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), 128):  # the last partial batch is kept, as in fit
                idx = perm[i : i + 128]
                opt.zero_grad()
                loss = loss_fn(net(x[idx]), y[idx])
                loss.backward()
                opt.step()

    return run


def _hand_written(data, tx, sort_free: bool):
    """``run(epochs)``: model 2 trained by a JAX loop written by hand (the JAX peer).

    What a user writes without the library: ``MODEL2.apply`` under ``jax.value_and_grad``,
    ``optax``, a ``lax.scan`` over the epoch's minibatches (the last partial batch dropped; 4096
    rows are 32 full batches), ``jax.jit`` with default options. ``sort_free``: shuffle with
    :func:`jaxprune.training.feistel_permutation` instead of ``jax.random.permutation`` (which
    sorts), so that the loop itself is timed against ``fit``'s. The data are closed over (constants
    of the program, as in many hand-written loops), which can only favour the peer.
    """
    x, y = (jax.numpy.asarray(a) for a in data)
    n = x.shape[0] // 128 * 128
    key = jax.random.key(0)
    params = MODEL2.init(key, x[:1])
    if sort_free:
        shuffle = lambda k, n: jp.training.feistel_permutation(n, key=k)  # noqa: E731
    else:
        shuffle = jax.random.permutation

    def step(carry, idx):
        p, s = carry
        loss, g = jax.value_and_grad(
            lambda p: jax.numpy.mean((MODEL2.apply(p, x[idx]) - y[idx]) ** 2)
        )(p)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), loss

    @jax.jit
    def train(carry, epochs):
        def epoch(e, carry):
            perm = shuffle(jax.random.fold_in(key, e), x.shape[0])[:n].reshape(-1, 128)
            return jax.lax.scan(step, carry, perm)[0]

        return jax.lax.fori_loop(0, epochs, epoch, carry)

    def run(epochs: int):
        """The parameters after ``epochs`` epochs."""
        return jax.block_until_ready(train((params, tx.init(params)), epochs)[0])

    return run


def _jax_fit(keys, data, tx, chunk: int):
    """``run(epochs)``: ``fit`` of model 2 for exactly ``epochs`` epochs (no early stop)."""
    kw = dict(loss="mse", optimizer=tx, patience=10**9, chunk_epochs=chunk, progress=False)

    def run(epochs: int):
        jax.block_until_ready(
            jp.training.fit(MODEL2, data, keys=keys, max_epochs=epochs, **kw).params
        )

    return run


def _seconds(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _both(fn, *args) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all threads) of ``fn(*args)``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0


def steady(data, short: int, long: int, repeats: int, runs: int) -> dict:
    tx = optax.adam(1e-3)
    keys = jax.random.split(jax.random.key(0), runs)
    variants = {"jax_one_run": _jax_fit(keys[0], data, tx, short)}
    variants[f"jax_{runs}_vmapped"] = _jax_fit(keys, data, tx, short)
    variants["jax_hand_written"] = _hand_written(data, tx, sort_free=False)
    variants["jax_hand_written_sort_free"] = _hand_written(data, tx, sort_free=True)
    torch_run = _torch_loop(data)
    if torch_run is not None:
        variants["torch_one_run"] = torch_run
        variants["torch_one_run_fused_adam"] = _torch_loop(data, fused=True)
    first = {}
    for name, run in variants.items():  # compile both lengths (the first call is timed)
        first[name] = _seconds(run, short)
        run(long)
    diffs = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            (w1, c1), (w0, c0) = _both(run, long), _both(run, short)
            diffs[name].append((w1 - w0) / (long - short))
            cpu[name].append((c1 - c0) / (long - short))
    per_epoch = {name: float(np.median(d)) for name, d in diffs.items()}
    cpu_per_epoch = {name: float(np.median(d)) for name, d in cpu.items()}
    out = {
        "model": "MLP 2-3-9-1 (paper 000, model 2), MSE, Adam(1e-3), batch 128",
        "rows": len(data[0]),
        "steps_per_epoch": -(-len(data[0]) // 128),
        "epochs_short_long": [short, long],
        "repeats": repeats,
        "seconds_per_epoch": per_epoch,
        "seconds_per_epoch_all_repeats": diffs,
        # CPU seconds (all threads) per epoch: the work done, less sensitive to other load.
        "cpu_seconds_per_epoch": cpu_per_epoch,
        "compile_s": {
            name: first[name] - per_epoch[name] * short for name in variants if "jax" in name
        },
    }
    vm = per_epoch[f"jax_{runs}_vmapped"]
    out["jax_seconds_per_run_epoch_vmapped"] = vm / runs
    out["vmapped_vs_sequential"] = runs * per_epoch["jax_one_run"] / vm
    # > 1: one run of ``fit`` is faster than the hand-written JAX loop
    out["hand_written_vs_fit_one_run"] = {
        name: per_epoch[name] / per_epoch["jax_one_run"]
        for name in ("jax_hand_written", "jax_hand_written_sort_free")
    }
    if torch_run is None:
        out["torch"] = "skipped: PyTorch is not installed (pip install -e .[bench])"
        print(out["torch"], flush=True)
    else:
        import torch

        out["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads()}
        t = per_epoch["torch_one_run"]
        out["speedup_one_run"] = t / per_epoch["jax_one_run"]
        out[f"speedup_per_run_{runs}_vmapped"] = t / (vm / runs)
        f = per_epoch["torch_one_run_fused_adam"]
        out["speedup_one_run_vs_fused_adam"] = f / per_epoch["jax_one_run"]
        out["speedup_hand_written"] = {
            name: t / per_epoch[name] for name in ("jax_hand_written", "jax_hand_written_sort_free")
        }
        out[f"speedup_per_run_{runs}_vmapped_vs_fused_adam"] = f / (vm / runs)
        c = cpu_per_epoch["torch_one_run"]
        out["cpu_time_speedup_one_run"] = c / cpu_per_epoch["jax_one_run"]
        out[f"cpu_time_speedup_per_run_{runs}_vmapped"] = c / (
            cpu_per_epoch[f"jax_{runs}_vmapped"] / runs
        )
    return out


def sequential_calls(data, epochs: int, runs: int) -> dict:
    """30 single-key fits one after another vs one 30-key fit, end to end (compiled before)."""
    tx = optax.adam(1e-3)
    keys = jax.random.split(jax.random.key(1), runs)
    one, many = _jax_fit(keys[0], data, tx, epochs), _jax_fit(keys, data, tx, epochs)
    one(epochs), many(epochs)
    vmapped = _seconds(many, epochs)
    seq = _seconds(lambda: [_jax_fit(k, data, tx, epochs)(epochs) for k in keys])
    return {"epochs": epochs, "runs": runs, "vmapped_s": vmapped, "sequential_s": seq,
            "ratio": seq / vmapped}  # fmt: skip


def table1() -> dict:
    """``python -m experiments paint_collapse`` in a fresh process, timed from outside."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "experiments", "paint_collapse", "--no-progress"]
        t0 = time.perf_counter()
        subprocess.run([*cmd, "--out", tmp], cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        results = json.loads((Path(tmp) / "paint_collapse" / "results.json").read_text())
    models = results.get("models", results)
    fits = {k: v["wall_seconds_all_runs"] for k, v in models.items() if isinstance(v, dict)}
    return {
        "command": "python -m experiments paint_collapse",
        "wall_s": wall,
        "fit_wall_s_per_model": fits,
        "epochs_max_per_model": {
            k: max(r["epochs"] for r in v["runs"]) for k, v in models.items() if "runs" in v
        },
    }


def reinit(seeds: int) -> dict:
    from benchmarks import bench_reinit

    with tempfile.TemporaryDirectory() as tmp:
        path = bench_reinit.main(["--seeds", str(seeds), "--out", tmp])
        out = json.loads(Path(path).read_text())
    out.pop("machine", None)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-table1", action="store_true")
    parser.add_argument("--no-reinit", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    payload = {"load_average": list(os.getloadavg()), "devices": jax.device_count()}
    data = jp.data.paint("square", size=64)
    if args.quick:
        payload["steady"] = steady(data, 5, 15, 3, 30)
    else:
        payload["steady"] = steady(data, 20, 100, 7, 30)
        payload["sequential_calls"] = sequential_calls(data, 20, 30)
        if not args.no_reinit:
            payload["reinit"] = reinit(16)
        if not args.no_table1:
            payload["table1"] = table1()
    payload["load_average_end"] = list(os.getloadavg())
    path = write("bench_vs_torch" + ("_quick" if args.quick else ""), payload, args.out)
    print(path.read_text())
    return path


if __name__ == "__main__":
    main()
