"""Pruning a ResNet-56-shaped linen model to about half its MACs: jitted forward time.

Run: ``python -m benchmarks.prune_resnet [--batch 256]`` (writes
``benchmarks/results/prune_resnet.json``). Builds a CIFAR
ResNet-56 (3 stages x 9 basic blocks, 16/32/64 channels, projection shortcuts), keeps the
first ``--keep`` (default half) of each block's inner channels (the output of every block's
first conv: both convs of the block lose that fraction of their MACs, so the network loses
about half), prunes with ``jp.prune_units`` and times the jitted forward at ``--batch``
before and after, and beside the same narrower architecture written by hand (issue target:
pruned / hand-written <= 1.05; speed-up >= 1.6x on CPU). Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxprune as jp
from benchmarks._util import write


class Block(nn.Module):
    features: int
    strides: int = 1
    inner: int | None = None  # the hand-written narrow model: width of the first conv

    @nn.compact
    def __call__(self, x):
        y = nn.relu(
            nn.BatchNorm(use_running_average=True)(
                nn.Conv(self.inner or self.features, (3, 3), self.strides, use_bias=False)(x)
            )
        )
        y = nn.BatchNorm(use_running_average=True)(
            nn.Conv(self.features, (3, 3), use_bias=False)(y)
        )
        if x.shape != y.shape:
            x = nn.BatchNorm(use_running_average=True)(
                nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x)
            )
        return nn.relu(x + y)


class ResNet56(nn.Module):
    keep: float = 1.0  # < 1: the same architecture written by hand with narrower blocks

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(16, (3, 3))(x)))
        for stage, f in enumerate((16, 32, 64)):
            for b in range(9):
                inner = max(1, round(self.keep * f)) if self.keep < 1 else None
                x = Block(f, 2 if stage and b == 0 else 1, inner)(x)
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


def macs(graph, variables) -> int:
    """Multiply-accumulates per example: kernel size x output positions, per layer."""
    leaves = graph.model.leaves(variables)
    total = 0
    for layer in graph.layers.values():
        positions = int(np.prod(layer.out_shape[1:-1]))  # 1 for a dense layer on (N, C)
        total += int(np.prod(leaves[layer.kernel].shape)) * positions
    return total


def timed(f, *args, reps=10):
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--keep", type=float, default=0.5, help="fraction of inner channels kept")
    ap.add_argument("--out", default="prune_resnet", help="name of the JSON in benchmarks/results")
    a = ap.parse_args(argv)
    model = ResNet56()
    x = jnp.ones((a.batch, 32, 32, 3))
    v = model.init(jax.random.key(0), x[:1])
    graph = jp.trace(model, v, x[:1])
    keep = {}
    for name, unit in graph.units.items():
        if name.endswith("Conv_0") and name.startswith("Block"):  # inner channels of a block
            keep[name] = np.arange(unit.width) < max(1, round(a.keep * unit.width))
    result = jp.prune_units(model, v, keep, x[:1])
    narrow, nv = result.model, result.variables
    small = jp.trace(narrow, nv, x[:1])
    hand = ResNet56(keep=a.keep)  # the smaller architecture written by hand, same names
    before = jax.jit(model.apply)
    after = jax.jit(narrow.apply)
    by_hand = jax.jit(hand.apply)
    err = float(jnp.max(jnp.abs(after(nv, x[:1]) - graph.apply(v, x[:1], masks=keep)[:1])))
    hand_err = float(jnp.max(jnp.abs(by_hand(nv, x[:8]) - after(nv, x[:8]))))
    # Alternate the timings so load on the machine hits all three alike.
    t_before, t_after, t_hand = [], [], []
    for _ in range(3):
        t_before.append(timed(before, v, x, reps=5))
        t_after.append(timed(after, nv, x, reps=5))
        t_hand.append(timed(by_hand, nv, x, reps=5))
    t_before, t_after, t_hand = (float(np.min(t)) for t in (t_before, t_after, t_hand))
    res = {
        "batch": a.batch,
        "device": str(jax.devices()[0]),
        "params_before": sum(int(p.size) for p in jax.tree.leaves(v["params"])),
        "params_after": sum(int(p.size) for p in jax.tree.leaves(nv["params"])),
        "macs_before": macs(graph, v),
        "macs_after": macs(small, nv),
        "seconds_before": t_before,
        "seconds_after": t_after,
        "seconds_hand_written": t_hand,
        "speedup": t_before / t_after,
        "pruned_over_hand_written": t_after / t_hand,
        "max_abs_error_vs_masked": err,
        "max_abs_difference_vs_hand_written": hand_err,
    }
    res["macs_ratio"] = res["macs_after"] / res["macs_before"]
    print(json.dumps(res, indent=1))
    print(write(a.out, res))


if __name__ == "__main__":
    main()
