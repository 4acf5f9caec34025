"""Unit ablation on a small ResNet: vmapped one-hot masks (``jp.analysis.unit_ablation``)
against a Python loop of one jitted masked forward pass per unit.

    python -m benchmarks.bench_ablation [--quick] [--out PATH]

Writes ``benchmarks/results/bench_ablation.json``: seconds per full ablation (every unit), each
the best of ``repeats`` after a compile run, for several ``chunk_size`` values, and the loop.
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import jaxprune as jp
from benchmarks._util import write


class Block(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        norm = lambda: nn.BatchNorm(use_running_average=True)  # noqa: E731
        y = nn.relu(norm()(nn.Conv(self.features, (3, 3), self.strides, use_bias=False)(x)))
        y = norm()(nn.Conv(self.features, (3, 3), use_bias=False)(y))
        if x.shape != y.shape:
            x = norm()(nn.Conv(self.features, (1, 1), self.strides, use_bias=False)(x))
        return nn.relu(y + x)


class ResNet(nn.Module):
    widths: tuple[int, ...] = (16, 32, 64)

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(self.widths[0], (3, 3))(x)))
        for i, w in enumerate(self.widths):
            x = Block(w, strides=1 if i == 0 else 2)(x)
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


def _ce(logits, labels):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def _best(fn, repeats):
    jax.block_until_ready(fn())  # compile
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    widths, batch, size, repeats = ((4, 8), 16, 8, 2) if args.quick else ((16, 32, 64), 64, 16, 3)
    model = ResNet(widths)
    x = jax.random.normal(jax.random.key(0), (batch, size, size, 3))
    y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
    variables = model.init(jax.random.key(2), x)
    graph = jp.trace(model, variables, x)
    n_units = sum(u.width for u in graph.units.values())

    timings = {}
    for chunk in (8, 16, 32, 64, n_units):
        run = jax.jit(
            lambda v, c=chunk: jp.analysis.unit_ablation(
                graph, v, (x, y), "cross_entropy", chunk_size=c
            )
        )
        timings[f"vmapped_chunk_{chunk}"] = _best(lambda r=run: r(variables), repeats)

    per_unit = {
        name: jax.jit(lambda v, m, name=name: _ce(graph.apply(v, x, masks={name: m}), y))
        for name in graph.units
    }

    def loop():
        out = []
        for name, u in graph.units.items():
            for i in range(u.width):
                out.append(per_unit[name](variables, jnp.ones(u.width).at[i].set(0)))
        return out

    timings["python_loop"] = _best(loop, repeats)
    payload = {
        "model": f"ResNet widths {widths}, batch {batch} of {size}x{size}x3, {n_units} units",
        "seconds_per_ablation": timings,
        "loop_over_vmapped": {
            k: timings["python_loop"] / v for k, v in timings.items() if k != "python_loop"
        },
    }
    path = write("bench_ablation" + ("_quick" if args.quick else ""), payload, args.out)
    print(path.read_text())


if __name__ == "__main__":
    main()
