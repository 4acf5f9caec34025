"""Collapse linear chains and fold BatchNorm of any traced model (paper 000, Eq. 6, sec. 5)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxprune._types import Model, Variables
from jaxprune.graph import GraphError, as_model, path_str, trace
from jaxprune.graph.extend import (
    ReplacedRunner,
    RewriteSpec,
    abstract_model,
    build_model,
    live_nodes,
    model_variables,
    nest,
    region_of,
    run_program,
    state_args,
    takes_model,
)
from jaxprune.rewrites import _chains
from jaxprune.rewrites._result import RewriteResult, count_params, result

__all__ = ["CollapsedInit", "collapse"]


@dataclasses.dataclass(frozen=True)
class CollapsedInit:
    """A collapsed model's initializer: :func:`collapse` of the original's fresh
    initialization (every folded kernel is the product of freshly drawn layers).

    Attributes:
      fold_batchnorm: as given to :func:`collapse`.
    """

    fold_batchnorm: bool = True

    def initial_leaves(self, spec, draw, args, kwargs):
        fresh = draw(0)
        variables = jax.tree.unflatten(spec.treedef, [fresh[p] for p in spec.paths])
        new = collapse(
            spec.model,
            *state_args(spec.model, variables),
            *args,
            fold_batchnorm=self.fold_batchnorm,
            model_kwargs=kwargs,
        ).variables
        flat, _ = jax.tree_util.tree_flatten_with_path(new)
        by_path = {path_str(p): v for p, v in flat}
        if tuple(by_path) != tuple(spec.new_paths):
            raise GraphError(
                f"init: collapsing the fresh original gives leaves {list(by_path)}, not the "
                f"collapsed model's {list(spec.new_paths)}"
            )
        return list(by_path.values())


def _fold_change(adapter, graph, fold, dropped) -> str:
    """``"Dense_0 + BatchNorm_0 + Dense_1 -> Dense_0"``: the layers (and norms) a fold merges;
    ``dropped``: the leaves the rewrite removed (a fold that does not list its leaves, fuse's,
    merged every module whose parameters are all gone)."""
    names = list(graph.layers)
    merged = [names[i] for i in fold.layers]
    module = lambda path: adapter.short(path).rsplit("/", 1)[0]
    for path in sorted(fold.leaves or dropped):
        if adapter.trainable(path) and module(path) not in merged:
            merged.append(module(path))
    return f"{' + '.join(merged)} -> {module(fold.rep.kernel)}"


def replaced_model(adapter, graph, folds, what: str, initializer=None, mse=None) -> RewriteResult:
    """The rewritten model with each fold's value replaced (shared by collapse and fuse);
    ``initializer``: the rewritten linen model's (see ``RewriteSpec.initializer``)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(adapter.variables)
    paths = tuple(path_str(p) for p, _ in flat)
    leaves = [v for _, v in flat]
    program = graph.analysis.program
    ann = graph.analysis.annotations
    reps = tuple(
        dataclasses.replace(f.rep, region=region_of(program, ann, f.rep, adapter.trainable))
        for f in folds
    )
    _, live = live_nodes(program, reps)
    invars = program.invars[: len(paths)]
    new = {p: leaf for p, v, leaf in zip(paths, invars, leaves, strict=True) if v in live}
    for f in folds:
        for path, val in ((f.rep.kernel, f.kernel), (f.rep.bias, f.bias)):
            if path is None:
                continue
            if path in new:
                raise GraphError(
                    f"{what}: the new leaf {path!r} would replace a parameter that is still read "
                    "elsewhere in the model (a shared kernel)"
                )
            new[path] = val
    tree = nest(new)
    nflat, ntreedef = jax.tree_util.tree_flatten_with_path(tree)
    new_paths = tuple(path_str(p) for p, _ in nflat)
    new_leaves = [v for _, v in nflat]
    spec = RewriteSpec(
        model=abstract_model(adapter),
        kind=adapter.kind,
        treedef=treedef,
        paths=paths,
        avals=tuple(jax.ShapeDtypeStruct(np.shape(a), a.dtype) for a in leaves),
        new_avals=tuple(jax.ShapeDtypeStruct(np.shape(a), a.dtype) for a in new_leaves),
        keep=(),
        runner=ReplacedRunner(reps, new_paths, what, tuple(n.name for n in program.nodes)),
        new_treedef=ntreedef,
        new_paths=new_paths,
        initializer=initializer,
    )
    small = build_model(spec, new_leaves)
    return result(
        small,
        model_variables(spec, small, new_leaves),
        before=count_params(dict(zip(paths, leaves, strict=True)), adapter.trainable),
        after=count_params(dict(zip(new_paths, new_leaves, strict=True)), adapter.trainable),
        changes=[_fold_change(adapter, graph, f, set(paths) - set(new_paths)) for f in folds],
        mse=mse,
    )


def _without_statistics(program, an, path, trainable) -> list[list]:
    """``path`` cut at every step that reads a non-trainable leaf (running statistics)."""
    pieces: list[list] = [[]]
    for step in path:
        if any(not trainable(p) for p in _chains._leaves(program, an.annotations, [step])):
            pieces.append([])
        else:
            pieces[-1].append(step)
    return [p for p in pieces if p]


