"""MSE-optimal affine map from moments: Theorem 1 and Corollary 1 of paper 001.

Flax kernels act on the right (``y = x @ K + b``), so the paper's ``W~ = W2 C_{a1a0} C_{a0}^{-1}``
is computed here as ``K~ = C_x^{-1} C_xy`` with ``x = a0`` and ``y = W2 a1 + b2`` (the moments of
the second layer's pre-activation ``y`` hold ``W2 C_{a1a0}`` and ``W2 C_{a1} W2^T`` directly, so
``C_{a1}`` (``L1 x L1``) is never formed).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Int

from jaxprune._moments import Moments

__all__ = ["FusionWarning", "fusion_mse", "fusion_weights"]

_HI = jax.lax.Precision.HIGHEST
METHODS = ("auto", "cholesky", "lstsq", "cg")


class FusionWarning(UserWarning):
    """The input covariance is (nearly) singular, or an iterative solve did not converge."""


def _default_rcond(dx: int, dtype) -> float:
    return float(dx * np.finfo(np.dtype(dtype)).eps)


def _mask_groups(c: jax.Array, groups) -> jax.Array:
    g = jnp.asarray(groups)
    return jnp.where(g[:, None] == g[None, :], c, 0)


def fusion_mse(
    moments: Moments, kernel: Float[Array, "dx dy"], bias: Float[Array, " dy"] | None = None
) -> jax.Array:
    """Mean squared error ``E||(x K + b) - y||^2`` of any affine map, from moments alone.

    ``tr(C_y) - 2 tr(K^T C_xy) + tr(K^T C_x K) + ||mean_x K + b - mean_y||^2``; with ``bias=None``
    the MSE-optimal bias for ``kernel`` is assumed (the last term vanishes, Eq. 22). The result is
    clipped at 0: an MSE cannot be negative, but for an exact fusion the difference of traces
    rounds to about ``-eps * tr(C_y)`` (e.g. ``-2e-4`` in float32 for ``tr(C_y) ~ 1e3``).

    >>> import jax.numpy as jnp
    >>> from jaxprune._moments import moments_init, moments_update
    >>> x = jnp.array([[0.0], [1.0], [2.0]])
    >>> m = moments_update(moments_init(1, 1), x, 2 * x + 1)
    >>> round(float(fusion_mse(m, jnp.array([[2.0]]))), 6), float(fusion_mse(m, jnp.zeros((1, 1))))
    (0.0, 2.6666667461395264)

    References:
      Paper 001, Eqs. (4), (26)-(27).
    """
    k = jnp.asarray(kernel, moments.count.dtype)
    mse = (
        jnp.sum(moments.var_y())
        - 2 * jnp.sum(k * moments.cov_xy())
        + jnp.sum(k * jnp.matmul(moments.cov_xx(), k, precision=_HI))
    )
    if bias is not None:
        r = jnp.matmul(moments.mean_x, k, precision=_HI) + bias - moments.mean_y
        mse = mse + jnp.sum(r * r)
    return jnp.maximum(mse, 0)


def fusion_weights(
    moments: Moments,
    *,
    method: str = "auto",
    rcond: float | None = None,
    groups: Int[ArrayLike, " dx"] | None = None,
    cg_tol: float = 1e-6,
    cg_maxiter: int | None = None,
    context: str = "",
) -> tuple[Float[Array, "dx dy"], Float[Array, " dy"], jax.Array]:
    """Solves ``K C_x = C_xy`` for the MSE-optimal affine map ``x -> x K + b`` (Theorem 1).

    Methods (never an explicit inverse):

    * ``"auto"``: Cholesky solve if ``C_x`` is well conditioned, else the minimum-norm
      least-squares solution with a :class:`FusionWarning`. "Ill conditioned" means
      ``lambda_min(C_x) <= rcond * lambda_max(C_x)`` (eigenvalues by ``eigvalsh``).
    * ``"cholesky"``: Cholesky solve, no check (NaN if ``C_x`` is singular).
    * ``"lstsq"``: minimum-norm solution of ``C_x K = C_xy`` (as ``jnp.linalg.lstsq``:
      singular values below ``rcond * sigma_max`` are treated as zero), the paper's Eq. (25);
      computed from ``eigh`` of the symmetric ``C_x`` (its singular values are the eigenvalues'
      magnitudes), about three times cheaper than ``lstsq``'s SVD. With fewer samples than
      input dimensions ``"auto"`` goes here directly, without computing eigenvalues first.
    * ``"cg"``: conjugate gradients on ``C_x K = C_xy`` (all columns as one block operator,
      matvecs only; the paper's suggestion for layers too large to factor). Warns if the relative
      residual stays above ``cg_tol``.

    Args:
      moments: moments of ``x = a0`` (flattened, or image patches) and ``y = W2 H1(a0) + b2``.
      method: one of ``"auto"``, ``"cholesky"``, ``"lstsq"``, ``"cg"``.
      rcond: relative eigenvalue/singular-value cutoff; default ``dx * eps(dtype)`` (NumPy's
        ``lstsq`` default applied to ``C_x``).
      groups: optional ``(dx,)`` labels; covariances between coordinates with different labels
        are taken as zero (Theorem 2's uncorrelated input channels, Eq. 15).
      cg_tol: relative residual tolerance for ``"cg"``.
      cg_maxiter: iteration cap for ``"cg"`` (default ``10 * dx``).
      context: text naming the layers, prefixed to warnings.

    Returns:
      ``(kernel (dx, dy), bias (dy,), mse)`` where ``bias = mean_y - mean_x @ kernel`` (Eq. 7)
      and ``mse`` is Corollary 1, ``tr(C_y) - tr(K^T C_xy)``, per row, summed over the ``dy``
      outputs, clipped at 0 (for an exact fusion the difference rounds to a tiny negative
      number); with ``groups`` the kernel is not the unconstrained optimum and ``mse`` is the
      exact quadratic form of :func:`fusion_mse` instead.

    Raises:
      ValueError: unknown ``method``, no samples, or non-finite moments.

    >>> import jax, jax.numpy as jnp
    >>> from jaxprune._moments import moments_init, moments_update
    >>> x = jax.random.normal(jax.random.key(0), (256, 3))
    >>> y = jnp.tanh(x) @ jnp.ones((3, 2))            # W2 H1(a0) with H1 = tanh
    >>> k, b, mse = fusion_weights(moments_update(moments_init(3, 2), x, y))
    >>> k.shape, bool(mse < jnp.sum(jnp.var(y, axis=0)))
    ((3, 2), True)

    References:
      Paper 001, Theorem 1 (Eq. 7), Eq. (25) for singular ``C_x``, Corollary 1 (Eq. 8),
      sec. II-D (conjugate gradients).
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    where = f"{context}: " if context else ""
    dx = moments.mean_x.shape[0]
    dtype = moments.count.dtype
    rcond = _default_rcond(dx, dtype) if rcond is None else float(rcond)
    mask = None if groups is None else jnp.asarray(groups)
    # fewer samples than inputs already decides lstsq: no eigenvalues then (an eigvalsh of
    # C_a0 costs about as much as the solve itself, minutes for thousands of inputs on a CPU)
    spectrum = method == "auto" and float(moments.count) >= dx
    n, finite, lo, hi = (float(v) for v in _diagnose(moments, mask, spectrum))
    if n <= 0:
        raise ValueError(f"{where}moments: no samples")
    if not finite:
        raise ValueError(f"{where}data: non-finite (NaN/inf) activations in the moments")
    if n < dx and method in ("auto", "cholesky"):
        warnings.warn(
            f"{where}{int(n)} samples for {dx} input dimensions: the covariance C_a0 is rank "
            "deficient; using the minimum-norm least-squares solution",
            FusionWarning,
            stacklevel=2,
        )
        method = "lstsq"
    if method == "auto":
        if hi <= 0 or lo <= rcond * hi:
            warnings.warn(
                f"{where}C_a0 is singular or ill conditioned (eigenvalues {lo:.3g} .. {hi:.3g}, "
                f"rcond={rcond:.3g}); using the minimum-norm least-squares solution",
                FusionWarning,
                stacklevel=2,
            )
            method = "lstsq"
        else:
            method = "cholesky"
    maxiter = 10 * dx if cg_maxiter is None else int(cg_maxiter)
    kernel, bias, mse, rel = _solve(moments, mask, method, rcond, cg_tol, maxiter)
    if method == "cg" and float(rel) > 10 * cg_tol:
        warnings.warn(
            f"{where}conjugate gradients stopped at relative residual {float(rel):.3g} "
            f"(cg_tol={cg_tol:g}, {maxiter} iterations)",
            FusionWarning,
            stacklevel=2,
        )
    return kernel, bias, mse


@functools.partial(jax.jit, static_argnums=2)
def _diagnose(moments: Moments, mask, with_eigenvalues: bool):
    """``(count, all finite, lambda_min, lambda_max)`` in one compiled call."""
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in moments]))
    if not with_eigenvalues:
        z = jnp.zeros((), moments.count.dtype)
        return moments.count, finite, z, z
    c = moments.cov_xx() if mask is None else _mask_groups(moments.cov_xx(), mask)
    eig = jnp.linalg.eigvalsh(jnp.where(finite, c, 0))
    return moments.count, finite, eig[0], eig[-1]


