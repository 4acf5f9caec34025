"""Streaming first and second moments of paired rows ``(x, y)`` (paper 001, Algorithm 1, step 2).

The state holds the count, the means and the *centred* sums of products (``M2``), updated batch
by batch with Chan et al.'s pairwise formula, which stays accurate in float32 where the naive
``E[x x^T] - mean mean^T`` loses all digits for inputs far from zero. Only
``O(dx^2 + dy*dx)`` numbers are kept, whatever the number of samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
from jax.typing import DTypeLike
from jaxtyping import Array, Float

__all__ = ["Moments", "moments_init", "moments_merge", "moments_update", "streaming_moments"]

_HI = jax.lax.Precision.HIGHEST


class Moments(NamedTuple):
    """Running moments of paired rows ``x in R^dx``, ``y in R^dy``.

    Attributes:
      count: number of rows seen (scalar, the accumulation dtype).
      mean_x: ``(dx,)`` mean of ``x``.
      mean_y: ``(dy,)`` mean of ``y``.
      m2_xx: ``(dx, dx)`` sum over rows of ``(x - mean_x)(x - mean_x)^T``.
      m2_xy: ``(dx, dy)`` sum over rows of ``(x - mean_x)(y - mean_y)^T``.
      m2_yy: ``(dy,)`` sum over rows of ``(y - mean_y)**2`` (the diagonal only: ``dy`` may be
        large and fusion needs only its trace).
    """

    count: Float[Array, ""]  # type: ignore[assignment]  # shadows tuple.count, by design
    mean_x: Float[Array, " dx"]
    mean_y: Float[Array, " dy"]
    m2_xx: Float[Array, "dx dx"]
    m2_xy: Float[Array, "dx dy"]
    m2_yy: Float[Array, " dy"]

    def cov_xx(self) -> Float[Array, "dx dx"]:
        """Population covariance ``C_x = M2_xx / n`` (the paper's expectation over the data)."""
        return self.m2_xx / self.count

    def cov_xy(self) -> Float[Array, "dx dy"]:
        """Population cross-covariance ``E[(x - mean_x)(y - mean_y)^T]``."""
        return self.m2_xy / self.count

    def var_y(self) -> Float[Array, " dy"]:
        """Population variance of each ``y`` coordinate."""
        return self.m2_yy / self.count


def moments_init(dx: int, dy: int, dtype: DTypeLike = jnp.float32) -> Moments:
    """Empty moments for ``x in R^dx`` and ``y in R^dy`` accumulated in ``dtype``.

    Args:
      dx: width of ``x``.
      dy: width of ``y``.
      dtype: accumulation dtype; ``jnp.float64`` needs ``jax_enable_x64``.

    Returns:
      A :class:`Moments` with ``count == 0``.

    Raises:
      ValueError: ``dtype`` is float64 while x64 is disabled, or widths are not positive.

    >>> moments_init(3, 2).m2_xy.shape
    (3, 2)

    References:
      Paper 001, Algorithm 1 step 2 (empirical first and second moments).
    """
    if dx < 1 or dy < 1:
        raise ValueError(f"dx, dy: expected positive widths, got {dx}, {dy}")
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "dtype: float64 accumulation needs jax.config.update('jax_enable_x64', True)"
        )
    z = lambda *s: jnp.zeros(s, dtype)
    return Moments(z(), z(dx), z(dy), z(dx, dx), z(dx, dy), z(dy))


def _combine(a: Moments, b: Moments) -> Moments:
    n = a.count + b.count
    safe = jnp.where(n > 0, n, 1)
    wb = b.count / safe
    dx, dy = b.mean_x - a.mean_x, b.mean_y - a.mean_y
    f = a.count * b.count / safe
    return Moments(
        count=n,
        mean_x=a.mean_x + wb * dx,
        mean_y=a.mean_y + wb * dy,
        m2_xx=a.m2_xx + b.m2_xx + f * jnp.outer(dx, dx),
        m2_xy=a.m2_xy + b.m2_xy + f * jnp.outer(dx, dy),
        m2_yy=a.m2_yy + b.m2_yy + f * dy * dy,
    )


def moments_merge(a: Moments, b: Moments) -> Moments:
    """Moments of the union of the rows summarized by ``a`` and ``b`` (exact, order-free).

    >>> import jax.numpy as jnp
    >>> x = jnp.arange(8.0).reshape(4, 2); y = x[:, :1]
    >>> m = moments_merge(moments_update(moments_init(2, 1), x[:1], y[:1]),
    ...                   moments_update(moments_init(2, 1), x[1:], y[1:]))
    >>> m.count.item(), m.mean_x.tolist(), m.cov_xx()[0, 0].item()
    (4.0, [3.0, 4.0], 5.0)

    References:
      Chan, Golub, LeVeque (1979), pairwise update of centred sums of products.
    """
    return _combine(a, b)


