"""Speed of the painting fits (paper 000, Table 1): vmapped seeds, sequential seeds, PyTorch eager.

    python -m benchmarks.bench_fit            # full: also the whole Table 1 to early stop
    python -m benchmarks.bench_fit --quick    # short version (no Table 1 run)

Writes ``benchmarks/results/bench_fit.json`` with, measured in the same run:

* ``table1``: wall time of the whole Table 1 (4 models x 30 seeds, early stopping patience 20),
  compilation included (target <= 120 s on a 2-core CPU);
* ``per_run_vs_torch``: model 2, batch 128, Adam, the same number of epochs; seconds per run for
  a plain PyTorch eager loop, for one jaxprune run alone, and for one run's share of 30 vmapped
  runs; ratios (target >= 100x per run);
* ``vmapped_vs_sequential``: 30 seeds in one vmapped fit vs 30 single-seed fits of the same work
  (target >= 10x).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import optax

import jaxprune as jp
from benchmarks._util import write

MODEL2 = jp.models.MLP(hidden=(3,), linear_after=((9,),))


def torch_model2(seed: int):
    """``(net, Adam(1e-3), MSE)``: paper 000's model 2 (2-3-9-1) as a PyTorch peer."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 3),
        torch.nn.ReLU(),
        torch.nn.Linear(3, 9),
        torch.nn.Linear(9, 1),
        torch.nn.Sigmoid(),
    )
    return net, torch.optim.Adam(net.parameters(), lr=1e-3), torch.nn.MSELoss()


def _timed_fit(model, keys, data, epochs, tx):
    """Seconds of a fixed-epoch fit, excluding compilation (a warm-up fit compiles first)."""
    kw = dict(
        loss="mse",
        optimizer=tx,
        patience=10**9,
        max_epochs=epochs,
        chunk_epochs=epochs,
        progress=False,
    )
    jax.block_until_ready(jp.training.fit(model, data, keys=keys, **kw).params)  # compile
    t0 = time.perf_counter()
    jax.block_until_ready(jp.training.fit(model, data, keys=keys, **kw).params)
    return time.perf_counter() - t0


def torch_seconds_per_run(data, epochs: int) -> float:
    """A plain PyTorch eager loop: model 2, Adam(1e-3), batch 128, MSE, shuffled each epoch."""
    import torch

    x = torch.tensor(data[0])
    y = torch.tensor(data[1])
    net, opt, loss_fn = torch_model2(0)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            idx = perm[i : i + 128]
            opt.zero_grad()
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def per_run_vs_torch(data, epochs: int, seeds: int) -> dict:
    tx = optax.adam(1e-3)
    keys = jax.random.split(jax.random.key(0), seeds)
    one = _timed_fit(MODEL2, keys[0], data, epochs, tx)
    many = _timed_fit(MODEL2, keys, data, epochs, tx)
    try:
        torch_s = torch_seconds_per_run(data, epochs)
    except ImportError:
        torch_s = None
    out = {
        "epochs": epochs,
        "rows": len(data[0]),
        "steps_per_epoch": -(-len(data[0]) // 128),
        "seeds_vmapped": seeds,
        "jax_single_run_s": one,
        "jax_vmapped_all_runs_s": many,
        "jax_vmapped_per_run_s": many / seeds,
        "torch_eager_per_run_s": torch_s,
    }
    if torch_s is not None:
        out["speedup_single_run"] = torch_s / one
        out["speedup_per_run_vmapped"] = torch_s / (many / seeds)
    return out


def vmapped_vs_sequential(data, epochs: int, seeds: int) -> dict:
    tx = optax.adam(1e-3)
    keys = jax.random.split(jax.random.key(1), seeds)
    vmapped = _timed_fit(MODEL2, keys, data, epochs, tx)
    kw = dict(
        loss="mse",
        optimizer=tx,
        patience=10**9,
        max_epochs=epochs,
        chunk_epochs=epochs,
        progress=False,
    )
    jax.block_until_ready(jp.training.fit(MODEL2, data, keys=keys[0], **kw).params)  # compile
    t0 = time.perf_counter()
    for k in keys:
        jax.block_until_ready(jp.training.fit(MODEL2, data, keys=k, **kw).params)
    sequential = time.perf_counter() - t0
    return {
        "epochs": epochs,
        "seeds": seeds,
        "vmapped_s": vmapped,
        "sequential_s": sequential,
        "ratio": sequential / vmapped,
    }


def table1(data, seeds: int) -> dict:
    models = {
        1: jp.models.MLP(hidden=(3,)),
        2: MODEL2,
        3: jp.models.MLP(hidden=(3,), linear_after=((3, 3, 3),)),
        4: jp.models.MLP(hidden=(12,)),
    }
    keys = jax.random.split(jax.random.key(0), seeds)
    out, t_all = {}, time.perf_counter()
    for i, model in models.items():
        t0 = time.perf_counter()
        runs = jp.training.fit(
            model,
            data,
            keys=keys,
            loss="mse",
            optimizer=optax.adam(1e-3),
            patience=20,
            progress=False,
        )
        jax.block_until_ready(runs.params)
        epochs = np.asarray(runs.epochs)
        out[f"model_{i}"] = {
            "wall_s": time.perf_counter() - t0,
            "epochs_mean": epochs.mean(),
            "epochs_max": int(epochs.max()),
            "epochs_min": int(epochs.min()),
        }
    out["total_wall_s"] = time.perf_counter() - t_all
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    data = jp.data.paint("square", size=args.size)
    epochs = 20 if args.quick else 200
    payload = {
        "per_run_vs_torch": per_run_vs_torch(data, epochs, 30),
        "vmapped_vs_sequential": vmapped_vs_sequential(data, max(epochs // 4, 5), 30),
    }
    if not args.quick:
        payload["table1"] = table1(data, 30)
    path = write("bench_fit" + ("_quick" if args.quick else ""), payload)
    print(path.read_text())


if __name__ == "__main__":
    main()
