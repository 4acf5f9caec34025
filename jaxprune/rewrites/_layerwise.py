"""The pieces of layerwise reinitialization LW (paper 002, Algorithm 1): norms, rescale, normalize.

Blocks are given as a sequence of tuples of top-level parameter names, in forward order
(``model.lw_blocks()`` for the bundled models, :func:`default_blocks` from the traced graph
for any other);
``k`` is 1-based as in the paper. A "layer" is one top-level entry of the params (``relu_0``,
``conv_2``, ``norm_2``...); its norm is the Frobenius norm of its *weights* together: every leaf
but ``bias`` (a dense or conv kernel, a norm layer's ``scale``), as the paper says ("rescale the
weights", App. A: "scale back all weights such that the norm of each layer matches the norm
after initialization"); biases are left as they are. ``include_biases=True`` is the alternative:
the norm of all the layer's tensors, all scaled by one factor. ``k`` may be a traced
integer (all functions are jittable with a dynamic ``k``; it is range-checked when concrete).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune._types import Mask, Params, PyTree
from jaxprune.graph.extend import check_model_kwargs
from jaxprune.models import NORM_COLLECTION, OUTPUT_COLLECTION, slot_name

__all__ = [
    "above_block_mask",
    "block_statistics",
    "check_blocks",
    "default_blocks",
    "forward_order",
    "layer_norms",
    "rescale_blocks",
    "update_normalization",
]

Blocks = Sequence[Sequence[str]]


def forward_order(graph) -> tuple[str, ...]:
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


def default_blocks(graph) -> tuple[tuple[str, ...], ...]:
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


def check_blocks(params: Params, blocks: Blocks, k=None) -> tuple[tuple[str, ...], ...]:
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
    kk = None if k is None else _static_int(k)
    if kk is not None:
        if not 1 <= kk <= len(out):
            raise ValueError(f"k: expected 1 <= k <= {len(out)} (the number of blocks), got {kk}")
    return out


def _static_int(k) -> int | None:
    """``int(k)`` for a concrete ``k``; None for a traced one."""
    try:
        return int(k)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
        return None


def _block_index(blocks: tuple[tuple[str, ...], ...]) -> dict[str, int]:
    return {name: i for i, block in enumerate(blocks, 1) for name in block}


def _is_bias(path) -> bool:
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
            if include_biases or not _is_bias(path):
                total = total + jnp.sum(jnp.square(leaf.astype(jnp.float32)))
        out[name] = jnp.sqrt(total)
    return out


def rescale_blocks(
    params: Params,
    init_norms: dict[str, jax.Array],
    blocks: Blocks,
    k,
    *,
    include_biases: bool = False,
) -> Params:
    """Scales the weights of every layer of blocks ``1..k`` back to their initial norm (line 4).

    Each layer's weights (leaves other than ``bias``) are multiplied by ``init_norm /
    current_norm`` of the weights; its biases are unchanged (the paper rescales "the weights").
    With ``include_biases=True`` the norms count all tensors and all are scaled by one factor.
    A layer whose current norm is 0 is left as it is; layers outside blocks ``1..k`` are
    unchanged. ``init_norms`` must be :func:`layer_norms` with the same ``include_biases``.

    Args:
      params: current parameters.
      init_norms: :func:`layer_norms` of the initial parameters.
      blocks: the LW blocks (tuples of top-level names), in forward order.
      k: 1-based block index (Python int or traced integer).
      include_biases: count and scale the biases too (not the paper's choice).

    Returns:
      The rescaled parameters.

    Raises:
      ValueError: bad blocks or ``k``, or a block layer missing from ``init_norms``.

    >>> import jax.numpy as jnp
    >>> p = {"a": {"w": jnp.array([6.0, 8.0]), "bias": jnp.array([2.0])},
    ...      "b": {"w": jnp.array([1.0])}}
    >>> r = rescale_blocks(p, {"a": jnp.array(5.0), "b": jnp.array(2.0)}, [["a"], ["b"]], k=1)
    >>> r["a"]["w"].tolist(), r["a"]["bias"].tolist(), r["b"]["w"].tolist()
    ([3.0, 4.0], [2.0], [1.0])

    References:
      Paper 002, Algorithm 1, line 4; App. A ("scale back all weights such that the norm of each
      layer matches the norm after initialization").
    """
    blocks = check_blocks(params, blocks, k)
    index = _block_index(blocks)
    missing = sorted(set(index) - set(init_norms))
    if missing:
        raise ValueError(f"init_norms: no recorded norm for layer(s) {missing}")
    now = layer_norms({name: params[name] for name in index}, include_biases=include_biases)
    out = dict(params)
    for name, i in index.items():
        factor = jnp.where(
            (i <= k) & (now[name] > 0),
            init_norms[name] / jnp.where(now[name] > 0, now[name], 1.0),
            1.0,
        )

        def scale(path, w, f=factor):
            if not include_biases and _is_bias(path):
                return w
            return (w * f).astype(w.dtype)

        out[name] = jax.tree_util.tree_map_with_path(scale, params[name])
    return out


def above_block_mask(params: Params, blocks: Blocks, k) -> Mask:
    """True on every layer above block ``k``: blocks ``k+1..K`` and all layers in no block.

    Layers that belong to no block (the dense layers and head of a CNN) must come after the
    blocks in the forward pass; they are reinitialized at every LW round (line 12).

    >>> import jax.numpy as jnp
    >>> p = {"a": {"w": jnp.zeros(1)}, "b": {"w": jnp.zeros(1)}, "head": {"w": jnp.zeros(2)}}
    >>> m = above_block_mask(p, [["a"], ["b"]], k=1)
    >>> m["a"]["w"].tolist(), m["b"]["w"].tolist(), m["head"]["w"].tolist()
    ([False], [True], [True, True])

    References:
      Paper 002, Algorithm 1, line 12 ("Reinitialize all layers above block k").
    """
    blocks = check_blocks(params, blocks, k)
    index = _block_index(blocks)
    above = len(blocks) + 1  # layers in no block sit above all blocks
    out = {}
    for name, sub in params.items():
        flag = jnp.asarray(index.get(name, above)) > k
        out[name] = jax.tree.map(lambda w, f=flag: jnp.broadcast_to(f, jnp.shape(w)), sub)
    return out


def block_statistics(
    model, variables: PyTree, x: jax.Array, *, model_kwargs: Mapping[str, Any] | None = None
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


def update_normalization(
    model, variables: PyTree, x: jax.Array, k, *, model_kwargs: Mapping[str, Any] | None = None
) -> PyTree:
    """Inserts/updates the lambda layer ``(x - mu) / sigma`` after block ``k`` (lines 5-11).

    ``mu`` and ``sigma`` are the scalar mean and standard deviation of block ``k``'s output on the
    sample ``x``, computed with the current slots of the blocks below. "Insert" (``n = 1``) and
    "update" (``n > 1``) are the same operation here: every slot exists from ``model.init`` as the
    identity (``mean=0, std=1``), so the variables keep one structure. The other slots are
    unchanged; ``variables`` must hold the ``"lw_norm"`` collection.

    Args:
      model: a module with LW normalization slots (:func:`jaxprune.models.norm_slot`).
      variables: ``{"params": ..., "lw_norm": ...}``.
      x: the sample batch ``X``.
      k: 1-based block index (int or traced integer).
      model_kwargs: keyword arguments of ``model.apply`` (``{"train": False}``).

    Returns:
      New variables with slot ``block_{k}`` set.

    Raises:
      ValueError: when ``variables`` has no ``"lw_norm"`` collection or ``k`` is out of range.

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> model = jp.models.BlockMLP(hidden=(8,), out=2)
    >>> x = jax.random.normal(jax.random.key(0), (64, 3))
    >>> v = update_normalization(model, model.init(jax.random.key(1), x), x, k=1)
    >>> h = jax.nn.relu(x @ v["params"]["relu_0"]["kernel"] + v["params"]["relu_0"]["bias"])
    >>> bool(jnp.allclose(v["lw_norm"]["block_1"]["mean"], h.mean()))
    True

    References:
      Paper 002, Algorithm 1, lines 5-11.
    """
    if NORM_COLLECTION not in variables:
        raise ValueError(
            f"variables: expected a {NORM_COLLECTION!r} collection (from model.init), got "
            f"{sorted(variables)}"
        )
    slots = variables[NORM_COLLECTION]
    kmax = len(slots)
    kk = _static_int(k)
    if kk is not None and not 1 <= kk <= kmax:
        raise ValueError(f"k: expected 1 <= k <= {kmax} (the number of blocks), got {k}")
    stats = block_statistics(model, variables, x, model_kwargs=model_kwargs)
    new = {}
    for j in range(1, kmax + 1):
        name = slot_name(j)
        mu, sigma = stats[name]
        old = slots[name]
        new[name] = {
            "mean": jnp.where(j == k, mu, old["mean"]).astype(old["mean"].dtype),
            "std": jnp.where(j == k, sigma, old["std"]).astype(old["std"].dtype),
        }
    return {**variables, NORM_COLLECTION: new}