def _gram(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a^T b`` summed over rows; replicated output when rows are sharded on an explicit mesh."""
    sharding = jax.typeof(a).sharding
    kwargs: dict[str, Any] = {}
    if any(s is not None for s in getattr(sharding, "spec", ())):
        kwargs["out_sharding"] = NamedSharding(sharding.mesh, PartitionSpec())
    return jnp.matmul(a.T, b, precision=_HI, **kwargs)


def moments_update(
    state: Moments,
    x: Float[Array, "n dx"],
    y: Float[Array, "n dy"],
    axis_name: str | None = None,
) -> Moments:
    """Adds the rows of one batch; jittable, and usable inside ``shard_map``.

    The batch's own mean and centred sums are computed first (a two-pass, numerically safe
    batch statistic) and then merged with ``state``. Under ``jax.jit`` with ``x`` sharded along
    rows (``NamedSharding``) the batch sums become all-reduces automatically; inside
    ``jax.shard_map`` pass the mapped ``axis_name`` and each device's rows are combined with
    ``jax.lax.psum`` (the result is replicated).

    Args:
      state: moments so far.
      x: ``(n, dx)`` rows.
      y: ``(n, dy)`` rows paired with ``x``.
      axis_name: mapped axis over which rows are sharded (inside ``shard_map``), or ``None``.

    Returns:
      The updated :class:`Moments`.

    Raises:
      ValueError: shapes do not match ``state``.

    >>> import jax.numpy as jnp
    >>> x = jnp.array([[0.0], [2.0]]); y = jnp.array([[1.0], [5.0]])
    >>> m = moments_update(moments_init(1, 1), x, y)
    >>> m.mean_y.tolist(), m.cov_xy().tolist(), m.var_y().tolist()
    ([3.0], [[2.0]], [4.0])

    References:
      Paper 001, Eqs. (5)-(6) with empirical expectations (Algorithm 1).
    """
    dx, dy = state.mean_x.shape[0], state.mean_y.shape[0]
    if (
        x.ndim != 2
        or y.ndim != 2
        or x.shape[0] != y.shape[0]
        or x.shape[1] != dx
        or (y.shape[1] != dy)
    ):
        raise ValueError(
            f"x, y: expected shapes (n, {dx}) and (n, {dy}), got {x.shape} and {y.shape}"
        )
    dtype = state.count.dtype
    x, y = x.astype(dtype), y.astype(dtype)
    psum = (lambda v: jax.lax.psum(v, axis_name)) if axis_name is not None else (lambda v: v)
    n = psum(jnp.asarray(x.shape[0], dtype))
    safe = jnp.maximum(n, 1)
    mx = psum(jnp.sum(x, 0)) / safe
    my = psum(jnp.sum(y, 0)) / safe
    xc, yc = x - mx, y - my
    batch = Moments(
        count=n,
        mean_x=mx,
        mean_y=my,
        m2_xx=psum(_gram(xc, xc)),
        m2_xy=psum(_gram(xc, yc)),
        m2_yy=psum(jnp.sum(yc * yc, 0)),
    )
    return _combine(state, batch)


def streaming_moments(fn: Callable, batches: Iterable, dtype: DTypeLike = jnp.float32) -> Moments:
    """Moments of ``(x, y) = fn(batch)`` over all batches, one jitted update per batch.

    Activations are never stored: each batch's rows are reduced to ``O(dx^2 + dx*dy)`` numbers
    inside one compiled program (``fn`` is traced into it). Batches of equal shape reuse the
    compiled program.

    Args:
      fn: ``batch -> (x, y)`` with ``x (n, dx)`` and ``y (n, dy)``; traced under ``jax.jit``.
      batches: an iterable of batches (any pytree ``fn`` accepts).
      dtype: accumulation dtype.

    Returns:
      The :class:`Moments` of all rows.

    Raises:
      ValueError: ``batches`` is empty.

    >>> import jax.numpy as jnp
    >>> batches = [jnp.arange(4.0).reshape(2, 2), jnp.arange(4.0, 8.0).reshape(2, 2)]
    >>> m = streaming_moments(lambda b: (b, b[:, :1] * 2), batches)
    >>> m.count.item(), m.cov_xy()[:, 0].tolist()
    (4.0, [10.0, 10.0])

    References:
      Paper 001, sec. II-D and Algorithm 1 (empirical moments from the T training samples).
    """

    @jax.jit
    def step(state, batch):
        x, y = fn(batch)
        return moments_update(state, x, y)

    state = None
    for batch in batches:
        if state is None:
            x, y = jax.eval_shape(fn, batch)
            state = moments_init(x.shape[1], y.shape[1], dtype)
        previous, state = state, step(state, batch)
        jax.block_until_ready(previous)  # bound the batches in flight (memory independent of T)
    if state is None:
        raise ValueError("batches: expected at least one batch, got none")
    return state
