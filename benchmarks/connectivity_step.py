"""Masked / sign-flip training step vs training the same network's weights normally (paper 003).

The paper says connectivity training costs about as much as standard training. This times one
jitted Adam step (batch 25, as App. A) of the baseline (``kind=None``: weights trained) and of
free pruning and flipping (``train_scores``: only the scores train). The steps are timed in
alternating rounds (so a shared, noisy machine slows both alike) and the JSON reports the
median time per step and the median per-round ratio.

    python -m benchmarks.connectivity_step [--net lenet|conv2] [--rounds 30] [--out FILE.json]

Target: ratio <= 1.3 on CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np
import optax

import jaxprune as jp

SHAPES = {"lenet": (25, 28, 28, 1), "conv2": (25, 32, 32, 3)}


def _stepper(model, tx, x, y):
    params = jax.jit(model.init)(jax.random.key(0), x)["params"]
    step = jp.training.make_train_step(model, "cross_entropy", tx)
    state = [params, tx.init(params)]
    for _ in range(3):  # compile and warm up
        *state, _ = step(*state, (x, y))
    jax.block_until_ready(state)

    def run(n: int) -> float:
        nonlocal state
        t = time.perf_counter()
        for _ in range(n):
            *state, _ = step(*state, (x, y))
        jax.block_until_ready(state)
        return (time.perf_counter() - t) / n

    return run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default="lenet", choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.random(SHAPES[args.net], dtype=np.float32)
    y = rng.integers(0, 10, SHAPES[args.net][0]).astype(np.int32)
    build = {"lenet": jp.models.lenet_300_100, "conv2": jp.models.conv2}[args.net]
    runs = {
        "baseline": _stepper(build(kind=None), optax.adam(1e-3), x, y),
        "mask": _stepper(build(kind="mask"), jp.transforms.train_scores(optax.adam(1e-3)), x, y),
        "flip": _stepper(build(kind="flip"), jp.transforms.train_scores(optax.adam(1e-3)), x, y),
    }
    times = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, run in runs.items():
            times[k].append(run(args.steps))
    result = {
        "net": args.net,
        "batch": SHAPES[args.net][0],
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "backend": jax.default_backend(),
        "machine": platform.machine(),
        "jax": jax.__version__,
    }
    base = np.asarray(times["baseline"])
    for k, t in times.items():
        result[f"{k}_s_per_step"] = float(np.median(t))
        if k != "baseline":
            result[f"{k}_ratio"] = float(np.median(np.asarray(t) / base))
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
