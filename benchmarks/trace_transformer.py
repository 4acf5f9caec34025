"""Time ``jp.trace`` of a GPT-2-small-sized linen LM, and a pruned LM's jitted forward.

    PYTHONPATH=. python -m benchmarks.trace_transformer [--repeats 3] [--out DIR]
    PYTHONPATH=. python -m benchmarks.trace_transformer --quick --out DIR   # a tiny LM

1. ``jp.trace`` of a decoder-only LM written as users write it (12 layers, width 768, 12
   heads, MLP 3072, vocabulary 50257, tied unembedding, causal mask), batch 1 x 64 tokens.
   Target: <= 3 s on a 2-core CPU. Variables are created abstractly, so the time is the trace
   and the graph.
2. The jitted forward of the same LM with half its heads and half its MLP units removed by
   ``jp.prune_units``, against the unpruned LM and against the same narrower LM written by hand
   (6 heads of 64, MLP 1536), at batch x tokens ``--batch`` x ``--tokens``; median of
   ``--repeats`` calls after compilation, the three interleaved. Goals: >= 1.6x faster than
   unpruned at half the attention and MLP MACs; <= 1.05x the hand-written narrow LM.
"""

from __future__ import annotations

import argparse
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxprune as jp
from benchmarks._util import write


class GPT(nn.Module):
    """A GPT-2-style decoder-only LM (pre-norm blocks, learned positions, tied unembedding)."""

    vocab: int = 50257
    width: int = 768
    depth: int = 12
    heads: int = 12
    qkv: int | None = None
    mlp: int = 3072

    @nn.compact
    def __call__(self, ids):
        tok = nn.Embed(self.vocab, self.width)
        x = tok(ids) + nn.Embed(1024, self.width)(jnp.arange(ids.shape[-1]))
        mask = nn.make_causal_mask(ids)
        for _ in range(self.depth):
            h = nn.LayerNorm()(x)
            att = nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.qkv)
            x = x + att(h, mask=mask)
            h = nn.LayerNorm()(x)
            x = x + nn.Dense(self.width)(nn.gelu(nn.Dense(self.mlp)(h)))
        return tok.attend(nn.LayerNorm()(x))


def _zeros(model, ids):
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), ids))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _trace_time(model, ids, repeats):
    variables = _zeros(model, ids)
    times, graph = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        graph = jp.trace(model, variables, ids)
        times.append(time.perf_counter() - start)
    return graph, {
        "seconds_median": float(np.median(times)),
        "seconds_all": times,
        "layers": len(graph.layers),
        "unit_groups": len(graph.units),
        "heads": int(sum(u.width for u in graph.units.values() if u.kind == "heads")),
    }


def _forward_ms(runs: dict, ids, repeats) -> dict:
    """Median ms of each jitted ``apply(variables, ids)``, the runs interleaved (round robin)
    so that the shared machine's load falls on all of them alike."""
    jitted = {k: (jax.jit(apply), v) for k, (apply, v) in runs.items()}
    for f, v in jitted.values():
        jax.block_until_ready(f(v, ids))  # compile
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for k, (f, v) in jitted.items():
            start = time.perf_counter()
            jax.block_until_ready(f(v, ids))
            times[k].append(time.perf_counter() - start)
    return {k: float(np.median(t) * 1e3) for k, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="a 2-layer, 64-wide LM")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    size = (
        {"vocab": 97, "width": 64, "depth": 2, "heads": 4, "mlp": 256}
        if args.quick
        else {"vocab": 50257, "width": 768, "depth": 12, "heads": 12, "mlp": 3072}
    )
    lm = GPT(**size)
    ids = jnp.zeros((1, 64), jnp.int32)
    graph, trace = _trace_time(lm, ids, args.repeats)
    print(f"trace: {trace['seconds_median']:.2f} s (target 3 s), {trace['layers']} layers")

    ids = jax.random.randint(jax.random.key(1), (args.batch, args.tokens), 0, size["vocab"])
    variables = lm.init(jax.random.key(0), ids)
    keep = {}
    for name, unit in graph.units.items():
        if unit.kind == "heads" or (unit.kind == "channels" and unit.width == size["mlp"]):
            keep[name] = np.arange(unit.width) < unit.width // 2
    start = time.perf_counter()
    r = jp.prune_units(lm, variables, keep, ids)
    narrow, nv = r.model, r.variables
    prune_s = time.perf_counter() - start
    head_dim = size["width"] // size["heads"]
    by_hand = GPT(
        **{**size, "heads": size["heads"] // 2, "mlp": size["mlp"] // 2},
        qkv=head_dim * (size["heads"] // 2),
    )
    hand_vars = by_hand.init(jax.random.key(0), ids)
    runs = {
        "unpruned": (lm.apply, variables),
        "pruned": (narrow.apply, nv),
        "hand_written_narrow": (by_hand.apply, hand_vars),
    }
    ms = _forward_ms(runs, ids, args.repeats)
    ratios = {
        "unpruned_over_pruned": ms["unpruned"] / ms["pruned"],
        "pruned_over_hand_written": ms["pruned"] / ms["hand_written_narrow"],
    }
    print(f"forward ms {ms}, ratios {ratios}")
    results = {
        "load_average_1m_at_end": os.getloadavg()[0],  # the machine is shared: other jobs' load
        "model": {**size, "trace_tokens": 64},
        "trace": {**trace, "target_s": 3},
        "forward": {
            "batch": args.batch,
            "tokens": args.tokens,
            "pruned_groups": len(keep),
            "prune_seconds": prune_s,
            "ms_median": ms,
            "ratios": ratios,
            "goals": {"unpruned_over_pruned": ">= 1.6", "pruned_over_hand_written": "<= 1.05"},
        },
    }
    name = "trace_transformer" + ("_quick" if args.quick else "")
    path = write(name, {"results": results}, args.out)
    print(path)
    return path


if __name__ == "__main__":
    main()
