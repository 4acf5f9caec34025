"""Channel layouts: what each value of a traced program carries along which axis.

Two kinds of annotation flow through the program:

* :class:`Act`, an activation. Its channel axis is ``axis``; along it the channels are the
  concatenation of ``segs`` (each a range of one *space*, the output channels of one layer or
  one model input), laid out as ``outer`` tiles of ``inner``-fold repeated channels: index
  ``r`` of the axis holds channel ``(r // inner) % C`` (``C`` = the sum of the segment lengths).
  ``(N, H, W, C)`` flattened to ``(N, H*W*C)`` has ``outer = H*W``; flattened after a transpose
  to channels-first it has ``inner = H*W``. ``axis=None`` marks a value with no channel
  structure (per-example statistics from a reduction over channels). ``affine`` holds the
  layers this value is still an affine function of (no nonlinearity since), or None for a
  nonlinear value: linear chains. ``carried`` (``axis=None`` only) holds, like
  :attr:`PVal.axes`, the parameter axes a per-example value was multiplied with (a norm's
  ``scale * rsqrt(var)``): they become channel slices where it meets the channels.
* :class:`PVal`, a value computed from parameters and constants only. ``axes[i]`` lists the
  ``(leaf path, leaf axis)`` pairs whose index runs along axis ``i`` of the value (a bias
  reshaped to ``(1, C)`` and broadcast has ``axes[-1] = {(bias, 0)}``). ``uniform`` holds the
  axes along which it was broadcast (a causal mask ``(T, T)`` broadcast over heads is the same
  for every head: not a constant aligned with them).
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["Act", "PVal", "Seg", "reshape_axis_map"]

Seg = tuple[int, int, int]  # (space id, start, stop)


@dataclasses.dataclass(frozen=True)
class Act:
    shape: tuple[int, ...]
    axis: int | None
    segs: tuple[Seg, ...] = ()
    outer: int = 1
    inner: int = 1
    affine: frozenset[int] | None = frozenset()
    carried: tuple[frozenset[tuple[str, int]], ...] = ()  # axis None: parameters' axes (PVal)

    @property
    def channels(self) -> int:
        return sum(b - a for _, a, b in self.segs)

    def spaces(self) -> set[int]:
        return {s for s, _, _ in self.segs}

    def moved(self, shape, axis, **kw) -> Act:
        return dataclasses.replace(self, shape=tuple(shape), axis=axis, **kw)


@dataclasses.dataclass(frozen=True)
class PVal:
    shape: tuple[int, ...]
    axes: tuple[frozenset[tuple[str, int]], ...]
    leaves: frozenset[str] = frozenset()
    value: float | None = None  # a known scalar constant (a literal), else None
    uniform: frozenset[int] = frozenset()  # axes along which the value is broadcast (constant)

    @staticmethod
    def const(shape, value=None) -> PVal:
        return PVal(tuple(shape), tuple(frozenset() for _ in shape), frozenset(), value)

    @staticmethod
    def leaf(path: str, shape) -> PVal:
        return PVal(
            tuple(shape),
            tuple(frozenset({(path, i)}) for i in range(len(shape))),
            frozenset({path}),
        )

    def opaque(self, shape) -> PVal:
        """Same leaves, no axis mapping (after an op whose axis effect is not tracked)."""
        return PVal(tuple(shape), tuple(frozenset() for _ in shape), self.leaves)


def reshape_axis_map(old: tuple[int, ...], new: tuple[int, ...], axis: int):
    """Where axis ``axis`` of ``old`` goes in a row-major reshape to ``new``.

    Returns ``(new_axis, outer_factor, inner_factor)``: the old axis lies inside ``new_axis``,
    with ``outer_factor`` old elements' worth of axes merged before it and ``inner_factor``
    after it; or ``None`` if the reshape splits the axis (its extent is not a whole run of new
    axes).
    """
    prefixes = {math.prod(old[:j]) for j in range(len(old) + 1)}
    pre = math.prod(old[:axis])
    post = pre * old[axis]
    acc = 1
    for k, size in enumerate(new):
        start, stop = acc, acc * size
        acc = stop
        if size == 1 and old[axis] != 1:
            continue
        if start <= pre and post <= stop and start in prefixes and stop in prefixes:
            return k, pre // start, stop // post
    return None
