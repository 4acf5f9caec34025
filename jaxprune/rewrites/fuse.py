"""FuseInit: replace a run of neighbouring layers by one MSE-optimal layer (paper 001).

Three cases (Fig. 1): dense-dense and conv-dense give one dense layer on the (flattened) input
of the first layer (Theorem 1); conv-conv gives one convolution with kernel ``k~`` = the
receptive field of the run and stride ``s~ = s1 r1 s2`` (Theorem 2). The fused layer keeps the
last layer's activation (and pool). Moments are accumulated batch by batch
(:func:`~jaxprune.analysis.moments.streaming_moments`), so memory is ``O(L0^2 + L0 L2)``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune._types import Params
from jaxprune.analysis.moments import moments_init, moments_update
from jaxprune.models.cnn import CNN, ConvLayer, DenseLayer
from jaxprune.rewrites.fusion_solve import fusion_weights

__all__ = ["FusionPlan", "check_cnn_params", "fuse", "fusion_plan"]

ESTIMATORS = ("joint", "uncorrelated")


class FusionPlan(NamedTuple):
    """How layers ``start .. stop-1`` of a :class:`~jaxprune.models.CNN` become one layer.

    Attributes:
      names: the fused layers' parameter names.
      start: index of the first fused layer.
      stop: one past the last fused layer.
      spec: the fused layer (:class:`DenseLayer` or :class:`ConvLayer`).
    """

    names: tuple[str, ...]
    start: int
    stop: int
    spec: ConvLayer | DenseLayer


def _first_input(batch):
    x = batch[0] if isinstance(batch, tuple | list) else batch
    return jnp.asarray(x)


def _peek(data: Iterable):
    """``(first x, an iterable over all batches)`` without consuming a one-shot iterator."""
    it = iter(data)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("data: expected at least one batch, got none") from None
    return _first_input(first), itertools.chain([first], it)


def fusion_plan(
    model: CNN, layers: Sequence[str], *, kernel_size: int | None = None, padding: str | None = None
) -> FusionPlan:
    """Validates ``layers`` (consecutive neighbours) and describes the fused layer.

    For a conv run, ``k~`` defaults to the run's receptive field (``rf += (k-1) * jump`` and
    ``jump *= s`` through each conv and pool, the last layer's pool excluded) and the stride is
    the product ``s~ = s1 r1 s2 ...``; the padding must agree across the run unless given.

    Args:
      model: a :class:`~jaxprune.models.CNN`.
      layers: two or more consecutive layer names, e.g. ``("conv_1", "dense_0")``.
      kernel_size: fused conv kernel ``k~`` (conv-conv only).
      padding: fused conv padding (conv-conv only).

    Returns:
      A :class:`FusionPlan`.

    Raises:
      TypeError: ``model`` is not a ``CNN``.
      ValueError: unknown or non-neighbouring layers, or kernel/padding given for a dense fusion.

    >>> from jaxprune.models import CNN, ConvLayer, DenseLayer
    >>> net = CNN((ConvLayer(4, kernel=3), ConvLayer(8, kernel=3, stride=2), DenseLayer(2)))
    >>> fusion_plan(net, ("conv_0", "conv_1")).spec
    ConvLayer(features=8, kernel=5, stride=2, padding='SAME', activation='relu', pool=1)

    References:
      Paper 001, sec. II-C (``s~ = s1 r1 s2``; "select a new filter length k~").
    """
    if not isinstance(model, CNN):
        raise TypeError(f"model: expected jaxprune.models.CNN, got {type(model).__name__}")
    names = model.layer_names()
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    if len(layers) < 2:
        raise ValueError(f"layers: expected at least two neighbouring layers, got {layers}")
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise ValueError(f"layers: {unknown} not in this model; its layers are {names}")
    idx = [names.index(n) for n in layers]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        raise ValueError(
            f"layers: {layers} are not consecutive neighbours in forward order {names}"
        )
    start, stop = idx[0], idx[-1] + 1
    run = model.layers[start:stop]
    last = run[-1]
    if isinstance(last, DenseLayer):
        if kernel_size is not None or padding is not None:
            raise ValueError(
                f"kernel_size/padding: only for conv-conv fusion; {layers[-1]} is a dense layer"
            )
        return FusionPlan(layers, start, stop, DenseLayer(last.features, last.activation))
    rf, jump = 1, 1
    for spec in run[:-1]:
        rf, jump = rf + (spec.kernel - 1) * jump, jump * spec.stride
        rf, jump = rf + (spec.pool - 1) * jump, jump * spec.pool
    rf, jump = rf + (last.kernel - 1) * jump, jump * last.stride
    pads = {spec.padding for spec in run}
    if padding is None:
        if len(pads) > 1:
            raise ValueError(
                f"padding: layers {layers} mix paddings {sorted(pads)}; pass padding='SAME' or "
                "'VALID' for the fused convolution"
            )
        padding = pads.pop()
    k = rf if kernel_size is None else int(kernel_size)
    spec = ConvLayer(last.features, k, jump, padding, last.activation, last.pool)
    return FusionPlan(layers, start, stop, spec)


def _rows(model: CNN, plan: FusionPlan, params: Params, x: jax.Array):
    """``(x rows, y rows, rows per example)``: the fused layer's inputs and the target."""
    v = {"params": params}
    a0 = x if plan.start == 0 else model.apply(v, x, stop=plan.start)
    t = model.apply(v, a0, start=plan.start, stop=plan.stop, pre_activation=True)
    n = x.shape[0]
    if isinstance(plan.spec, DenseLayer):
        return a0.reshape(n, -1), t.reshape(n, -1), 1
    k, s = plan.spec.kernel, plan.spec.stride
    patches = jax.lax.conv_general_dilated_patches(
        a0,
        (k, k),
        (s, s),
        plan.spec.padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )  # features ordered (C, kh, kw)
    if patches.shape[1:3] != t.shape[1:3]:
        raise ValueError(
            f"layers {plan.names}: the fused convolution (k~={k}, s~={s}, {plan.spec.padding}) "
            f"maps {a0.shape[1:3]} to {patches.shape[1:3]}, but the fused layers output "
            f"{t.shape[1:3]}; choose kernel_size/padding or an input size divisible by the strides"
        )
    rows = t.shape[1] * t.shape[2]
    return patches.reshape(n * rows, -1), t.reshape(n * rows, -1), rows