def _min_norm_solve(c, b, rcond):
    """``jnp.linalg.lstsq(c, b, rcond)[0]`` for a symmetric ``c``, from its eigendecomposition.

    The singular values of a symmetric matrix are its eigenvalues' magnitudes (and the singular
    vectors its eigenvectors, up to sign), so the pseudo-inverse with the same cutoff ``|lambda|
    >= rcond * max |lambda|`` gives the same minimum-norm solution; ``eigh`` costs about a third
    of the SVD ``lstsq`` runs (measured on a 2,048-wide rank-300 covariance on a 2-core CPU).
    """
    w, v = jnp.linalg.eigh(c)
    keep = (jnp.abs(w) >= rcond * jnp.max(jnp.abs(w))) & (w != 0)
    inv = jnp.where(keep, 1 / jnp.where(keep, w, 1), 0)
    vtb = jnp.matmul(v.T, b, precision=_HI)
    return jnp.matmul(v, inv[:, None] * vtb, precision=_HI)


@functools.partial(jax.jit, static_argnums=(2, 5))
def _solve(moments: Moments, mask, method: str, rcond, cg_tol, maxiter: int):
    c = moments.cov_xx() if mask is None else _mask_groups(moments.cov_xx(), mask)
    cxy = moments.cov_xy()
    rel = jnp.zeros((), c.dtype)
    if method == "cholesky":
        kernel = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(c), cxy)
    elif method == "lstsq":
        kernel = _min_norm_solve(c, cxy, rcond)
    else:
        kernel, _ = jax.scipy.sparse.linalg.cg(
            lambda v: jnp.matmul(c, v, precision=_HI), cxy, tol=cg_tol, maxiter=maxiter
        )
        res = jnp.linalg.norm(jnp.matmul(c, kernel, precision=_HI) - cxy)
        rel = res / jnp.maximum(jnp.linalg.norm(cxy), jnp.finfo(c.dtype).tiny)
    bias = moments.mean_y - jnp.matmul(moments.mean_x, kernel, precision=_HI)
    if mask is None:
        mse = jnp.maximum(jnp.sum(moments.var_y()) - jnp.sum(kernel * cxy), 0)
    else:
        mse = fusion_mse(moments, kernel)
    return kernel, bias, mse, rel
