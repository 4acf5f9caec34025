"""Pruning a ResNet-56-shaped linen model to about half its MACs: jitted forward time.

Run: ``python benchmarks/prune_resnet.py [--out results.json] [--batch 256]``. Builds a CIFAR
ResNet-56 (3 stages x 9 basic blocks, 16/32/64 channels, projection shortcuts), keeps the
first ``--keep`` (default half) of each block's inner channels (the output of every block's
first conv: both convs of the block lose that fraction of their MACs, so the network loses
about half), prunes with ``jp.prune_units`` and times the jitted forward at ``--batch``
before and after. Writes JSON: parameters, MACs, seconds per forward (median of 10).
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


class Block(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        y = nn.relu(
            nn.BatchNorm(use_running_average=True)(
                nn.Conv(self.features, (3, 3), strides=self.strides, use_bias=False)(x)
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
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(16, (3, 3))(x)))
        for stage, f in enumerate((16, 32, 64)):
            for b in range(9):
                x = Block(f, 2 if stage and b == 0 else 1)(x)
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


def macs(graph) -> int:
    total = 0
    for layer in graph.layers.values():
        k = np.prod(layer.out_shape[1:])
        total += int(k) * int(layer.in_shape[-1]) * (9 if layer.op == "conv" else 1)
    return total  # approximate: every conv counted as 3x3 (1x1 shortcuts are few)


def timed(f, *args, reps=10):
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--keep", type=float, default=0.5, help="fraction of inner channels kept")
    ap.add_argument("--out", default="prune_resnet.json")
    a = ap.parse_args()
    model = ResNet56()
    x = jnp.ones((a.batch, 32, 32, 3))
    v = model.init(jax.random.key(0), x[:1])
    graph = jp.trace(model, v, x[:1])
    keep = {}
    for name, unit in graph.units.items():
        if name.endswith("Conv_0") and name.startswith("Block"):  # inner channels of a block
            keep[name] = np.arange(unit.width) < max(1, round(a.keep * unit.width))
    narrow, nv = jp.prune_units(model, v, keep, x[:1])
    small = jp.trace(narrow, nv, x[:1])
    before = jax.jit(model.apply)
    after = jax.jit(narrow.apply)
    err = float(jnp.max(jnp.abs(after(nv, x[:1]) - graph.apply(v, x[:1], masks=keep)[:1])))
    res = {
        "batch": a.batch,
        "device": str(jax.devices()[0]),
        "params_before": sum(int(p.size) for p in jax.tree.leaves(v["params"])),
        "params_after": sum(int(p.size) for p in jax.tree.leaves(nv["params"])),
        "macs_before": macs(graph),
        "macs_after": macs(small),
        "seconds_before": timed(before, v, x),
        "seconds_after": timed(after, nv, x),
        "max_abs_error_vs_masked": err,
    }
    print(json.dumps(res, indent=1))
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
