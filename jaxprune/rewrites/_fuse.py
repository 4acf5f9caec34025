"""FuseInit: replace a layer-act-layer pair of any model by one MSE-optimal layer (paper 001).

Three cases (Fig. 1): dense-dense and conv-dense give one dense layer on the (flattened)
input ``a0`` of the first layer (Theorem 1); conv-conv gives one convolution with kernel
``k~`` = the pair's receptive field and stride ``s~ = s1 r1 s2`` (Theorem 2). The fused layer
replaces the second layer's pre-activation ``y`` (its output with its bias, and BatchNorm if
any), so the second layer's activation and everything after it stay. Moments are accumulated
batch by batch from taps on the traced program, so memory is ``O(L0^2 + L0 L2)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxprune._fusion_solve import fusion_weights
from jaxprune._types import Model, Variables
from jaxprune.graph import as_model
from jaxprune.graph.extend import (
    Replacement,
    check_model_kwargs,
    pair_moments,
    pair_of,
    takes_model,
)
from jaxprune.rewrites._chains import Fold
from jaxprune.rewrites._collapse import replaced_model
from jaxprune.rewrites._result import RewriteResult

__all__ = ["FusedDraw", "fuse"]


@dataclasses.dataclass(frozen=True)
class FusedDraw:
    """A fused model's initializer (fusion needs data, so ``init`` draws instead): every leaf
    the original has is its fresh initialization; the fused kernel's entries are fresh
    entries of the original's first fused kernel (``draw(0)``, then further draws while
    more are needed), so each has the first layer's initializer distribution (at that
    layer's own shape and fan-in); the fused bias likewise from the first layer's bias (zeros
    if it has none).

    Attributes:
      kernel, bias: the fused layer's leaf paths (the first layer's; ``bias`` may be None).
    """

    kernel: str
    bias: str | None

    def initial_leaves(self, spec, draw, args, kwargs):
        del args, kwargs
        fresh = draw(0)
        shapes = {p: a.shape for p, a in zip(spec.new_paths, spec.new_avals, strict=True)}
        out = []
        for path in spec.new_paths:
            if path == self.kernel or (path == self.bias and path in fresh):
                out.append(_entries(draw, path, shapes[path]))
            elif path == self.bias:
                out.append(np.zeros(shapes[path], np.float32))
            else:
                out.append(fresh[path])
        return out


def _entries(draw, path, shape):
    import jax.numpy as jnp

    need, got, i = int(np.prod(shape)), [], 0
    while sum(int(g.size) for g in got) < need:
        got.append(jnp.ravel(draw(i)[path]))
        i += 1
    return jnp.concatenate(got)[:need].reshape(shape)


ESTIMATORS = ("joint", "uncorrelated")


def _pick(layers, graph, estimator, kernel_size, padding):
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    if len(layers) < 2:
        raise ValueError(f"layers: expected at least two neighbouring layers, got {layers}")
    if len(layers) > 2:
        raise ValueError(f"layers: fuse takes one pair (first, second), got {layers}")
    names = list(graph.layers)
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise ValueError(f"layers: {unknown} not in this model; its layers are {names}")
    first, second = (names.index(n) for n in layers)
    pair, why = pair_of(graph.analysis, first)
    if pair is None or pair.second != second:
        if pair is not None:
            reader = names[pair.second]
            why = f"not consecutive neighbours: {layers[0]!r}'s output is read by {reader!r}"
        raise ValueError(
            f"layers {layers}: not a fusable pair ({why}); fusable pairs are a dense or conv "
            "layer whose output enters elementwise operations (one nonlinearity) read only by "
            "the second layer"
        )
    if pair.kind == "dense" and (estimator != "joint" or kernel_size or padding):
        raise ValueError(
            f"layers {layers}: estimator='uncorrelated', kernel_size and padding apply to "
            "conv-conv fusion only"
        )
    if pair.kind == "conv" and pair.padding is None and padding is None:
        raise ValueError(
            f"layers {layers}: the two convolutions' paddings differ; pass padding='SAME' or "
            "'VALID' for the fused convolution"
        )
    return pair


@takes_model
def fuse(
    model: Model,
    variables: Variables,
    layers: Sequence[str],
    data: Iterable,
    *,
    estimator: str = "joint",
    method: str = "auto",
    rcond: float | None = None,
    kernel_size: int | None = None,
    padding: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> RewriteResult:
    """Fuses a layer-act-layer pair into one layer with MSE-optimal weights (FuseInit step 2).

    ``a0`` is the first layer's input, the target is the second layer's pre-activation
    ``y = W2 f1(W1 a0 + b1) + b2``; the fused layer computes ``K~ a0 + b~`` in its place.

    * Second layer dense (dense-dense, conv-dense): a dense layer on ``a0`` (flattened per
      example after a conv), ``K~ = C_a0^{-1} C_{a0 y}`` (Theorem 1).
    * Conv-conv (channels-last convolutions with any number of spatial axes: ``(N, L, C)``
      sequences, ``(N, H, W, C)`` images, ...): a convolution with kernel ``k~`` (default: the
      pair's receptive field per spatial axis, pooling included), stride ``s~ = s1 r1 s2``, the
      layers' common padding. Every output position of
      every image is one sample; ``estimator="joint"`` fits all input channels together,
      ``"uncorrelated"`` is Theorem 2 (zero covariance between input channels, Eq. 15). The
      bias is one number per output channel (moments pooled over positions).

    The fused layer's kernel and bias are stored under the first layer's name
    (``params/Dense_0/kernel``); the second layer's leaves are dropped. The fused model
    re-traces the original per call shape (any batch size, ``jit``, ``jax.export``) and call
    mode: with ``train=True, rngs=...`` dropout before the first layer or after the pair acts
    as in the original (the fused layer reads the dropped-out input); dropout or a BatchNorm on
    batch statistics between the fused layers raises :class:`~jaxprune.GraphError`. A linen
    fused model's ``init(key, *args)`` is the original's ``init(key, *args)`` with the fused
    kernel's entries drawn from the first layer's initializer (fresh entries of its kernel,
    see :class:`FusedDraw`), never the fit.

    Args:
      model: a ``flax.linen`` Module, an ``nnx.Module``, an ``eqx.Module`` or a function
        ``f(params, x)``.
      variables: its variables or params; omitted for NNX and equinox modules, which hold their
        state.
      layers: ``(first, second)`` layer names as in ``jp.trace(...).layers``.
      data: iterable of batches, each ``x`` or ``(x, y, ...)``; read once.
      estimator: ``"joint"`` or ``"uncorrelated"`` (conv-conv only).
      method: linear solver: ``"auto"``, ``"cholesky"``, ``"lstsq"`` or ``"cg"``.
      rcond: eigenvalue cutoff for the singular case (see ``fusion_weights``).
      kernel_size: fused kernel ``k~`` (conv-conv).
      padding: fused padding (conv-conv; default: the layers' common padding).
      model_kwargs: keyword arguments of the model's own call (``{"train": False}``).

    Returns:
      A :class:`~jaxprune.rewrites.RewriteResult`: the fused ``.model`` and its ``.variables``
      (as :func:`~jaxprune.collapse` returns them); ``.report.mse[(first, second)]`` is the
      MSE (4)/(12) per example, summed over outputs (and positions, for conv-conv) on
      ``data``: Corollary 1 for the joint estimator, the exact quadratic form for
      ``"uncorrelated"``.

    Raises:
      ValueError: unknown layers or not a fusable pair (naming both and why), a bad
        estimator, empty data, non-finite activations, or a fused convolution whose output
        shape differs from the pair's.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxprune as jp
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.Dense(8)(x)                      # a linear pair fuses exactly
    ...         return nn.relu(nn.Dense(3)(h))
    >>> x = jax.random.normal(jax.random.key(0), (64, 4)); net = Net()
    >>> v = net.init(jax.random.key(1), x)
    >>> r = jp.fuse(net, v, ("Dense_0", "Dense_1"), data=[x[:32], x[32:]])
    >>> r.report.changes, abs(float(r.report.mse[("Dense_0", "Dense_1")])) < 1e-4
    (('Dense_0 + Dense_1 -> Dense_0',), True)
    >>> jax.tree.map(jnp.shape, r.variables)
    {'params': {'Dense_0': {'bias': (3,), 'kernel': (4, 3)}}}
    >>> bool(jnp.allclose(r.model.apply(r.variables, x), net.apply(v, x), atol=1e-4))
    True

    References:
      Paper 001, Theorem 1 (Eq. 7), Corollary 1 (Eq. 8), Theorem 2 (Eqs. 15-19), Algorithm 1.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")
    adapter = as_model(model, variables)
    options: dict[str, Any] = {}
    if kernel_size is not None:
        options["kernel_size"] = kernel_size
    if padding is not None:
        options["padding"] = padding
    graph, (pair,), (moments,), (per_example,) = pair_moments(
        model,
        variables,
        data,
        lambda g: [_pick(layers, g, estimator, kernel_size, padding)],
        check_model_kwargs(model_kwargs),
        [options],
    )
    an = graph.analysis
    groups = None
    a0 = an.program.avals[pair.a0]
    if pair.kind == "conv":
        nd = len(pair.kernel_size)  # spatial axes: 1 for (N, L, C), 2 for (N, H, W, C), ...
        ks = pair.kernel_size if kernel_size is None else (int(kernel_size),) * nd
        if estimator == "uncorrelated":
            groups = np.repeat(np.arange(a0.shape[-1]), int(np.prod(ks)))
    kernel, bias, mse = fusion_weights(
        moments,
        method=method,
        rcond=rcond,
        groups=groups,
        context=f"layers {tuple(layers)}",
    )
    l1 = an.layers[pair.first]
    kdtype = an.program.avals[an.program.nodes[l1.node].ins[1]].dtype
    kpath = l1.kernel
    bpath = kpath.rsplit("/", 1)[0] + "/bias" if "/" in kpath else kpath + "_bias"
    end_name = an.program.nodes[pair.end[0]].name
    common = dict(x=pair.x, end=pair.end, kernel=kpath, bias=bpath, end_name=end_name)
    if pair.kind == "dense":
        rep = Replacement(
            op="dense",
            axis=None if pair.flatten else len(a0.shape) - 1,
            flatten_lead=1 if pair.flatten else None,
            kernel_t=pair.kernel_t,
            **common,
        )
        kernel = kernel.T if pair.kernel_t else kernel  # the first layer's own orientation
    else:
        c = a0.shape[-1]
        # patch features are ordered (C, k_1, ..., k_nd): to the kernel layout (k_1, ..., I, O)
        kernel = kernel.reshape(c, *ks, -1).transpose(*range(1, nd + 1), 0, nd + 1)
        rep = Replacement(
            op="conv",
            conv=(pair.strides, padding or pair.padding, pair.dimension_numbers),
            **common,
        )
    fold = Fold(rep, kernel.astype(kdtype), bias.astype(kdtype), (pair.first, pair.second))
    init = FusedDraw(kpath, bpath)
    pair_mse = {tuple(layers): mse * per_example}
    return replaced_model(adapter, graph, [fold], "fuse", init, mse=pair_mse)
