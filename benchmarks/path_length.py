"""Time APL / NAPL (paper 004, Prop. 3.1) on ResNet-style graphs; writes JSON.

    PYTHONPATH=. python benchmarks/path_length.py [--out benchmarks/path_length.json]

The dynamic program is linear in the number of edges; ResNet56's graph (27 BasicBlocks,
16/32/64 channels, 3x3 convolutions) should take well under a second.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from jaxprune.analysis import average_path_length, normalized_average_path_length, residual_graph


def bench(blocks_per_stage: int, repeats: int = 5) -> dict:
    widths = [16] * blocks_per_stage + [32] * blocks_per_stage + [64] * blocks_per_stage
    graph = residual_graph(3, widths, block_size=2, out=10, multiplicity=9)
    rng = np.random.default_rng(0)
    active = {n: rng.random(graph.widths[n]) < 0.3 for n in graph.prelu}
    out = {"depth": 6 * blocks_per_stage + 2, "prelu_layers": len(graph.prelu)}
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
