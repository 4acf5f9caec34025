"""Benchmark: paper 001's Table I conv-dense fusion (row 5 -> 4) on a CPU; the solver before/after.

Command (minutes on a small CPU)::

    PYTHONPATH=. python benchmarks/fuse_conv.py --samples 300

``jp.models.fusion_net("I", 5)`` (CIFAR-10's 32x32x3 input, convs 32-32-64-64-128) with the
last conv fused into the 10-way head: the fused dense layer reads the 8x8x64 = 4,096 inputs
of ``conv_4``. On generated images (the timing does not depend on the pixels), seconds for
``jp.fuse`` end to end, then, on the same moments (streamed here with the public
``jp.analysis.moments_update`` from the captured activations), the previous solver: an
``eigvalsh`` of ``C_a0`` (computed even when fewer samples than inputs already decided the
least-squares path) and ``jnp.linalg.lstsq``'s SVD, against the current one, the minimum-norm
solution from ``eigh`` of the symmetric ``C_a0``; with the max kernel difference between
``jp.fuse``'s kernel and the previous solver's. Writes ``benchmarks/results/fuse_conv.json``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxprune as jp
from benchmarks._util import write


def _timed(f, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(f(*args))
    return out, time.perf_counter() - t0


def _rows(net, variables, x):
    """``(a0 flattened, out's pre-activation)`` of the pair (conv_4, out), from the user's API."""
    _, state = net.apply(variables, x, capture_intermediates=True)
    inter = state["intermediates"]
    a0 = nn.max_pool(nn.relu(inter["conv_3"]["__call__"][0]), (2, 2), strides=(2, 2))
    return a0.reshape(len(x), -1), inter["out"]["__call__"][0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    net = jp.models.fusion_net("I", 5)
    pair = jp.models.fusion_layers("I", 5)
    x = jax.random.normal(jax.random.key(0), (args.samples, 32, 32, 3))
    variables = net.init(jax.random.key(1), x[:1])
    batches = [x[i : i + args.batch] for i in range(0, len(x), args.batch)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jp.rewrites.FusionWarning)
        fused, t_fuse = _timed(lambda: jp.fuse(net, variables, pair, data=batches).variables)
    kernel = np.asarray(fused["params"][pair[0]]["kernel"])

    rows = jax.jit(lambda b: _rows(net, variables, b))
    a0, y = rows(batches[0])
    m = jp.analysis.moments_init(a0.shape[1], y.shape[1])
    for b in batches:
        m = jp.analysis.moments_update(m, *rows(b))
    c, cxy = m.cov_xx(), m.cov_xy()
    rcond = c.shape[0] * float(np.finfo(np.float32).eps)
    _, t_eig = _timed(jax.jit(jnp.linalg.eigvalsh), c)
    old, t_lstsq = _timed(jax.jit(lambda c, b: jnp.linalg.lstsq(c, b, rcond=rcond)[0]), c, cxy)
    res = {
        "network": "fusion_net('I', 5), fuse ('conv_4', 'out')",
        "samples": args.samples,
        "fused_inputs": int(c.shape[0]),
        "fuse_seconds": t_fuse,
        "previous_solver_seconds": {"eigvalsh": t_eig, "lstsq_svd": t_lstsq},
        "max_abs_kernel_difference_vs_previous_solver": float(np.abs(kernel - old).max()),
        "max_abs_kernel": float(np.abs(old).max()),
    }
    path = write("fuse_conv", res, args.out)
    print(path)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
