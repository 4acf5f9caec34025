"""Time ``jp.trace`` (jaxpr + layer graph) on ResNet-50 (224x224) and ResNet-56 (32x32).

    PYTHONPATH=. python -m benchmarks.trace_graph [--repeats 3] [--out DIR]

Targets (issue: bring your own model, part 1): ResNet-50 at batch 1 <= 3 s, ResNet-56 <= 1 s
on a 2-core CPU. Variables are created abstractly (``jax.eval_shape``), so the time is the
trace and the graph, not the initialization.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxprune as jp
from benchmarks._util import write
from jaxprune.models import CifarResNet, ResNet50


def _time(model, shape, repeats):
    x = jnp.zeros(shape)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
    times, graph = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        graph = jp.trace(model, variables, x, model_kwargs={"train": False})
        times.append(time.perf_counter() - start)
    return {
        "seconds_median": float(np.median(times)),
        "seconds_all": times,
        "layers": len(graph.layers),
        "unit_groups": len(graph.units),
        "units": int(sum(u.width for u in graph.units.values())),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    results = {
        "resnet56_32x32_batch1": {
            **_time(CifarResNet(depth=56), (1, 32, 32, 3), args.repeats),
            "target_s": 1,
        },
        "resnet50_224x224_batch1": {
            **_time(ResNet50(), (1, 224, 224, 3), args.repeats),
            "target_s": 3,
        },
    }
    for name, r in results.items():
        print(
            f"{name}: {r['seconds_median']:.2f} s (target {r['target_s']} s), "
            f"{r['layers']} layers, {r['unit_groups']} unit groups"
        )
    print(write("trace_graph", {"results": results}, args.out))


if __name__ == "__main__":
    main()
