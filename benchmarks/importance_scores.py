"""Importance scores for every unit group of a CIFAR ResNet against one forward-backward pass.

Run: ``python -m benchmarks.importance_scores [--depth 20] [--batch 32]`` (writes
``benchmarks/results/importance_scores.json``; ``--quick``: batch 8, ``..._quick.json``).
Builds ``jp.models.CifarResNet(depth)``, traces it once, and times, in the same run and
alternating so that load on the machine hits all alike, the jitted
``jp.analysis.importance(graph, variables, (x, y), method)`` for ``magnitude``, ``taylor``
and ``activation`` beside a jitted ``jax.value_and_grad`` of the cross-entropy through
``model.apply`` on the same batch (the baseline: one forward-backward pass). Target: every
method <= 2 forward-backward passes. Also reports the first call of each method on the
model (tracing it and compiling the scores) beside the baseline's first call (compiling it).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np
import optax

import jaxprune as jp
from benchmarks._util import write


def timed(f, *args, reps=5):
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="batch 8, one round")
    ap.add_argument("--out", default=None, help="folder for the JSON (default: results)")
    a = ap.parse_args(argv)
    if a.quick:
        a.batch, a.rounds = 8, 1
    model = jp.models.CifarResNet(depth=a.depth)
    x = jax.random.normal(jax.random.key(1), (a.batch, 32, 32, 3))
    y = jax.random.randint(jax.random.key(2), (a.batch,), 0, 10)
    v = model.init(jax.random.key(0), x[:1])
    graph = jp.trace(model, v, x)

    def loss(params, x, y):
        logits = model.apply({**v, "params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    fwd_bwd = jax.jit(jax.value_and_grad(loss))
    methods = jp.analysis.IMPORTANCE_METHODS
    scorers = {
        m: jax.jit(
            lambda v, x, y, m=m: jp.analysis.importance(graph, v, (x, y), m, "cross_entropy")
        )
        for m in methods
    }
    t = time.perf_counter()
    jax.block_until_ready(fwd_bwd(v["params"], x, y))
    first = {"forward_backward": time.perf_counter() - t}  # compile and run
    for m in methods:
        t = time.perf_counter()
        jax.block_until_ready(jp.analysis.importance(model, v, (x, y), m, "cross_entropy"))
        first[m] = time.perf_counter() - t
    times = {"forward_backward": [], **{m: [] for m in methods}}
    for _ in range(a.rounds):
        times["forward_backward"].append(timed(fwd_bwd, v["params"], x, y))
        for m in methods:
            times[m].append(timed(scorers[m], v, x, y))
    best = {k: float(np.min(t)) for k, t in times.items()}
    res = {
        "model": f"CifarResNet(depth={a.depth})",
        "batch": a.batch,
        "units": len(graph.units),
        "unit_entries": int(sum(u.width for u in graph.units.values())),
        "seconds_jitted": best,
        "over_forward_backward": {m: best[m] / best["forward_backward"] for m in methods},
        "seconds_first_call": first,
        "target": "every method <= 2 forward-backward passes (jitted, same batch, same run)",
    }
    print(json.dumps(res, indent=1))
    name = "importance_scores" + ("_quick" if a.quick else "")
    path = write(name, res, a.out)
    print(path)
    return path


if __name__ == "__main__":
    main()
