"""Checks of data and variables shared by training and the analyses, each naming the argument.

Values traced under ``jit``/``vmap`` cannot be inspected: their NaN/inf check is skipped (the
shapes are still checked), so an analysis called inside ``jit`` is checked where its caller
holds the concrete values.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_data",
    "check_finite",
    "check_fraction",
    "check_lengths",
    "check_xy",
    "n_rows",
    "rows",
]

_count_nonfinite = jax.jit(lambda a: jnp.sum(~jnp.isfinite(a)))


def _nonfinite(leaf) -> int:
    """NaN/inf entries of ``leaf``: counted by NumPy where the values are in host memory (no
    compilation per shape), by one jitted reduction on an accelerator (no copy to the host)."""
    if isinstance(leaf, jax.Array) and any(d.platform != "cpu" for d in leaf.devices()):
        return int(_count_nonfinite(leaf))
    return int(np.count_nonzero(~np.isfinite(np.asarray(leaf))))


def _float_array(leaf) -> bool:
    if isinstance(leaf, jax.core.Tracer):
        return False  # traced: the values are not known here
    if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, complex)):
        return False  # not an array (e.g. a static field of a module)
    return bool(jnp.issubdtype(jnp.result_type(leaf), jnp.inexact))


def check_finite(name: str, tree: Any) -> None:
    """Raises ``ValueError`` naming the first leaf of ``tree`` that holds NaN or inf.

    Integer and boolean leaves are always finite; traced leaves and leaves that are not arrays
    are skipped. One reduction per float leaf; the index of the first bad entry is only computed
    when there is one.

    >>> import jax.numpy as jnp
    >>> check_finite("data", {"x": jnp.array([1.0, jnp.nan])})
    Traceback (most recent call last):
    ...
    ValueError: data['x']: expected finite values, got 1 NaN/inf of 2 entries (first at index (1,))
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not _float_array(leaf):
            continue
        count = _nonfinite(leaf)
        if count:
            a = np.asarray(leaf)
            first = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)}: expected finite values, got {count} "
                f"NaN/inf of {a.size} entries (first at index {first})"
            )


def n_rows(x) -> int:
    """The leading length of ``x``: an array, or a pytree of arrays (a model's several inputs)
    sharing their leading example axis, read from its first leaf."""
    leaves = jax.tree.leaves(x)
    shape = jnp.shape(leaves[0]) if leaves else ()
    return shape[0] if shape else 0


def rows(x, index):
    """``x[index]`` of an array, or of every array of a pytree of inputs."""
    return jax.tree.map(lambda a: a[index], x)


def check_lengths(x, y, name: str = "data") -> None:
    """Raises ``ValueError`` starting with ``name`` unless ``x`` and ``y`` have the same
    non-zero length (leading axis).

    ``x`` may be a tuple (or any pytree) of arrays, a model's several inputs: every input must
    have the leading length of the first, and the error names the one that does not.

    >>> import jax.numpy as jnp
    >>> check_lengths((jnp.ones((3, 2)), jnp.ones((2, 5))), jnp.ones(3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: data[0][1]: expected the leading length 3 of data[0][0] (...), got shape (2, 5)
    """
    if not isinstance(x, (jax.Array, np.ndarray)) and len(jax.tree.leaves(x)) != 1:
        flat = jax.tree_util.tree_leaves_with_path(x)
        if not flat:
            raise ValueError(f"{name}: expected x to hold at least one array, got {x!r}")
        first_path, first = flat[0]
        n0 = jnp.shape(first)[:1]
        for path, leaf in flat:
            if jnp.shape(leaf)[:1] != n0:
                raise ValueError(
                    f"{name}[0]{jax.tree_util.keystr(path)}: expected the leading length "
                    f"{n0[0] if n0 else None} of {name}[0]{jax.tree_util.keystr(first_path)} "
                    f"(every input of x shares the example axis), got shape {jnp.shape(leaf)}"
                )
        x = first
    xs, ys = jnp.shape(x), jnp.shape(y)
    if len(xs) < 1 or xs[0] == 0 or ys[:1] != xs[:1]:
        raise ValueError(f"{name}: x and y need the same non-zero length, got {xs}, {ys}")


def check_xy(x, y, name: str = "data", names: tuple[str, str] | None = None) -> None:
    """Raises ``ValueError`` unless ``x`` and ``y`` have the same non-zero length and finite
    values (where concrete).

    The length error starts with ``name``; a NaN/inf is named ``names`` (default
    ``name[0]``/``name[1]``, as for ``data=(x, y)``).

    >>> import jax.numpy as jnp
    >>> check_xy(jnp.ones((3, 2)), jnp.ones(2))
    Traceback (most recent call last):
    ...
    ValueError: data: x and y need the same non-zero length, got (3, 2), (2,)
    """
    check_lengths(x, y, name)
    names = names or (f"{name}[0]", f"{name}[1]")
    check_finite(names[0], x)
    check_finite(names[1], y)


def check_data(data, name: str = "data") -> tuple[Any, Any]:
    """``(x, y)`` of ``data`` after :func:`check_xy`; ``data`` must be a pair (or longer
    sequence) of arrays.

    >>> check_data([1.0, 2.0])
    Traceback (most recent call last):
    ...
    ValueError: data: x and y need the same non-zero length, got (), ()
    """
    if isinstance(data, (str, bytes)) or not isinstance(data, (tuple, list)) or len(data) < 2:
        raise ValueError(f"{name}: expected a pair (x, y) of arrays, got {type(data).__name__}")
    x, y = data[0], data[1]
    check_xy(x, y, name)
    return x, y


def check_fraction(fraction: float) -> float:
    """``fraction`` as a Python float after checking that it is one in ``[0, 1]``; raises
    ``ValueError`` naming the argument ``fraction`` otherwise (also for a traced value).

    >>> check_fraction(1.5)
    Traceback (most recent call last):
    ...
    ValueError: fraction: expected a value in [0, 1], got 1.5
    """
    try:
        f = float(fraction)
    except (TypeError, jax.errors.ConcretizationTypeError):
        raise ValueError(f"fraction: expected a Python float in [0, 1], got {fraction!r}") from None
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"fraction: expected a value in [0, 1], got {fraction}")
    return f
