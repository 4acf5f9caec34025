"""The rewritten linen model: a module-level ``flax.linen`` Module running the original's program.

Kept apart from :mod:`._rewritten` so that the class is importable by name (pickle) and the
linen-specific parts (initialization from the original's ``init``, RNG streams, mutable
collections) live together.
"""

from __future__ import annotations

import types

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.graph._rewritten import RewriteSpec, initial_leaves, run_rewritten, signed_call

__all__ = ["Rewritten"]


def _rebuild(spec, name):
    return Rewritten(spec, name=name)


class Rewritten(nn.Module):
    """A rewritten linen model: the original's program run on the new (smaller) variables.

    Its variables have the original's nested structure (``{"params": {"Dense_0": ...}}``),
    minus what the rewrite removed, plus what it added. It is called as the original is, with
    the same signature (``inspect.signature(model.__call__)``); ``rngs=`` streams (dropout),
    ``mutable=`` collections (BatchNorm statistics in train mode) and keyword arguments such
    as ``train=True`` reach the original's program.

    ``init(key, *args)`` is the rewrite applied to the original's ``init(key, *args)``, so every
    entry has the distribution of the original layer's own initializer: pruning keeps the
    kept slices of the original's fresh initialization (bit for bit: ``narrow.init(key, x)``
    is ``original.init(key, x)`` pruned), ``jp.collapse`` folds the fresh original,
    ``swap_relu_for_prelu`` adds the slopes' initial value and ``fold_linear`` folds the fresh
    pair; ``jp.fuse`` (data-dependent) draws the fused kernel's entries from the first fused
    layer's initializer (fresh draws of the original's first kernel at its own shape) and its
    bias from that layer's bias. Non-parameter collections (BatchNorm statistics) are the
    original's initial values, sliced with their channels.

    Two rewrites of equal model definitions with equal descriptions compare and hash equal
    (a ``jax.jit`` static argument compiles once). The model pickles: the pickle holds the
    original module (its class is imported by name when loaded), the rewrite's description and
    no arrays, so ``(model, variables)`` saved in one process load in another. The original
    module must pickle itself: a module-level class whose fields pickle (a module that holds
    flax layers as fields, such as ``nn.Sequential([nn.Dense(4), ...])``, holds their
    initializer closures and does not; the usual ``@nn.compact`` style does). For any
    original, :func:`jaxprune.graph.save_rewritten` writes ``(model, variables)`` to a file
    without pickle and :func:`jaxprune.graph.load_rewritten` rebuilds them on the original
    module constructed again (its structure is checked).

    >>> import pickle, jax, jax.numpy as jnp, numpy as np, jaxprune as jp
    >>> net = jp.models.MLP(hidden=(4,), out=2)
    >>> x = jnp.ones((3, 5)); v = net.init(jax.random.key(0), x)
    >>> r = jp.prune_units(net, v, {"relu_0": np.array([1, 0, 1, 1], bool)}, x)
    >>> narrow, nv = r.model, r.variables
    >>> blob = pickle.dumps((narrow, jax.device_get(nv)))      # e.g. to a file
    >>> loaded, lv = pickle.loads(blob)
    >>> loaded == narrow, bool(jnp.array_equal(loaded.apply(lv, x), narrow.apply(nv, x)))
    (True, True)
    >>> w = narrow.init(jax.random.key(1), x)["params"]["relu_0"]["kernel"]
    >>> w0 = net.init(jax.random.key(1), x)["params"]["relu_0"]["kernel"]
    >>> bool(jnp.array_equal(w, w0[:, [0, 2, 3]]))     # init: the original's, pruned
    True
    """

    spec: RewriteSpec

    def __post_init__(self):
        super().__post_init__()
        call = signed_call(self.spec, type(self).__call__)
        object.__setattr__(self, "__call__", types.MethodType(call, self))

    def __reduce__(self):
        return _rebuild, (self.spec, self.name)

    def __eq__(self, other):
        if not isinstance(other, Rewritten):
            return NotImplemented
        return self.spec == other.spec and self.name == other.name

    def __hash__(self):
        return hash((Rewritten, self.spec, self.name))

    def submodule(self, path: str) -> nn.Module:
        """The original's submodule at ``path``, cloned with its narrowed constructor fields.

        ``model.submodule("Block_0/MultiHeadDotProductAttention_0")`` is the original's
        ``nn.MultiHeadDotProductAttention`` with the new ``num_heads``, ``qkv_features`` and
        ``out_features``; applied to that path's subtree of the rewritten variables it computes
        what that part of the rewritten model computes. Flax's own layers are rebuilt (Dense,
        DenseGeneral, Conv, ConvTranspose, Embed, LayerNorm, RMSNorm, BatchNorm,
        MultiHeadDotProductAttention, SelfAttention), each clone checked by initializing it to
        the narrowed shapes; a submodule none of whose variables changed is its unbound clone.
        Recorded by :func:`~jaxprune.prune_units` for linen models (not kept by pickling or
        ``save_rewritten``: flax layers hold initializer closures).

        Args:
          path: the submodule's path, its names joined by ``/`` as in the variables.

        Returns:
          An unbound ``flax.linen.Module``.

        Raises:
          KeyError: for a path that names no submodule called in the original.
          ValueError: for a submodule whose variables changed but whose class is not one of
            those layers (a user's own module holding narrowed layers) or whose clone does not
            initialize to the narrowed shapes, naming its class, path and shapes.

        >>> import jax, jax.numpy as jnp, flax.linen as nn, numpy as np, jaxprune as jp
        >>> class Net(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x):
        ...         h = nn.relu(nn.Dense(4)(x))
        ...         return nn.Dense(2)(h)
        >>> x = jnp.ones((3, 5)); net = Net(); v = net.init(jax.random.key(0), x)
        >>> r = jp.prune_units(net, v, {"Dense_0": np.array([1, 0, 1, 0], bool)}, x)
        >>> r.model.submodule("Dense_0").features
        2

        References:
          The submodules are captured with flax's ``nn.intercept_methods``; the narrowing is
          :func:`~jaxprune.prune_units`'s (structural pruning of unit groups).
        """
        found = {n.path: n for n in self.spec.submodules}
        if path not in found:
            raise KeyError(
                f"path: no submodule {path!r} was recorded for this rewritten model; recorded: "
                f"{sorted(found) or 'none (only prune_units records them)'}"
            )
        n = found[path]
        if n.module is None:
            raise ValueError(f"submodule({path!r}): {n.error}")
        return n.module

    @nn.compact
    def __call__(self, *args, **kwargs):
        spec = self.spec
        streams = {name: lazy.as_jax_rng() for name, lazy in self.scope.rngs.items()}
        tree = jax.tree.unflatten(spec.new_treedef or spec.treedef, list(spec.new_avals))
        initial = None
        if self.is_initializing():
            leaves = initial_leaves(spec, streams, args, kwargs)
            initial = jax.tree.unflatten(spec.new_treedef or spec.treedef, leaves)
        got = {}
        for col, tops in tree.items():
            got[col] = {}
            for top in tops:

                def value(*_, col=col, top=top):
                    if initial is None:  # flax checks an existing variable's shape with this
                        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree[col][top])
                    return initial[col][top]

                if col == "params":
                    got[col][top] = self.param(top, value)
                else:
                    got[col][top] = self.variable(col, top, value).value
        mutable = [c for c in tree if c != "params" and self.is_mutable_collection(c)]
        asked = self.scope.mutable  # collections the rewrite removed may still be asked for
        if isinstance(asked, (str, list, tuple)):  # (a folded BatchNorm's batch_stats)
            asked = [asked] if isinstance(asked, str) else asked
            mutable += [c for c in asked if c != "params" and c not in mutable]
        call_kwargs = dict(kwargs)
        if mutable:
            call_kwargs["mutable"] = mutable
        streams.pop("params", None)  # the variables are complete: nothing draws params
        if streams and "rngs" not in call_kwargs:
            call_kwargs["rngs"] = streams  # the original's modules draw from the same streams
        leaves = jax.tree.leaves(got)
        out = (spec.runner or run_rewritten)(spec, leaves, args, call_kwargs)
        if mutable:
            out, updates = out
            for col, tops in updates.items():
                for top, val in tops.items():
                    self.put_variable(col, top, val)
        return out
