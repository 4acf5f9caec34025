"""The error raised for a model structure the layer graph does not understand."""

from __future__ import annotations

import os

__all__ = ["GraphError", "user_line"]

_LIBRARY_DIRS = ("site-packages", "dist-packages", os.sep + "jax" + os.sep, "jaxprune")


def _fmt(frame) -> str:
    line = getattr(frame, "start_line", None) or getattr(frame, "line_num", "?")
    return f"{frame.file_name}:{line} ({frame.function_name})"


def user_line(source_info, call_sites=()) -> str:
    """``file:line (function)`` of the first frame of user code that produced an equation.

    Frames inside jax, flax, equinox, site-packages and jaxprune itself are skipped, so the
    line points at the user's model. An equation inlined from a nested call (``jnp.sort`` is
    jitted) is looked up at its call sites, innermost first; falls back to the innermost frame.
    """
    for info in (source_info, *reversed(call_sites)):
        line = _user_frame(info)
        if line is not None:
            return line
    return _user_frame(source_info, fallback=True) or "<unknown source line>"


def _user_frame(source_info, fallback=False):
    tb = getattr(source_info, "traceback", None)
    frames = list(getattr(tb, "frames", None) or []) if tb is not None else []
    for f in frames:
        name = f.file_name
        if not any(d in name for d in _LIBRARY_DIRS) or f"{os.sep}tests{os.sep}" in name:
            return _fmt(f)
    if fallback and frames:
        return _fmt(frames[0])
    return None


class GraphError(ValueError):
    """An operation on a channel path that jaxprune's layer graph does not understand.

    The message names the primitive and the user's source line. jaxprune never treats an op it
    does not know as elementwise: a wrong guess about which channels an op mixes would silently
    give wrong unit groups (the concatenation and attention bugs of other pruning tools).

    Attributes:
      primitive: the jaxpr primitive's name (or ``None`` for a structural error).
      where: the user's source line.
    """

    def __init__(self, message: str, primitive: str | None = None, where: str | None = None):
        self.primitive = primitive
        self.where = where
        parts = [message]
        if primitive is not None:
            parts.append(f"primitive: {primitive}")
        if where is not None:
            parts.append(f"at {where}")
        super().__init__("; ".join(parts))