@functools.lru_cache(maxsize=32)
def _moments_program(model: CNN, plans: tuple[FusionPlan, ...]):
    """``(rows_fn, jitted step)`` for ``plans``; cached so repeated fusions reuse the compile."""

    def rows_fn(p, x):
        return [_rows(model, plan, p, x)[:2] for plan in plans]

    @jax.jit
    def step(states, p, x):
        return [moments_update(s, *r) for s, r in zip(states, rows_fn(p, x), strict=True)]

    return rows_fn, step


def _plan_moments(model, plans, params, batches, dtype=jnp.float32):
    """One pass over ``batches`` accumulating the moments of every plan (one jitted step)."""
    rows_fn, step = _moments_program(model, tuple(plans))
    states, per_example = None, None
    for batch in batches:
        x = _first_input(batch)
        if states is None:
            shapes = jax.eval_shape(rows_fn, params, x)
            states = [moments_init(a.shape[1], b.shape[1], dtype) for a, b in shapes]
            per_example = [_rows_per_example(model, plan, params, x) for plan in plans]
        previous, states = states, step(states, params, x)
        # at most two batches in flight: async dispatch would otherwise queue every batch's
        # device copy before the first is reduced, and memory would grow with the data
        jax.block_until_ready(previous)
    if states is None:
        raise ValueError("data: expected at least one batch, got none")
    return states, per_example


def _rows_per_example(model, plan, params, x) -> int:
    out = jax.eval_shape(lambda z: _rows(model, plan, params, z)[1], x[:1])
    return out.shape[0]


def check_cnn_params(model: CNN, params: Params, x: jax.Array) -> None:
    """Raises ``ValueError`` naming the first param path whose shape does not fit ``model``."""
    want = jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1]))["params"]
    if set(want) != set(params):
        raise ValueError(f"params: expected layers {sorted(want)}, got {sorted(params)}")
    for name, leaves in want.items():
        for leaf, sd in leaves.items():
            got = params[name].get(leaf) if isinstance(params[name], dict) else None
            if got is None or tuple(jnp.shape(got)) != sd.shape:
                shape = None if got is None else tuple(jnp.shape(got))
                raise ValueError(
                    f"params[{name!r}][{leaf!r}]: expected shape {sd.shape}, got {shape}"
                )


def _kernel_to_flax(plan: FusionPlan, kernel: jax.Array, in_shape) -> jax.Array:
    if isinstance(plan.spec, DenseLayer):
        return kernel
    k, c = plan.spec.kernel, in_shape[-1]
    return kernel.reshape(c, k, k, -1).transpose(1, 2, 0, 3)


def _channel_groups(plan: FusionPlan, in_channels: int) -> np.ndarray:
    k = plan.spec.kernel
    return np.repeat(np.arange(in_channels), k * k)  # patch features ordered (C, kh, kw)


def _replace(model: CNN, params: Params, plan: FusionPlan, kernel, bias):
    old = model.layer_names()
    layers = (*model.layers[: plan.start], plan.spec, *model.layers[plan.stop :])
    small = dataclasses.replace(model, layers=layers)
    new_names = small.layer_names()
    out = {}
    for i, name in enumerate(old):
        if i < plan.start:
            out[new_names[i]] = params[name]
        elif i >= plan.stop:
            out[new_names[i - (plan.stop - plan.start) + 1]] = params[name]
    dtype = jnp.result_type(params[old[plan.stop - 1]]["kernel"])
    out[new_names[plan.start]] = {"kernel": kernel.astype(dtype), "bias": bias.astype(dtype)}
    return small, {name: out[name] for name in new_names}


