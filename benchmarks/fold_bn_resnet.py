"""BatchNorm folding on a ResNet-50 at inference: jitted forward time before and after collapse.

Run: ``python benchmarks/fold_bn_resnet.py [--batch 8] [--size 112] [--out DIR]``. Builds the
``jp.models.ResNet50`` (torchvision's layout) with random running statistics, calls
``jp.collapse(model, variables, x, train=False)`` (every BatchNorm follows a conv, so all 53
fold into their convs), checks the outputs agree and times the jitted forward before, after
and of the same folded network written by hand (``ResNet50(norm=None)``: no BatchNorm,
biased convs, loaded with the collapsed variables), in three interleaved rounds of medians of
5. Writes ``benchmarks/results/fold_bn_resnet.json``: parameters, BatchNorm count, collapse
seconds, max |difference|, seconds per forward, the speed-up and the collapsed/hand-written
time ratio (target <= 1.05).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxprune as jp
from benchmarks._util import write
from jaxprune.models import ResNet50


def _median_seconds(fn, *args, repeats=10):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    model = ResNet50()
    x = jax.random.normal(jax.random.key(0), (args.batch, args.size, args.size, 3))
    v = jax.jit(model.init)(jax.random.key(1), x[:1])

    def bump(path, a):  # non-trivial running statistics: mean ~ N(0, 0.1), var in [0.5, 1.5]
        k = jax.random.fold_in(jax.random.key(2), hash(jax.tree_util.keystr(path)) % 2**31)
        if path[-1].key == "var":
            return 0.5 + jax.random.uniform(k, a.shape)
        return 0.1 * jax.random.normal(k, a.shape)

    stats = jax.tree_util.tree_map_with_path(bump, v["batch_stats"])
    v = {**v, "batch_stats": stats}
    t0 = time.perf_counter()
    result = jp.collapse(model, v, x[:1], model_kwargs={"train": False})
    small, sv = result.model, result.variables
    t_collapse = time.perf_counter() - t0
    before = jax.jit(lambda v, x: model.apply(v, x, train=False))
    after = jax.jit(lambda v, x: small.apply(v, x, train=False))
    y0, y1 = before(v, x), after(sv, x)
    n_bn = sum(
        1
        for p in jax.tree_util.tree_leaves_with_path(v["params"])
        if "bn" in str(p[0][-2].key) and str(p[0][-1].key) == "scale"
    )
    res = {
        "model": "jp.models.ResNet50",
        "batch": args.batch,
        "image": args.size,
        "params_before": sum(int(a.size) for a in jax.tree.leaves(v)),
        "params_after": sum(int(a.size) for a in jax.tree.leaves(sv)),
        "batchnorms_before": n_bn,
        "batch_stats_left": "batch_stats" in sv,
        "collapse_seconds": t_collapse,
        "max_abs_output_difference": float(jnp.abs(y0 - y1).max()),
        "max_abs_output": float(jnp.abs(y0).max()),
    }
    # the same folded network written by hand (no BatchNorm, biased convs), the folded weights
    hand_model = ResNet50(norm=None)
    hand = jax.jit(lambda v, x: hand_model.apply(v, x))
    res["max_abs_difference_vs_hand_written"] = float(jnp.abs(hand(sv, x) - y1).max())
    times = {"before": [], "after": [], "hand": []}
    for _ in range(3):  # interleaved rounds, so a busy machine slows all three alike
        times["before"].append(_median_seconds(before, v, x, repeats=5))
        times["after"].append(_median_seconds(after, sv, x, repeats=5))
        times["hand"].append(_median_seconds(hand, sv, x, repeats=5))
    res["forward_seconds_before"] = float(np.median(times["before"]))
    res["forward_seconds_after"] = float(np.median(times["after"]))
    res["forward_seconds_hand_written"] = float(np.median(times["hand"]))
    res["speedup"] = res["forward_seconds_before"] / res["forward_seconds_after"]
    res["collapsed_over_hand_written"] = (
        res["forward_seconds_after"] / res["forward_seconds_hand_written"]
    )
    res["target_collapsed_over_hand_written"] = 1.05
    path = write("fold_bn_resnet", res, args.out)
    print(path)
    for key, val in res.items():
        print(f"{key}: {val}")
    return res


if __name__ == "__main__":
    main()
