"""Benchmark: fuse a dense L0 -> L1 -> L2 pair from T samples; streaming moments vs naive lstsq.

Command (the issue's size; minutes on a small CPU)::

    PYTHONPATH=. python benchmarks/fuse_dense.py --width 1024 --samples 100000 --out bench.json

Writes JSON: seconds for ``jp.fuse`` (streaming moments + Cholesky solve; data generated batch by
batch and never materialized), the bytes of the moments state (``O(L0^2 + L0 L2)``, independent of
T), the process's peak RSS, and the same fit by NumPy ``lstsq`` over all materialized samples
(``[a0, 1] -> W2 H1(a0) + b2``) with the max kernel difference and the time ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxprune as jp


class Net(nn.Module):
    """A user's dense-relu-dense pair (the second layer's output is the target)."""

    width: int

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(self.width)(h)


def _batches(width, samples, batch, seed=0):
    rng = np.random.default_rng(seed)
    # well conditioned (singular values in about [0.4, 1.6]) so both solutions are well defined
    mix = np.eye(width, dtype=np.float32) + 0.3 * rng.normal(size=(width, width)).astype(
        np.float32
    ) / np.sqrt(width)
    for i in range(0, samples, batch):
        n = min(batch, samples - i)
        yield rng.normal(size=(n, width)).astype(np.float32) @ mix + 0.5


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--no-naive", action="store_true", help="skip the materialized NumPy lstsq")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    w = args.width
    net = Net(w)
    variables = jax.jit(net.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, w)))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    batches = _batches(w, args.samples, args.batch)
    _, q, mse = jp.fuse(net, variables, ("Dense_0", "Dense_1"), batches)
    jax.block_until_ready(q)
    t_fuse = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    state_bytes = 4 * (1 + 2 * w + w * w + w * w + w)
    res = {
        "width": w,
        "samples": args.samples,
        "batch": args.batch,
        "device": str(jax.devices()[0]),
        "fuse_seconds": t_fuse,
        "fusion_mse": float(mse),
        "moments_state_bytes": state_bytes,
        "peak_rss_mb_before": rss0 / 1024,
        "peak_rss_mb_after_fuse": rss1 / 1024,
    }
    if not args.no_naive:
        x = np.concatenate(list(_batches(w, args.samples, args.batch)))
        apply = jax.jit(net.apply)
        t = np.concatenate(
            [np.asarray(apply(variables, x[i : i + 4096])) for i in range(0, len(x), 4096)]
        )
        t0 = time.perf_counter()
        sol = np.linalg.lstsq(np.c_[x, np.ones(len(x), np.float32)], t, rcond=None)[0]
        res["naive_lstsq_seconds"] = time.perf_counter() - t0
        res["naive_over_fuse_time_ratio"] = res["naive_lstsq_seconds"] / t_fuse
        res["max_abs_kernel_difference"] = float(
            np.abs(sol[:-1] - np.asarray(q["params"]["Dense_0"]["kernel"])).max()
        )
        res["max_abs_kernel"] = float(np.abs(sol[:-1]).max())
        res["peak_rss_mb_after_naive"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
