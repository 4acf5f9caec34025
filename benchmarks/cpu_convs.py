"""Conv-net training steps inside compiled loops on XLA:CPU, with and without canonical convs.

    python -m benchmarks.cpu_convs            # paper 002's scnn on digits, batch 256
    python -m benchmarks.cpu_convs --quick    # a small scnn

Times SGD steps of ``jp.models.SCNN`` (8x8 digits images, batch 256) in four forms:

* ``scan`` / ``scan_canonical``: ``--steps`` steps as one ``lax.scan`` compiled with
  ``jax.jit`` (the peer: what a user's own scanned loop gets) or with ``jax.jit`` of
  :func:`jaxprune.training.cpu_rewrite` of it (what the library's loops do on CPU);
* ``python``: the same step jitted alone and called from Python (no loop in the program);
* ``vmap_scan`` / ``vmap_scan_canonical``: ``--seeds`` seeds vmapped inside the scan, the
  peer's per-seed kernels becoming one grouped convolution, ours one convolution per seed.

Compile time is excluded (one warm-up call each); each time is the median of ``--repeats``
calls, interleaved. Writes ``benchmarks/results/cpu_convs.json`` with milliseconds per step
(per seed-step for the vmapped forms) and the ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprune as jp
from benchmarks._util import write


def _step_fn(model, x, y, tx):
    def loss(p):
        out = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    def step(p, s):
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        model = jp.models.SCNN(features=(8, 8, 16, 16), dense=32, out=10)
    else:
        model = jp.models.SCNN(out=10)
    x, y = jp.data.image_dataset("digits", "train")
    x, y = jnp.asarray(x[:256]), jnp.asarray(y[:256])
    tx = optax.sgd(0.003, momentum=0.9)
    step = _step_fn(model, x, y, tx)
    keys = jax.random.split(jax.random.key(0), args.seeds)
    p = model.init(keys[0], x[:1])["params"]
    s = tx.init(p)
    ps = jax.vmap(lambda k: model.init(k, x[:1])["params"])(keys)
    ss = jax.vmap(tx.init)(ps)

    def scan(f):
        return lambda p, s: jax.lax.scan(
            lambda c, _: (f(*c), None), (p, s), None, length=args.steps
        )[0]

    peer_jit = jax.jit
    library_jit = lambda f: jax.jit(jp.training.cpu_rewrite(f))  # noqa: E731
    one = jax.jit(step)

    def python_loop(p, s):
        for _ in range(args.steps):
            p, s = one(p, s)
        return p, s

    forms = {
        "scan": (peer_jit(scan(step)), (p, s), 1),
        "scan_canonical": (library_jit(scan(step)), (p, s), 1),
        "python": (python_loop, (p, s), 1),
        "vmap_scan": (peer_jit(scan(jax.vmap(step))), (ps, ss), args.seeds),
        "vmap_scan_canonical": (library_jit(scan(jax.vmap(step))), (ps, ss), args.seeds),
    }
    compile_s = {}
    for name, (fn, a, _) in forms.items():
        t = time.perf_counter()
        jax.block_until_ready(fn(*a))
        compile_s[name] = time.perf_counter() - t
    times = {name: [] for name in forms}
    for _ in range(args.repeats):
        for name, (fn, a, _) in forms.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(*a))
            times[name].append(time.perf_counter() - t)
    ms = {
        name: 1e3 * float(np.median(times[name])) / (args.steps * forms[name][2]) for name in forms
    }
    ratios = {
        "scan / scan_canonical": ms["scan"] / ms["scan_canonical"],
        "python / scan_canonical": ms["python"] / ms["scan_canonical"],
        "vmap_scan / vmap_scan_canonical": ms["vmap_scan"] / ms["vmap_scan_canonical"],
        "python / vmap_scan_canonical": ms["python"] / ms["vmap_scan_canonical"],
    }
    path = write(
        "cpu_convs",
        {
            "setting": {
                "model": f"SCNN(features={model.features}, dense={model.dense})",
                "batch": 256,
                "steps": args.steps,
                "seeds": args.seeds,
                "repeats": args.repeats,
            },
            "ms_per_step": ms,
            "first_call_seconds": compile_s,
            "ratios": ratios,
        },
        args.out,
    )
    for name, v in ms.items():
        print(f"{name:22s} {v:9.2f} ms per step")
    for name, v in ratios.items():
        print(f"{name:34s} {v:6.2f}x")
    print(f"-> {path}")
    return path


if __name__ == "__main__":
    main()
