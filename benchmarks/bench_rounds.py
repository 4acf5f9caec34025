"""Speed of one Table-1 cell of paper 002: ``train_rounds`` on S seeds vmapped vs one by one.

    python -m benchmarks.bench_rounds            # LW, alpha 1, 10 seeds, K=3, N=3, 200 steps
    python -m benchmarks.bench_rounds --quick    # 4 seeds, N=1, 20 steps per round

Writes ``benchmarks/results/bench_rounds[_quick].json`` (or ``bench_rounds.json`` into
``--out``): the wall time of one ``train_rounds`` call on S seeds and of S calls with one
seed each (the same keys, so the same runs), compilation excluded (each batch shape is
compiled by a warm-up call first), their ratio measured in the same process, and the largest
difference of the final training losses between the two (float reassociation only).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import optax

import jaxprune as jp
from benchmarks._util import write


def _timed(fn):
    t0 = time.perf_counter()
    res = fn()
    jax.block_until_ready(res.variables)
    return res, time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--method", default="lw", choices=jp.training.METHODS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    seeds = args.seeds or (4 if args.quick else 10)
    steps, n = (20, 1) if args.quick else (200, 3)
    model = jp.models.BlockMLP(hidden=(32, 32), out=8)
    rounds = len(model.lw_blocks()) * n
    data, _ = jp.data.signal_task(jax.random.key(0), alpha=1.0, n_test=8)
    keys = jax.random.split(jax.random.key(1), seeds)
    kw = dict(method=args.method, optimizer=optax.sgd(0.05), steps_per_round=steps, rounds=rounds)
    run = lambda k: jp.training.train_rounds(model, data, keys=k, **kw, loss="cross_entropy")

    _, compile_batched = _timed(lambda: run(keys))  # compile + first run (batch of S)
    batched, t_batched = _timed(lambda: run(keys))
    _timed(lambda: run(keys[:1]))  # compile (batch of 1)
    t0 = time.perf_counter()
    singles = [_timed(lambda i=i: run(keys[i : i + 1]))[0] for i in range(seeds)]
    t_single = time.perf_counter() - t0
    loss_single = np.array([np.asarray(s.loss)[0] for s in singles])
    loss_batched = np.asarray(batched.loss)
    payload = {
        "setting": {
            "method": args.method,
            "seeds": seeds,
            "K": 3,
            "N": n,
            "steps_per_round": steps,
            "total_steps": rounds * steps,
            "model": "BlockMLP(32, 32), signal task alpha=1, 256 examples, full batch",
        },
        "seconds_vmapped": t_batched,
        "seconds_one_by_one": t_single,
        "speedup": t_single / t_batched,
        "seconds_first_call_vmapped_with_compile": compile_batched,
        "max_abs_diff_final_train_loss": float(np.max(np.abs(loss_single - loss_batched))),
    }
    name = "bench_rounds" + ("_quick" if args.quick and not args.out else "")
    path = write(name, payload, args.out)
    print(
        f"{seeds} seeds, {args.method}, {rounds} x {steps} steps: vmapped {t_batched:.2f} s, "
        f"one by one {t_single:.2f} s, speedup {payload['speedup']:.2f}x (final-loss diff "
        f"{payload['max_abs_diff_final_train_loss']:.1e}) -> {path}"
    )
    return path


if __name__ == "__main__":
    main()
