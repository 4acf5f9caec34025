"""What every rewrite hands back: the rewritten model, its variables and a report."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np

__all__ = ["RewriteReport", "RewriteResult"]


@dataclasses.dataclass(frozen=True)
class RewriteReport:
    """What a rewrite changed.

    Attributes:
      params_before: trainable parameters of the model given to the rewrite (linen: the
        ``params`` collection; NNX: the ``nnx.Param`` variables; equinox: its floating-point
        arrays; a function: every leaf of its params).
      params_after: the same count for the rewritten model.
      changes: one human-readable line per layer or unit group changed
        (``"Dense_0: 64 -> 41 units"``, ``"Dense_0 + Dense_1 -> Dense_0"``).
      mse: :func:`~jaxprune.fuse` only: ``{(first, second): mse}``, the fused pair's MSE per
        example on the data; ``None`` for the other rewrites.
      output_error: the largest absolute difference between the original's and the rewritten
        model's outputs on the given inputs, where the rewrite measured it; else ``None``.

    >>> r = RewriteReport(55, 13, changes=("Dense_1 + Dense_2 -> Dense_1",))
    >>> print(r.summary())
    55 -> 13 parameters (-76.4%)
      Dense_1 + Dense_2 -> Dense_1
    """

    params_before: int
    params_after: int
    changes: tuple[str, ...] = ()
    mse: dict | None = None
    output_error: float | None = None

    def summary(self) -> str:
        """The report as a few lines of text: parameter counts, then one line per change."""
        before, after = self.params_before, self.params_after
        pct = f" ({(after - before) / before:+.1%})" if before else ""
        lines = [f"{before} -> {after} parameters{pct}"]
        lines += [f"  {c}" for c in self.changes] or ["  (nothing changed)"]
        if self.mse is not None:
            lines += [f"  fusion MSE {' + '.join(k)}: {float(v):.4g}" for k, v in self.mse.items()]
        if self.output_error is not None:
            lines.append(f"  max |output difference|: {self.output_error:.3g}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        mse = "" if self.mse is None else f", mse={ {k: float(v) for k, v in self.mse.items()} }"
        err = "" if self.output_error is None else f", output_error={self.output_error:.3g}"
        return (
            f"RewriteReport(params_before={self.params_before}, "
            f"params_after={self.params_after}, changes={self.changes!r}{mse}{err})"
        )


@dataclasses.dataclass(frozen=True)
class RewriteResult:
    """A rewritten model of the original's kind, its variables, and what changed.

    Read its fields by name (it is not a tuple): ``r.model``, ``r.variables``, ``r.report``.

    Attributes:
      model: the rewritten model, of the kind given: a ``flax.linen`` Module, an
        ``nnx.Module``, an ``eqx.Module`` or, for a function ``f(params, *args)``, its new
        ``apply_fn``.
      variables: linen: the variables to call ``model.apply(variables, x)`` with; a function:
        its new params; NNX: the pure dict of the new module's state (the module holds it:
        call ``model(x)``); equinox: ``eqx.filter(model, eqx.is_array)``, the arrays the new
        module holds (call ``model(x)``).
      report: a :class:`RewriteReport`.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxprune as jp
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.Dense(3)(x)                      # two linear layers fold into one
    ...         return nn.Dense(2)(h)
    >>> x = jnp.ones((1, 4)); net = Net(); v = net.init(jax.random.key(0), x)
    >>> r = jp.collapse(net, v, x)
    >>> r.report.params_before, r.report.params_after, r.report.changes
    (23, 10, ('Dense_0 + Dense_1 -> Dense_0',))
    >>> r.model.apply(r.variables, x).shape
    (1, 2)
    """

    model: Any
    variables: Any
    report: RewriteReport

    def __iter__(self):
        raise TypeError(
            "RewriteResult is not a tuple: read its fields by name (result.model, "
            "result.variables, result.report)"
        )

    def summary(self) -> str:
        """The model's kind and :meth:`RewriteReport.summary`."""
        return f"{type(self.model).__name__} rewritten: {self.report.summary()}"

    def __repr__(self) -> str:
        shapes = _shapes(self.variables)
        return (
            f"RewriteResult(model={type(self.model).__name__}, variables=<{shapes}>, "
            f"report={self.report!r})"
        )

    def _repr_pretty_(self, p, cycle) -> None:  # IPython / notebooks
        p.text(self.summary())


def _shapes(tree) -> str:
    leaves = jax.tree.leaves(tree)
    return f"{len(leaves)} arrays, {sum(int(np.size(a)) for a in leaves)} entries"


def count_params(leaves: Mapping[str, Any], trainable: Callable[[str], bool]) -> int:
    """The number of entries in the leaves whose path ``trainable`` accepts."""
    return int(sum(int(np.prod(np.shape(a))) for p, a in leaves.items() if trainable(p)))


def result(
    model,
    variables,
    *,
    before: int,
    after: int,
    changes: Iterable[str],
    mse: dict | None = None,
    output_error: float | None = None,
) -> RewriteResult:
    """A :class:`RewriteResult` (shared by the rewrites)."""
    report = RewriteReport(int(before), int(after), tuple(changes), mse, output_error)
    return RewriteResult(model, variables, report)
