"""The one check of unit masks: every function taking ``{unit: mask}`` uses it.

One message shape: ``arg['unit']: expected shape (w,) and dtype bool, got shape (5,) and dtype
float32``. Shapes and dtypes are static, so the check also runs on traced masks (under ``jit``
and, per example, under ``vmap``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_mask", "check_mask_names"]


def check_mask_names(masks, arg: str, known: Iterable[str], what: str = "unit(s)") -> dict:
    """``dict(masks)``; raises ``ValueError`` naming ``arg`` for a non-mapping or for names not
    in ``known`` (listing the known ones)."""
    if masks is not None and not isinstance(masks, Mapping):
        raise ValueError(
            f"{arg}: expected a mapping {{unit: mask[width]}}, got {type(masks).__name__}"
        )
    masks = dict(masks or {})
    known = list(known)
    unknown = sorted(set(masks) - set(known), key=str)
    if unknown:
        raise ValueError(f"{arg}: unknown {what} {unknown}; the model's units are {known}")
    return masks


def check_mask(
    arg: str, name: str, mask, shape: tuple[int, ...], *, multiplier: bool = False
) -> jax.Array:
    """``mask`` as a bool array (or, with ``multiplier``, as given) after checking it.

    Args:
      arg: the argument's name (``"keep"``, ``"frozen"``, ``"masks"``).
      name: the unit (or layer) the mask is for.
      mask: the mask; may be traced.
      shape: the expected shape (``(width,)``; a seed axis in front where states are stacked).
      multiplier: accept real (float) values too: they multiply the unit's channels
        (:meth:`Graph.apply`). Otherwise only bool is accepted: ``astype(bool)`` would count a
        0.5 as True, and integers could be indices (``[0, 2]``) rather than a mask.

    Raises:
      ValueError: ``arg['name']: expected shape (w,) and dtype bool, got shape <s> and dtype <d>``.

    >>> check_mask("keep", "w", np.array([1.0, 0.0, 1.0]), (3,))
    Traceback (most recent call last):
    ...
    ValueError: keep['w']: expected shape (3,) and dtype bool, got shape (3,) and dtype float64
    """
    m = mask if isinstance(mask, jax.Array | np.ndarray) else np.asarray(mask)
    ok = m.dtype == bool or (
        multiplier
        and (jnp.issubdtype(m.dtype, jnp.integer) or jnp.issubdtype(m.dtype, jnp.floating))
    )
    if tuple(m.shape) != tuple(shape) or not ok:
        want = "bool, integer or float" if multiplier else "bool"
        raise ValueError(
            f"{arg}[{name!r}]: expected shape {tuple(shape)} and dtype {want}, got shape "
            f"{tuple(m.shape)} and dtype {m.dtype}"
        )
    return jnp.asarray(m) if multiplier else jnp.asarray(m, bool)
