"""Masked / sign-flip training step vs training the same network's weights normally (paper 003).

The paper says connectivity training costs about as much as standard training. This times one
jitted Adam step (batch 25, as App. A) of the baseline (``kind=None``: weights trained) and of
free pruning and flipping (``train_scores``: only the scores train), built with
``make_train_step(..., trainable=is_score)`` so that the fixed weights are neither
differentiated nor copied. ``mask_full_tree`` / ``flip_full_tree`` are the same steps without
``trainable`` (every leaf goes through the step and the weights come back as updated-by-zero
copies), kept for comparison (``--no-full-tree`` skips them). The steps are timed in
alternating rounds (so a shared, noisy machine slows all alike) and the JSON reports the
median time per step and the median per-round ratio to the baseline.

    python -m benchmarks.connectivity_step [--nets lenet conv2] [--rounds 30] [--steps 20]
        [--no-full-tree] [--out FILE.json]

Target: ratio <= 1.3 on CPU. The last full run is saved as
``benchmarks/results/connectivity_step.json``:

    python -m benchmarks.connectivity_step --nets lenet conv2 \\
        --out benchmarks/results/connectivity_step.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np
import optax

import jaxprune as jp
from benchmarks._util import machine

SHAPES = {"lenet": (25, 28, 28, 1), "conv2": (25, 32, 32, 3)}
STEPS = {"lenet": 20, "conv2": 3}  # per round: a conv2 step takes about 0.5 s on 2 cores
TARGET = 1.3  # the target for the masked / baseline time per step on CPU


def _stepper(model, tx, x, y, trainable=None):
    params = jax.jit(model.init)(jax.random.key(0), x)["params"]
    step = jp.training.make_train_step(model, "cross_entropy", tx, trainable=trainable)
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


def _bench(net: str, rounds: int, steps: int, full_tree: bool) -> dict:
    rng = np.random.default_rng(0)
    x = rng.random(SHAPES[net], dtype=np.float32)
    y = rng.integers(0, 10, SHAPES[net][0]).astype(np.int32)
    build = {"lenet": jp.models.lenet_300_100, "conv2": jp.models.conv2}[net]
    runs = {"baseline": _stepper(build(kind=None), optax.adam(1e-3), x, y)}
    for kind in ("mask", "flip"):
        tx = jp.transforms.train_scores(optax.adam(1e-3))
        runs[kind] = _stepper(build(kind=kind), tx, x, y, jp.models.is_score)
        if full_tree:
            runs[f"{kind}_full_tree"] = _stepper(build(kind=kind), tx, x, y)
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, run in runs.items():
            times[k].append(run(steps))
    result = {"net": net, "batch": SHAPES[net][0], "rounds": rounds, "steps_per_round": steps}
    base = np.asarray(times["baseline"])
    for k, t in times.items():
        result[f"{k}_s_per_step"] = float(np.median(t))
        if k != "baseline":
            result[f"{k}_ratio"] = float(np.median(np.asarray(t) / base))
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=["lenet"], choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--steps", type=int, default=None, help=f"steps per round (default {STEPS})"
    )
    parser.add_argument("--no-full-tree", action="store_true", help="skip the *_full_tree steps")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: print only)")
    args = parser.parse_args(argv)
    result = {"target_ratio": TARGET, "nets": {}}
    for net in args.nets:
        r = _bench(net, args.rounds, args.steps or STEPS[net], not args.no_full_tree)
        result["nets"][net] = r
        print(json.dumps(r, indent=1), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine(), **result}, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