def fuse(
    model: CNN,
    params: Params,
    layers: Sequence[str],
    data: Iterable,
    *,
    estimator: str = "joint",
    method: str = "auto",
    rcond: float | None = None,
    kernel_size: int | None = None,
    padding: str | None = None,
):
    """Fuses neighbouring ``layers`` into one layer with MSE-optimal weights (FuseInit step 2).

    ``a0`` is the input of the first layer, the target is the last layer's pre-activation
    ``W2 H1(a0) + b2`` (``H1`` = every earlier layer of the run, activations and pools included),
    and the fused layer computes ``f2(K~ a0 + b~)`` with the last layer's activation ``f2``.

    * Last layer dense (dense-dense, conv-dense): a dense layer on the flattened ``a0``,
      ``K~ = C_a0^{-1} C_{a0 y}`` (Theorem 1).
    * All conv (conv-conv): a convolution with kernel ``k~`` (default: the run's receptive field),
      stride ``s~ = s1 r1 s2``. Every output position of every image is one sample of
      (patch of ``a0``, target channels), and ``estimator`` picks the solution: ``"joint"`` fits
      all input channels together (exact least squares, no assumption), ``"uncorrelated"`` is the
      paper's Theorem 2, which sets the covariance between different input channels to zero
      (Eq. 15) and so solves one ``k~^2 x k~^2`` system per channel (Eqs. 16, 18-19). Choice
      (the paper's per-position bias vector in Eq. 17 is not a conv bias): moments are pooled
      over positions, so the bias is one number per output channel, ``b~ = mean_y - mean_x K~``.
      When all fused layers are linear with VALID padding and no pool, ``k~`` = receptive field
      makes the fusion exact.

    Args:
      model: a :class:`~jaxprune.models.CNN`.
      params: its parameters.
      layers: two or more consecutive layer names.
      data: iterable of batches, each ``x`` or ``(x, y, ...)``; read once.
      estimator: ``"joint"`` or ``"uncorrelated"`` (conv-conv only; dense fusion is always joint).
      method: linear solver, see :func:`~jaxprune.rewrites.fusion_weights`.
      rcond: eigenvalue cutoff for the singular case (see ``fusion_weights``).
      kernel_size: fused kernel ``k~`` (conv-conv).
      padding: fused padding (conv-conv; default: the layers' common padding).

    Returns:
      ``(fused_model, fused_params, mse)``: ``fused_model`` has the run replaced by one layer
      (layers renumbered), ``fused_params`` match it, ``mse`` is the MSE (4)/(12) per example,
      summed over outputs (and positions, for conv-conv) on ``data``: Corollary 1 for the joint
      estimator, the exact quadratic form for ``"uncorrelated"``.

    Raises:
      TypeError: ``model`` is not a ``CNN``.
      ValueError: bad layer names, parameter shapes, estimator, non-finite activations, empty
        data, or a fused convolution whose output shape differs from the run's.

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> from jaxprune.models import CNN, DenseLayer
    >>> net = CNN((DenseLayer(8, "identity"), DenseLayer(3, "relu")))
    >>> x = jax.random.normal(jax.random.key(0), (64, 4))
    >>> p = net.init(jax.random.key(1), x)["params"]
    >>> small, q, mse = jp.fuse(net, p, ("dense_0", "dense_1"), data=[x[:32], x[32:]])
    >>> small.layers, abs(float(mse)) < 1e-4      # a linear H1 fuses exactly
    ((DenseLayer(features=3, activation='relu'),), True)
    >>> bool(jnp.allclose(small.apply({"params": q}, x), net.apply({"params": p}, x), atol=1e-4))
    True

    References:
      Paper 001, Theorem 1 (Eq. 7), Corollary 1 (Eq. 8), Theorem 2 (Eqs. 15-19), Algorithm 1.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")
    plan = fusion_plan(model, layers, kernel_size=kernel_size, padding=padding)
    if estimator != "joint" and isinstance(plan.spec, DenseLayer):
        raise ValueError(f"estimator: {estimator!r} applies to conv-conv fusion only")
    x, data = _peek(data)
    check_cnn_params(model, params, x)
    (moments,), (per_example,) = _plan_moments(model, [plan], params, data)
    a0 = (
        x
        if plan.start == 0
        else jax.eval_shape(
            lambda p, z: model.apply({"params": p}, z, stop=plan.start), params, x[:1]
        )
    )
    groups = None
    if estimator == "uncorrelated":
        groups = _channel_groups(plan, a0.shape[-1])
    kernel, bias, mse = fusion_weights(
        moments, method=method, rcond=rcond, groups=groups, context=f"layers {plan.names}"
    )
    small, new_params = _replace(model, params, plan, _kernel_to_flax(plan, kernel, a0.shape), bias)
    return small, new_params, mse * per_example