@takes_model
def collapse(
    model: Model,
    variables: Variables,
    *args: Any,
    fold_batchnorm: bool = True,
    model_kwargs: Mapping[str, Any] | None = None,
) -> RewriteResult:
    """Folds every linear chain and every foldable BatchNorm into a smaller model of its kind.

    Every maximal run of affine operations whose intermediate values are read by nothing else
    (no skip, no second reader, not an output) becomes one layer: dense -> dense, kxk conv ->
    1x1 conv, 1x1 conv -> kxk conv, 1x1 conv -> flatten -> dense, and BatchNorm with running
    statistics (``train=False``), scales and biases on either side of a conv or dense layer
    (paper 000, Eq. 6: ``K' = K1 K2``, ``b' = b1 K2 + b2`` with Flax's right-acting kernels).
    The folded kernel and bias are computed by exact algebra on the traced operands (float32,
    ``Precision.HIGHEST``) and stored under the run's first layer (``params/Dense_0/kernel``,
    ``.../bias``); the other layers' and the folded BatchNorms' leaves are dropped.

    Collapsing never adds parameters: a run through a bottleneck (``4 -> 1 -> 3``, where one
    ``4 x 3`` kernel would outgrow ``4 + 3``) is cut before some of its layers into the pieces
    whose folds hold the fewest parameters in all (ties: fewer layers).

    Left as they are (exactness or scope): a bias or BatchNorm shift *before* a zero-padded
    (``SAME``) or input-dilated convolution (at the borders the padding is 0, not the bias; a
    bias-free 1x1 conv still folds into it); two spatial layers in one run (kxk -> kxk convs
    unless both are unpadded (``VALID``) and undilated and the first has stride 1: then they
    compose into one kxk conv with ``k = k1 + k2 - 1`` and the second's stride; kxk conv ->
    flatten -> dense); pooling inside a run (average pooling cuts the run);
    BatchNorm after a residual join or reading a value with several readers; depthwise
    convolutions; runs whose only layer has nothing to absorb (a dense layer and its bias).

    The collapsed model re-traces the original at each call's shapes, so it runs at any batch
    size, under ``jit``/``vmap``/``grad`` and through ``jax.export``. It also runs in training
    mode (``train=True, rngs={"dropout": key}, mutable=["batch_stats"]``) where that leaves the
    folded parts as they were (dropout elsewhere, BatchNorm layers that were not folded keep
    updating their statistics), and then computes what the original computes with the same
    keys. A BatchNorm folded into a layer would use batch statistics in training mode: that
    call raises :class:`GraphError` naming it; collapse with ``fold_batchnorm=False`` to keep
    every BatchNorm (its shift may still fold into the next layer) and train on.
    ``collapse`` itself may run under ``jax.vmap`` over ``variables`` (the folding is
    traceable). A linen collapsed model's ``init(key, *args)`` is the collapse of the
    original's ``init(key, *args)``.

    Args:
      model: a ``flax.linen`` Module, an ``nnx.Module``, an ``eqx.Module`` or a function
        ``f(params, *args)`` (see :func:`jaxprune.graph.as_model`).
      variables: linen: every collection, BatchNorm statistics included; a function: its
        params; omitted for NNX and equinox modules, which hold their state.
      *args: example arguments of the call (only their shapes matter).
      fold_batchnorm: fold BatchNorm's running statistics into neighbouring layers (default);
        False keeps the steps that read them, so the collapsed model trains with
        ``train=True`` (batch statistics) as the original does.
      model_kwargs: keyword arguments of the model's own call (``{"train": False}``).

    Returns:
      A :class:`~jaxprune.rewrites.RewriteResult`: ``.model`` of the model's kind and its
      ``.variables`` (a linen Module and nested variables of the original's structure minus
      the removed leaves; an ``nnx.Module`` whose state has the original's paths and variable
      types minus the removed ones, and its pure dict; an ``eqx.Module`` holding nested dicts
      of arrays keyed by the original's paths (a ``W @ x`` layer keeps its ``[out, in]``
      orientation) and its arrays; or ``apply_fn`` and its params); ``.report`` names each
      fold (``"Dense_0 + Dense_1 -> Dense_0"``).

    Raises:
      GraphError: the model cannot be traced into a layer graph, or a folded kernel would
        overwrite a parameter that other layers still read.

    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> class Net(nn.Module):      # paper 000's model 2: 2 -> 3 (relu) -> 9 (linear) -> 1
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         h = nn.relu(nn.Dense(3)(x))
    ...         h = nn.Dense(9)(h)                     # linear: folds into the next layer
    ...         return nn.Dense(1)(h)
    >>> x = jnp.ones((4, 2)); net = Net(); v = net.init(jax.random.key(0), x)
    >>> r = collapse(net, v, x)
    >>> r.report.params_before, r.report.params_after, r.report.changes
    (55, 13, ('Dense_1 + Dense_2 -> Dense_1',))
    >>> sorted(r.variables["params"])
    ['Dense_0', 'Dense_1']
    >>> bool(jnp.allclose(r.model.apply(r.variables, x), net.apply(v, x), atol=1e-5))
    True

    References:
      Paper 000, sec. 3.1 (Eq. 6) and sec. 5 (linear layers, BatchNorm at inference).
    """
    adapter = as_model(model, variables)
    graph = trace(model, *state_args(model, variables), *args, model_kwargs=model_kwargs)
    an = graph.analysis
    flat = jax.tree.leaves(adapter.variables) + jax.tree.leaves(args)
    _, env = run_program(an, flat, capture=True)
    layer_at = {info.node: info for info in an.layers}
    folds = []
    for path in _chains.paths(an.program, an, layer_at, env):
        pieces = [path]
        if not fold_batchnorm:
            pieces = _without_statistics(an.program, an, path, adapter.trainable)
        for piece in pieces:
            folds.extend(_chains.fold(an.program, an, layer_at, env, piece))
    return replaced_model(adapter, graph, folds, "collapse", CollapsedInit(fold_batchnorm))
