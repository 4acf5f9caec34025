"""LW blocks of a traced model and the statistics of paper 002's Algorithm 1 that rewrites,
analyses and training share: forward order, default blocks, block checks, layer norms, block
output statistics (public through :mod:`jaxprune.graph.extend`; ``layer_norms`` and
``block_statistics`` also through :mod:`jaxprune.analysis`).

Blocks are given as a sequence of tuples of top-level parameter names, in forward order;
``k`` is 1-based as in the paper and may be a traced integer (it is range-checked when
concrete). A layer's norm is the Frobenius norm of its weights: every leaf but ``bias``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune._types import Model, Params, PyTree
from jaxprune.graph._adapters import check_model_kwargs
from jaxprune.graph._graph import Graph
from jaxprune.models import NORM_COLLECTION, OUTPUT_COLLECTION

__all__ = [
    "Blocks",
    "block_index",
    "block_statistics",
    "check_blocks",
    "default_blocks",
    "forward_order",
    "is_bias",
    "layer_norms",
    "static_int",
]

Blocks = Sequence[Sequence[str]]


def forward_order(graph: Graph) -> tuple[str, ...]:
    """The model's top-level parameter subtrees in the order the forward pass first reads them.

    Raises:
      ValueError: the forward pass reads no parameters.
    """
    an = graph.analysis
    prefix = graph.model.param_prefix
    first: dict[str, int] = {}
    for i, node in enumerate(an.program.nodes):
        for v in node.ins:
            leaf = an.leaf_of_var.get(v) if isinstance(v, int) else None
            if leaf is None or (prefix and not leaf.startswith(prefix + "/")):
                continue
            first.setdefault(graph.model.short(leaf).split("/")[0], i)
    if not first:
        raise ValueError("graph: the forward pass reads no parameters; no blocks")
    return tuple(sorted(first, key=first.__getitem__))


def default_blocks(graph: Graph) -> tuple[tuple[str, ...], ...]:
    """LW blocks derived from the traced graph: each layer with the norms that follow it.

    The model's top-level parameter subtrees are taken in the order the traced program
    (:func:`jaxprune.trace`) first reads them, so a norm sits after the layer it normalizes
    whatever the names say. A subtree holding a dense or conv layer (:attr:`Graph.layers
    <jaxprune.graph.Graph>`) starts a block; one without (a BatchNorm, LayerNorm, a PReLU's
    slopes) joins the block before it (the first block if nothing comes before). A nested
    module is one subtree, so a user's ``Block`` submodule is one LW block. The output layer
    is the last block, as in paper 002's MLP (its slot normalizes the logits).

    Args:
      graph: the traced model.

    Returns:
      ``(("Conv_0", "BatchNorm_0"), ("Dense_0",), ...)`` for :func:`check_blocks` and the LW
      functions.

    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxprune as jp
    >>> class Net(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         out = nn.Dense(2, name="a_out")
    ...         h = nn.LayerNorm(name="b_norm")(nn.Dense(3, name="z_hidden")(x))
    ...         return out(nn.relu(h))
    >>> x = jnp.ones((1, 4)); g = jp.trace(Net(), Net().init(jax.random.key(0), x), x)
    >>> default_blocks(g)
    (('z_hidden', 'b_norm'), ('a_out',))

    References:
      Paper 002, Algorithm 1 (blocks: the model's layers, each with its normalization).
    """
    order = forward_order(graph)
    with_kernel = {name.split("/")[0] for name in graph.layers}
    blocks: list[list[str]] = []
    for name in order:
        if name in with_kernel or not blocks:
            blocks.append([name])
        else:
            blocks[-1].append(name)
    if len(blocks) > 1 and not with_kernel & set(blocks[0]):
        blocks[1] = blocks[0] + blocks[1]  # a leading norm belongs to the first layer
        del blocks[0]
    return tuple(tuple(b) for b in blocks)


def check_blocks(
    params: Params, blocks: Blocks, k: int | jax.Array | None = None
) -> tuple[tuple[str, ...], ...]:
    """Validates ``blocks`` against ``params`` (and a concrete ``k``); returns them as tuples.

    Raises:
      ValueError: no blocks, an empty block, a name not in ``params``, a name in two blocks, or
        ``k`` outside ``1..len(blocks)``.

    >>> check_blocks({"a": {}, "b": {}}, [["a"], ["b"]], k=3)
    Traceback (most recent call last):
    ...
    ValueError: k: expected 1 <= k <= 2 (the number of blocks), got 3
    """
    if isinstance(blocks, str) or not blocks:
        raise ValueError(f"blocks: expected a non-empty sequence of name tuples, got {blocks!r}")
    out = tuple(tuple(b) if not isinstance(b, str) else (b,) for b in blocks)
    names = set(params.keys())
    seen: set[str] = set()
    for i, block in enumerate(out, 1):
        if not block:
            raise ValueError(f"blocks[{i - 1}]: block {i} is empty")
        for name in block:
            if name not in names:
                raise ValueError(
                    f"blocks[{i - 1}]: {name!r} is not a layer of params; expected names from "
                    f"{sorted(names)}"
                )
            if name in seen:
                raise ValueError(f"blocks[{i - 1}]: {name!r} appears in two blocks")
            seen.add(name)
    kk = None if k is None else static_int(k)
    if kk is not None:
        if not 1 <= kk <= len(out):
            raise ValueError(f"k: expected 1 <= k <= {len(out)} (the number of blocks), got {kk}")
    return out


def static_int(k: int | jax.Array) -> int | None:
    """``int(k)`` for a concrete ``k``; None for a traced one."""
    try:
        return int(k)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
        return None


def block_index(blocks: tuple[tuple[str, ...], ...]) -> dict[str, int]:
    """``{layer: 1-based block}`` of every layer in a block."""
    return {name: i for i, block in enumerate(blocks, 1) for name in block}


def is_bias(path: tuple) -> bool:
    """Whether a leaf path ends in ``bias``."""
    last = path[-1] if path else None
    return str(getattr(last, "key", getattr(last, "name", ""))) == "bias"


def layer_norms(params: Params, *, include_biases: bool = False) -> dict[str, jax.Array]:
    """Frobenius norm of each top-level layer's weights (leaves other than ``bias``); line 1.

    Args:
      params: the parameters.
      include_biases: if True, the norm of all the layer's tensors, biases included.

    >>> import jax.numpy as jnp
    >>> p = {"d": {"kernel": jnp.array([[3.0]]), "bias": jnp.array([4.0])}}
    >>> layer_norms(p)["d"].item(), layer_norms(p, include_biases=True)["d"].item()
    (3.0, 5.0)

    References:
      Paper 002, Algorithm 1, line 1 ("record the scales of each layer during initialization").
    """
    out = {}
    for name, sub in params.items():
        leaves = jax.tree_util.tree_flatten_with_path(sub)[0]
        total = jnp.zeros((), jnp.float32)
        for path, leaf in leaves:
            if include_biases or not is_bias(path):
                total = total + jnp.sum(jnp.square(leaf.astype(jnp.float32)))
        out[name] = jnp.sqrt(total)
    return out


def block_statistics(
    model: Model, variables: PyTree, x: jax.Array, *, model_kwargs: Mapping[str, Any] | None = None
) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Mean and standard deviation (scalars) of each block's raw output on the sample ``x``.

    The model is applied once with its current normalization slots, recording each slot's input
    (the block output ``Z``). A zero standard deviation (a dead block) is reported as 1.
    ``model_kwargs`` are the keyword arguments of ``model.apply`` (``{"train": False}``).

    Returns:
      ``{"block_k": (mu, sigma)}`` for every slot of the model.

    Raises:
      ValueError: when the model has no LW normalization slots.

    References:
      Paper 002, Algorithm 1, lines 5-6.
    """
    kwargs = check_model_kwargs(model_kwargs)
    _, state = model.apply(variables, x, mutable=[OUTPUT_COLLECTION], **kwargs)
    outs = state.get(OUTPUT_COLLECTION, {})
    if not outs:
        raise ValueError(
            f"model: {type(model).__name__} records no block outputs; it needs LW normalization "
            "slots (jaxprune.models.BlockMLP, SCNN) and variables with a "
            f"{NORM_COLLECTION!r} collection"
        )
    stats = {}
    for name, (z, *_) in outs.items():
        z = z.astype(jnp.float32)
        std = jnp.std(z)
        stats[name] = (jnp.mean(z), jnp.where(std > 0, std, 1.0))
    return stats
