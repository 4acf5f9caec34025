"""Benchmark: fuse a dense L0 -> L1 -> L2 pair from T samples; streaming moments vs naive lstsq.

Command (the issue's size; minutes on a small CPU)::

    PYTHONPATH=. python benchmarks/fuse_dense.py --width 1024 --samples 10000 100000

For each sample count, in a fresh process: seconds for ``jp.fuse`` (streaming moments +
Cholesky solve; data generated batch by batch and never materialized) and the process's peak
RSS, beside the megabytes the samples would take stored; the bytes of the moments state
(``O(L0^2 + L0 L2)``, independent of T); and, on ``--naive-samples`` samples, the same fit by
NumPy ``lstsq`` over all materialized samples (``[a0, 1] -> W2 H1(a0) + b2``) with the max
kernel difference. Writes ``benchmarks/results/fuse_dense.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxprune as jp
from benchmarks._util import write


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


def _fuse_once(w, samples, batch):
    """Fuses from ``samples`` streamed samples in this process; returns its measurements."""
    net = Net(w)
    variables = jax.jit(net.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, w)))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = jp.fuse(net, variables, ("Dense_0", "Dense_1"), _batches(w, samples, batch))
    q = result.variables
    mse = result.report.mse[("Dense_0", "Dense_1")]
    jax.block_until_ready(q)
    return {
        "samples": samples,
        "fuse_seconds": time.perf_counter() - t0,
        "fusion_mse": float(mse),
        "peak_rss_mb_before": rss0 / 1024,
        "peak_rss_mb_after_fuse": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "stored_samples_mb_if_materialized": samples * 2 * w * 4 / 2**20,  # a0 and the target
    }


def _child(w, samples, batch, conn):
    conn.send(_fuse_once(w, samples, batch))
    conn.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--samples", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--naive-samples", type=int, default=20_000, help="0 skips the lstsq")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    w = args.width
    ctx = multiprocessing.get_context("spawn")
    runs = []
    for n in args.samples:  # each in a fresh process: peak RSS is per process
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(w, n, args.batch, child))
        proc.start()
        runs.append(parent.recv())
        proc.join()
    res = {
        "width": w,
        "batch": args.batch,
        "device": str(jax.devices()[0]),
        "moments_state_bytes": 4 * (1 + 2 * w + w * w + w * w + w),
        "runs": runs,
        "peak_rss_mb_ratio_largest_over_smallest": runs[-1]["peak_rss_mb_after_fuse"]
        / runs[0]["peak_rss_mb_after_fuse"],
    }
    if args.naive_samples:
        n = args.naive_samples
        net = Net(w)
        variables = jax.jit(net.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, w)))
        t0 = time.perf_counter()
        result = jp.fuse(net, variables, ("Dense_0", "Dense_1"), _batches(w, n, args.batch))
        q = result.variables
        jax.block_until_ready(q)
        t_fuse = time.perf_counter() - t0
        x = np.concatenate(list(_batches(w, n, args.batch)))
        apply = jax.jit(net.apply)
        t = np.concatenate(
            [np.asarray(apply(variables, x[i : i + 4096])) for i in range(0, len(x), 4096)]
        )
        t0 = time.perf_counter()
        sol = np.linalg.lstsq(np.c_[x, np.ones(len(x), np.float32)], t, rcond=None)[0]
        res["naive"] = {
            "samples": n,
            "fuse_seconds": t_fuse,
            "lstsq_seconds": time.perf_counter() - t0,
            "max_abs_kernel_difference": float(
                np.abs(sol[:-1] - np.asarray(q["params"]["Dense_0"]["kernel"])).max()
            ),
            "max_abs_kernel": float(np.abs(sol[:-1]).max()),
        }
    path = write("fuse_dense", res, args.out)
    print(path)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
