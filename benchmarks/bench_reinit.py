"""Speed of the reinitialization procedure (paper 000, Table 3): vmapped seeds vs one by one.

    python -m benchmarks.bench_reinit            # 16 seeds, 15 units / 1 reinit, 32x32 star
    python -m benchmarks.bench_reinit --quick    # 4 seeds, phases capped at 30 epochs

Writes ``benchmarks/results/bench_reinit.json``: the wall time of ``train_with_reinit`` on N
seeds in one call, and of N calls with one seed each (the same keys, so the same runs),
compilation excluded (each shape is compiled by a warm-up call first), and their ratio;
``seconds_vmapped_first_call`` is that warm-up call (compilation included).
Each training phase is a ``fit`` of all seeds, from which finished seeds are dropped (once
they took half the row-epochs since the last shrink), so the vmapped call does at most about
twice the sequential one's work; ``epochs_*`` report both.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import optax

import jaxprune as jp
from benchmarks._util import write


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    n = args.seeds or (4 if args.quick else 16)
    cap = 30 if args.quick else 100_000
    model = jp.models.MLP(hidden=(15,), linear_after=((15, 15, 15),))
    data = jp.data.paint("star", size=args.size)
    keys = jax.random.split(jax.random.key(0), n)
    kw = dict(loss="mse", optimizer=optax.adam(1e-3), reinits=1, max_epochs=cap)

    t0 = time.perf_counter()
    jp.training.train_with_reinit(model, data, keys=keys, **kw)  # compile (batch of n)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = jp.training.train_with_reinit(model, data, keys=keys, **kw)
    t_batched = time.perf_counter() - t0

    jp.training.train_with_reinit(model, data, keys=keys[:1], **kw)  # compile (batch of 1)
    t0 = time.perf_counter()
    singles = [
        jp.training.train_with_reinit(model, data, keys=keys[i : i + 1], **kw) for i in range(n)
    ]
    t_single = time.perf_counter() - t0
    single_loss = np.array([np.asarray(s.loss)[0] for s in singles])
    rel_diff = float(np.max(np.abs(single_loss - np.asarray(batched.loss)) / single_loss))
    same_epochs = [int(np.asarray(s.epochs)[0]) for s in singles] == batched.epochs.tolist()
    payload = {
        "setting": {"units": 15, "reinits": 1, "size": args.size, "seeds": n, "max_epochs": cap},
        "seconds_vmapped": t_batched,
        # the same call in a fresh process, compilation of every batch size included
        "seconds_vmapped_first_call": t_first,
        "seconds_one_by_one": t_single,
        "speedup": t_single / t_batched,
        "epochs_vmapped": np.asarray(batched.epochs).tolist(),
        "epochs_one_by_one": [int(np.asarray(s.epochs)[0]) for s in singles],
        # Same runs: identical epoch counts; losses equal up to float reassociation (batched
        # vs unbatched matmuls), amplified over hundreds of epochs.
        "same_epochs": bool(same_epochs),
        "max_rel_diff_final_loss": rel_diff,
    }
    path = write("bench_reinit", payload, args.out)
    print(
        f"{n} seeds: vmapped {t_batched:.1f} s, one by one {t_single:.1f} s, "
        f"speedup {payload['speedup']:.2f}x (same epochs: {same_epochs}, loss rel. diff "
        f"{rel_diff:.1e}) -> {path}"
    )
    return path


if __name__ == "__main__":
    main()
