"""The rewritten equinox model: a module-level ``eqx.Module`` (equinox is optional: this
module is imported only for equinox models)."""

from __future__ import annotations

import types
from typing import Any

import equinox as eqx

from jaxprune.graph._rewritten import RewriteSpec, run_rewritten, signed_call
from jaxprune.graph._submodules import linen_only

__all__ = ["Rewritten"]


class _SignedCall:
    """``model.__call__`` with the original's signature (a per-model bound method)."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return Rewritten._call
        return types.MethodType(signed_call(obj.spec, Rewritten._call), obj)


class Rewritten(eqx.Module):
    """A rewritten equinox model: the original's program run on its (smaller) arrays.

    ``variables`` has the structure of the original's arrays
    (``eqx.partition(model, eqx.is_array)[0]``) with the new shapes; ``eqx.partition``,
    ``eqx.combine`` and ``eqx.filter_jit`` work as on any module. It is called with the
    original's signature and pickles when the original's static part does (a module-level
    class whose fields pickle; ``eqx.nn.MLP``'s activation does not) or, for any original,
    saves with :func:`jaxprune.graph.save_rewritten` and loads with
    :func:`jaxprune.graph.load_rewritten` on the original constructed again; its static
    ``spec`` compares by value.

    >>> import jax, jax.numpy as jnp, numpy as np, equinox as eqx, jaxprune as jp
    >>> net = eqx.nn.MLP(5, 2, 4, 1, key=jax.random.key(0))
    >>> x = jnp.ones((5,)); keep = {"layers/0": np.array([1, 0, 1, 1], bool)}
    >>> a = jp.prune_units(net, keep, x).model
    >>> b = jp.prune_units(net, keep, x).model
    >>> jax.tree.structure(a) == jax.tree.structure(b), a(x).shape   # one filter_jit compile
    (True, (2,))
    """

    variables: Any
    spec: RewriteSpec = eqx.field(static=True)

    def _call(self, *args, **kwargs):
        import jax

        leaves = jax.tree.leaves(self.variables)
        return (self.spec.runner or run_rewritten)(self.spec, leaves, args, kwargs)

    __call__ = _SignedCall()

    def submodule(self, path: str):
        """Linen narrow models only (``Rewritten.submodule`` there): raises ``TypeError``."""
        raise linen_only("equinox", path)
