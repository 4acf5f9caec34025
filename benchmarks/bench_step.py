"""Train-step throughput: plain optax vs jaxprune transform chains, and the data-parallel step.

    python -m benchmarks.bench_step [--quick]

Writes ``benchmarks/results/bench_step.json``. Every figure is a ratio against a baseline timed
in the same run (machines are noisy): an MLP 784-300-100-10 at batch 128 with plain Adam is the
baseline; each jaxprune transform chain reports ``time / baseline`` (target <= 1.1 for freeze
masks). Steps run inside one compiled ``lax.scan`` so only device time is measured.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

import jaxprune as jp
from benchmarks._util import write

MLP = jp.models.MLP(hidden=(300, 100), out=10, out_activation="identity")


def _chains(params) -> dict:
    """Optimizers to compare; each entry is built from the public API only."""
    frozen = {layer: {k: layer == "relu_0" for k in leaves} for layer, leaves in params.items()}
    chains = {
        "adam": optax.adam(1e-3),
        "adam+optax.masked(set_to_zero, first layer)": optax.chain(
            optax.adam(1e-3), optax.masked(optax.set_to_zero(), frozen)
        ),
    }
    graph = jp.trace(MLP, {"params": params}, jnp.zeros((1, 784)))
    units = {name: jnp.zeros(u.width, bool) for name, u in graph.units.items()}
    chains["adam+freeze_units"] = optax.chain(optax.adam(1e-3), jp.transforms.freeze_units(units))
    return chains


def compile_steps(model, tx, params, batches):
    """A jitted program running ``len(batches)`` steps in one ``lax.scan``, and its input state."""
    step = jp.training.make_train_step(model, "cross_entropy", tx, jit=False)

    @jax.jit
    def run(params, opt_state, batches):
        def body(carry, batch):
            p, s, _ = step(*carry, batch)
            return (p, s), None

        return jax.lax.scan(body, (params, opt_state), batches)[0]

    state = tx.init(params)
    jax.block_until_ready(run(params, state, batches))
    return lambda: jax.block_until_ready(run(params, state, batches))


def time_interleaved(programs: dict, steps: int, repeats: int) -> dict:
    """Seconds per step of each program, best of ``repeats`` rounds that alternate the programs
    (so a slow spell of the machine hits every variant alike)."""
    best = dict.fromkeys(programs, float("inf"))
    for _ in range(repeats):
        for name, run in programs.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: t / steps for name, t in best.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    steps, repeats = (20, 3) if args.quick else (100, 10)
    key = jax.random.key(0)
    xs = jax.random.normal(key, (steps, 128, 784))
    ys = jax.random.randint(jax.random.key(1), (steps, 128), 0, 10)
    params = MLP.init(key, xs[0])["params"]
    programs = {
        name: compile_steps(MLP, tx, params, (xs, ys)) for name, tx in _chains(params).items()
    }
    results = time_interleaved(programs, steps, repeats)
    base = results["adam"]
    payload = {
        "model": "MLP 784-300-100-10, batch 128, cross-entropy",
        "seconds_per_step": results,
        "ratio_vs_adam": {k: v / base for k, v in results.items()},
        "steps_per_second_adam": 1 / base,
    }
    path = write("bench_step" + ("_quick" if args.quick else ""), payload)
    print(path.read_text())


if __name__ == "__main__":
    main()
