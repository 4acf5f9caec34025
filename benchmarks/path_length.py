"""Time APL / NAPL (paper 004, Prop. 3.1) on ResNet-style graphs; writes JSON.

    PYTHONPATH=. python benchmarks/path_length.py [--out benchmarks/path_length.json]

ResNets v2 with shortcut "A" (paper 004's ResNet56 at 9 blocks per stage) are written as user
linen models and traced (:func:`jaxprune.trace`); the dynamic program is linear in the size of
the traced data-flow graph. Reports the trace time and the APL/NAPL times separately.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxprune as jp
from jaxprune.analysis import average_path_length, normalized_average_path_length


class Block(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.BatchNorm(use_running_average=True)(x))
        y = nn.Conv(self.features, (3, 3), strides=self.strides, use_bias=False)(h)
        y = nn.relu(nn.BatchNorm(use_running_average=True)(y))
        y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
        if x.shape[-1] != self.features:  # shortcut "A": subsample, append zero channels
            x = x[:, :: self.strides, :: self.strides, :]
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.features - x.shape[-1])))
        return y + x


class ResNet(nn.Module):
    blocks_per_stage: int

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(16, (3, 3), use_bias=False)(x)
        for stage, w in enumerate((16, 32, 64)):
            for b in range(self.blocks_per_stage):
                x = Block(w, strides=2 if stage and not b else 1)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True)(x))
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


def bench(blocks_per_stage: int, repeats: int = 5) -> dict:
    model = ResNet(blocks_per_stage)
    x = jnp.ones((1, 32, 32, 3))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    start = time.perf_counter()
    graph = jp.trace(model, variables, x)
    trace_seconds = time.perf_counter() - start
    rng = np.random.default_rng(0)
    active = {n: rng.random(u.width) < 0.3 for n, u in graph.units.items()}
    out = {"depth": 6 * blocks_per_stage + 2, "units": len(graph.units)}
    out["trace_seconds"] = trace_seconds
    for name, fn in (("apl", average_path_length), ("napl", normalized_average_path_length)):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            value = fn(graph, active)
            times.append(time.perf_counter() - start)
        out[name] = value
        out[f"{name}_seconds_median"] = float(np.median(times))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/path_length.json"))
    args = parser.parse_args()
    results = {
        "machine": platform.platform(),
        "resnets": {f"resnet{6 * n + 2}": bench(n) for n in (3, 9, 18)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
