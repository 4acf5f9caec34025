"""The graph engine's surface for writing rewrites and analyses on the traced program.

:mod:`jaxprune.graph` is the curated surface for users: trace a model, read its layers and
units. This module, after JAX's own ``jax.extend``, is the surface one level down, on which
:mod:`jaxprune.rewrites`, :mod:`jaxprune.analysis`, :mod:`jaxprune.transforms` and
:mod:`jaxprune.training` are written: the analysed program (``Graph.analysis``) and its values
(:class:`Literal`, :class:`Act`, :class:`PVal`, :class:`SliceInfo`), its evaluation
(:func:`run_program`), replacing values by single linear operations (:class:`Replacement`) and
building a rewritten model of the user's kind from a :class:`RewriteSpec`, fusable pairs and their
moments, affine runs, the checks of unit masks, and the primitive sets of the graph's one
registry of primitives that rewrites read (:data:`AFFINE_ARITH`, :data:`AFFINE_ELEMENTWISE`,
:data:`CALLS`, :data:`CHANNEL_MOVES`, :data:`PER_CHANNEL_PASS`). It is public so that a new
rewrite or analysis can live outside the package, but it is less stable than
:mod:`jaxprune.graph`: its names follow the engine and may change between minor versions.

Evaluating a traced program by hand, with every intermediate value captured:

>>> import jax, jax.numpy as jnp, flax.linen as nn, jaxprune as jp
>>> from jaxprune.graph.extend import run_program
>>> class Net(nn.Module):
...     @nn.compact
...     def __call__(self, x):
...         return nn.Dense(2)(nn.relu(nn.Dense(3)(x)))
>>> x = jnp.ones((4, 5)); net = Net(); variables = net.init(jax.random.key(0), x)
>>> analysis = jp.graph.trace(net, variables, x).analysis
>>> outs, values = run_program(analysis, jax.tree.leaves(variables) + [x], capture=True)
>>> bool(jnp.allclose(outs[0], net.apply(variables, x))), len(values) > len(analysis.program.nodes)
(True, True)
"""

from jaxprune.graph._adapters import check_model_kwargs, state_args, takes_model
from jaxprune.graph._affine import affine_runs, run_scale_shift
from jaxprune.graph._analyze import SliceInfo
from jaxprune.graph._blocks import (
    Blocks,
    block_index,
    block_statistics,
    check_blocks,
    default_blocks,
    forward_order,
    is_bias,
    layer_norms,
    static_int,
)
from jaxprune.graph._evaluate import channel_vector, run_program
from jaxprune.graph._inline import Literal
from jaxprune.graph._layout import Act, PVal
from jaxprune.graph._masks import check_mask, check_mask_names
from jaxprune.graph._pair_moments import pair_moments, pair_rows
from jaxprune.graph._pairs import fusable_pairs, pair_of
from jaxprune.graph._primitives import (
    AFFINE_ARITH,
    AFFINE_ELEMENTWISE,
    CALLS,
    CHANNEL_MOVES,
    PER_CHANNEL_PASS,
)
from jaxprune.graph._replace import ReplacedRunner, Replacement, live_nodes, nest, region_of
from jaxprune.graph._rewritten import (
    RewriteSpec,
    abstract_model,
    build_model,
    held_leaves,
    leaf_keep,
    model_variables,
)
from jaxprune.graph._rewritten_call import (
    PlanCache,
    content_key,
    hashable,
    prepare_call,
    trace_call,
)
from jaxprune.graph._submodules import narrowed_submodules
from jaxprune.graph._taps import peek

__all__ = [
    "AFFINE_ARITH",
    "AFFINE_ELEMENTWISE",
    "Act",
    "Blocks",
    "CALLS",
    "CHANNEL_MOVES",
    "Literal",
    "PER_CHANNEL_PASS",
    "PVal",
    "PlanCache",
    "ReplacedRunner",
    "Replacement",
    "RewriteSpec",
    "SliceInfo",
    "abstract_model",
    "affine_runs",
    "block_index",
    "block_statistics",
    "build_model",
    "channel_vector",
    "check_blocks",
    "check_mask",
    "check_mask_names",
    "check_model_kwargs",
    "content_key",
    "default_blocks",
    "forward_order",
    "fusable_pairs",
    "hashable",
    "held_leaves",
    "is_bias",
    "layer_norms",
    "leaf_keep",
    "live_nodes",
    "model_variables",
    "narrowed_submodules",
    "nest",
    "pair_moments",
    "pair_of",
    "pair_rows",
    "peek",
    "prepare_call",
    "region_of",
    "run_program",
    "run_scale_shift",
    "state_args",
    "static_int",
    "takes_model",
    "trace_call",
]
