"""Programs rewritten before XLA:CPU compiles them, so that training loops take its fast paths.

:func:`cpu_rewrite` traces a function once and replays its program with two kinds of operation
replaced by others that compute the same values (to float32 rounding) and that XLA:CPU runs
much faster inside loops. Sub-programs (``scan`` and ``while`` bodies, ``cond`` branches, nested
``jit``, custom-derivative functions) are rewritten too. The training core's
:func:`~jaxprune.training._core.jit` applies it on the CPU backend, so every loop of the library
gets it.

**Convolutions.** XLA:CPU runs a convolution with Eigen's fast kernel only in the canonical
layout (input ``N, spatial..., C``, kernel ``spatial..., I, O``, output ``N, spatial..., C``, no
groups). At the top level of a program a compiler pass transposes other layouts into it, but not
inside the body of a ``while`` loop (openxla: jax-ml/jax#12868), and ``lax.scan``, ``fori_loop``
and early stopping are while loops. The backward pass of an ordinary NHWC convolution is not
canonical (the kernel gradient is ``f01b_i01o->01bf``, the input gradient ``b01f_01oi->b01f``),
so a training step of a conv net inside ``scan`` fell back to a naive loop nest: measured 1.06 s
per step of paper 002's scnn (batch 256, 8x8 images) against 24 ms for the same step outside a
loop. Every ``conv_general_dilated`` becomes transposes of its operands, the same convolution
in the canonical layout, and a transpose of the result; a grouped convolution with at most
:data:`MAX_SPLIT_GROUPS` groups (``vmap`` over seeds turns each convolution with a per-seed
kernel into one with a group per seed) becomes one canonical convolution per group, joined by a
concatenation. Outside loops, where XLA canonicalizes ungrouped convolutions itself, the result
is bit-identical (tested); inside loops and for split groups it agrees to float32 rounding.
Split seeds also train as they would one at a time: paper 003's Conv6 on digits, 5 vmapped
seeds, reached exactly the accuracies of a Python loop over the seeds, at 28 s per epoch
against 71 s with the grouped convolution.

**Narrow contractions.** A ``dot_general`` that contracts few elements (the forward product of
a layer with few inputs, the input gradient of a layer with few outputs) becomes the sum of its
rank-1 terms, ``sum_k lhs[..., k, None] * rhs[..., k, :]`` in the order ``k = 0, 1, ...``:
elementwise operations that XLA fuses with the bias, activation and loss around them, where a
dot is a separate library call (and, batched by ``vmap`` over runs, one call per run). Measured
on paper 000's model 2 (2-3-9-1, batch 128, Adam): 0.33 -> 0.19 ms per epoch for one run and
2.66 -> 1.80 ms for 30 vmapped runs on two cores (``benchmarks/bench_vs_torch.py`` times the
library end to end). Which dots: those contracting ``k <= 15`` elements whose right operand
has ``n`` free elements with ``k * n <= 64`` (:data:`MAX_UNROLLED_CONTRACTION`,
:data:`MAX_UNROLLED_TERMS`). Each element of the left operand is read ``n`` times, and when it
comes from a fused producer (the previous narrow layer) XLA recomputes it that often, so chains
of wider layers multiply the work: paper 000's reinitialization model (2-15, then three linear
layers of 15) trained 1.6-1.9x slower with its 15x15 products unrolled, while model 2's and
model 4's narrow products (``k * n`` 27 and 12) train 1.1-1.6x faster than with dots. At 16
summed terms XLA's fused loop was 2-3x slower than the dot even alone. Wider contractions (the
weight gradients, which sum over the batch) stay dots: written as elementwise products and
reductions they ran 2-3x slower.

A convolution or product with an ``out_sharding`` on explicit mesh axes is never rewritten (the
rewrite would not carry the requested sharding over to its result).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

__all__ = ["MAX_SPLIT_GROUPS", "MAX_UNROLLED_CONTRACTION", "MAX_UNROLLED_TERMS", "cpu_rewrite"]

MAX_SPLIT_GROUPS = 16
"""Grouped convolutions with more groups than this (depthwise ones) are left grouped: one
convolution per group would make programs too large to compile quickly."""

MAX_UNROLLED_CONTRACTION = 15
"""``dot_general`` contracting at most this many elements may be written as its rank-1 terms."""

MAX_UNROLLED_TERMS = 64
"""... if also (contracted elements) x (free elements of the right operand) is at most this."""

_CONV = lax.conv_general_dilated_p
_DOT = lax.dot_general_p


def _canonical_specs(nd: int):
    lhs = (0, nd - 1, *range(1, nd - 1))  # N, C, spatial... as positions of N H W C
    rhs = (nd - 1, nd - 2, *range(nd - 2))  # O, I, spatial... as positions of H W I O
    return lhs, rhs, lhs


def _conv_needs_rewrite(params) -> bool:
    dn = params["dimension_numbers"]
    groups = max(params["feature_group_count"], params["batch_group_count"])
    canonical = (dn.lhs_spec, dn.rhs_spec, dn.out_spec) == _canonical_specs(len(dn.lhs_spec))
    if groups > 1:
        return groups <= MAX_SPLIT_GROUPS
    return not canonical


def _conv(lhs, rhs, params):
    """``conv_general_dilated`` with ``params`` in the canonical layout, groups split."""
    dn = params["dimension_numbers"]
    nd = len(dn.lhs_spec)
    ls, rs, os_ = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    lhs = jnp.transpose(lhs, (ls[0], *ls[2:], ls[1]))  # N spatial C
    rhs = jnp.transpose(rhs, (*rs[2:], rs[1], rs[0]))  # spatial I O
    fg, bg = params["feature_group_count"], params["batch_group_count"]
    one = {
        **params,
        "dimension_numbers": lax.ConvDimensionNumbers(*_canonical_specs(nd)),
        "feature_group_count": 1,
        "batch_group_count": 1,
    }
    if fg == 1 and bg == 1:
        out = _CONV.bind(lhs, rhs, **one)
    else:
        groups = fg if fg > 1 else bg
        axis = nd - 1 if fg > 1 else 0  # feature groups split C, batch groups split N
        xs = jnp.split(lhs, groups, axis=axis)
        ws = jnp.split(rhs, groups, axis=nd - 1)  # output features, group by group
        out = jnp.concatenate(
            [_CONV.bind(x, w, **one) for x, w in zip(xs, ws, strict=True)], axis=nd - 1
        )
    # canonical axis i lands at output position src[i]
    src = (os_[0], *os_[2:], os_[1])
    return jnp.transpose(out, tuple(int(i) for i in np.argsort(src)))


def _rank_one_sum(lhs, rhs, params, dtype):
    """``dot_general(lhs, rhs)`` as ``sum_k lhs[.., k] * rhs[.., k]`` (k in order), in ``dtype``."""
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    lf = [i for i in range(lhs.ndim) if i not in lc and i not in lb]
    rf = [i for i in range(rhs.ndim) if i not in rc and i not in rb]
    batch = [lhs.shape[i] for i in lb]
    m, n = [lhs.shape[i] for i in lf], [rhs.shape[i] for i in rf]
    k = int(np.prod([lhs.shape[i] for i in lc], dtype=np.int64))
    b_, m_, n_ = (int(np.prod(d, dtype=np.int64)) for d in (batch, m, n))
    a = jnp.transpose(lhs, (*lb, *lf, *lc)).reshape(b_, m_, 1, k).astype(dtype)
    c = jnp.transpose(rhs, (*rb, *rf, *rc)).reshape(b_, 1, n_, k).astype(dtype)
    out = a[..., 0] * c[..., 0] if k else jnp.zeros((b_, m_, n_), dtype)
    for i in range(1, k):
        out = out + a[..., i] * c[..., i]
    return out.reshape(*batch, *m, *n)


def _rewrite_closed(closed: jcore.ClosedJaxpr) -> jcore.ClosedJaxpr | None:
    """The rewritten ``closed`` (same input and output types), or None if nothing changes."""
    if not _contains_rewrite(closed.jaxpr):
        return None
    avals = [v.aval for v in closed.jaxpr.invars]
    return jax.make_jaxpr(lambda *a: _eval(closed.jaxpr, closed.consts, a))(*avals)


def _rewrite_param(value):
    if isinstance(value, jcore.ClosedJaxpr):
        return _rewrite_closed(value)
    if isinstance(value, jcore.Jaxpr):
        new = _rewrite_closed(jcore.ClosedJaxpr(value, ()))
        return None if new is None or new.consts else new.jaxpr
    if isinstance(value, tuple) and value and all(isinstance(v, jcore.ClosedJaxpr) for v in value):
        new = [_rewrite_closed(v) for v in value]
        if all(n is None for n in new):
            return None
        return tuple(o if n is None else n for o, n in zip(value, new, strict=True))
    return None


def _sub_jaxprs(params):
    for value in params.values():
        if isinstance(value, jcore.ClosedJaxpr):
            yield value.jaxpr
        elif isinstance(value, jcore.Jaxpr):
            yield value
        elif isinstance(value, tuple):
            yield from (v.jaxpr for v in value if isinstance(v, jcore.ClosedJaxpr))


def _contraction(eqn) -> int:
    (lc, _), _ = eqn.params["dimension_numbers"]
    return int(np.prod([eqn.invars[0].aval.shape[i] for i in lc], dtype=np.int64))


def _unrolls(eqn) -> bool:
    (lc, rc), (_, rb) = eqn.params["dimension_numbers"]
    rhs = eqn.invars[1].aval.shape
    n = int(np.prod([d for i, d in enumerate(rhs) if i not in rc and i not in rb], dtype=np.int64))
    k = _contraction(eqn)
    return k <= MAX_UNROLLED_CONTRACTION and k * n <= MAX_UNROLLED_TERMS


def _explicit_sharding(sharding) -> bool:
    if sharding is None:
        return False
    types = getattr(getattr(sharding, "mesh", None), "axis_types", None)
    if types is None:  # not a NamedSharding: keep the operation, as for explicit axes
        return True
    return any(t == jax.sharding.AxisType.Explicit for t in types)


def _rule(eqn):
    """The replacement of ``eqn`` (a function of its inputs), or None to keep it.

    An operation whose ``out_sharding`` is on a mesh with explicit axes (explicit-sharding
    mode) is kept as it is: its replacement would leave the result's sharding to propagation
    instead. Under automatic axes (``jit`` with sharded inputs, where transposed products carry
    an ``out_sharding`` too) propagation decides either way, so those are rewritten.
    """
    if _explicit_sharding(eqn.params.get("out_sharding")):
        return None
    if eqn.primitive is _CONV and _conv_needs_rewrite(eqn.params):
        return lambda lhs, rhs: [_conv(lhs, rhs, eqn.params)]
    if eqn.primitive is _DOT and _unrolls(eqn):
        dtype = eqn.outvars[0].aval.dtype
        return lambda lhs, rhs: [_rank_one_sum(lhs, rhs, eqn.params, dtype)]
    return None


@functools.lru_cache(maxsize=256)
def _contains_rewrite_cached(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
        if _rule(eqn) is not None:
            return True
        if any(_contains_rewrite(j) for j in _sub_jaxprs(eqn.params)):
            return True
    return False


def _contains_rewrite(jaxpr) -> bool:
    try:
        return _contains_rewrite_cached(jaxpr)
    except TypeError:  # an unhashable jaxpr: look without the cache
        return _contains_rewrite_cached.__wrapped__(jaxpr)


def _eval(jaxpr: jcore.Jaxpr, consts, args) -> list[Any]:
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        rule = _rule(eqn)
        if rule is not None:
            outs = rule(*invals)
        else:
            params = dict(eqn.params)
            for name, value in eqn.params.items():
                new = _rewrite_param(value)
                if new is not None:
                    params[name] = new
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(params))
            if not eqn.primitive.multiple_results:
                outs = [outs]
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def cpu_rewrite(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its program rewritten for XLA:CPU's fast paths (see the module docstring).

    The result computes what ``fn`` computes (to float32 rounding; see the module docstring),
    for any arguments ``fn`` accepts (positional and keyword, arrays in pytrees); ``fn`` is
    traced once and its program replayed with convolutions in the canonical layout and narrow
    contractions as sums of rank-1 terms (a program with neither is replayed as it is). Apply it
    under ``jax.jit``: the rewrite happens while tracing. It pays off on the CPU backend; the
    library's loops apply it there themselves.

    Args:
      fn: a function of arrays (pytrees of arrays) to arrays.

    Returns:
      The rewritten function.

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> w, x = jnp.ones((3, 3, 2, 4)), jnp.ones((1, 5, 5, 2))
    >>> conv = lambda w, x: jax.lax.conv_general_dilated(
    ...     x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    >>> grad = jax.grad(lambda w: jnp.sum(conv(w, x) ** 2))
    >>> fast = jax.jit(jp.training.cpu_rewrite(grad))
    >>> bool(jnp.all(fast(w) == jax.jit(grad)(w)))
    True
    """

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        # traced leaves are the program's inputs; the others (static arguments of an enclosing
        # jit, or concrete values outside jit) are constants of the traced program
        leaves, treedef = jax.tree.flatten((args, kwargs))
        dynamic = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.core.Tracer)]

        def call(*values):
            full = list(leaves)
            for i, v in zip(dynamic, values, strict=True):
                full[i] = v
            a, k = jax.tree.unflatten(treedef, full)
            return fn(*a, **k)

        inputs = [leaves[i] for i in dynamic]
        closed, shape = jax.make_jaxpr(call, return_shape=True)(*inputs)
        outs = _eval(closed.jaxpr, closed.consts, inputs)
        return jax.tree.unflatten(jax.tree.structure(shape), outs)

    return wrapped
