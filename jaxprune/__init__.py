"""jaxprune: make neural networks smaller and simpler while they train.

Parameters are plain pytrees; rewrites are pure functions, training-time methods are optax
transformations and analyses are read-only functions.
"""

from jaxprune import analysis, data, graph, models, rewrites, training, transforms
from jaxprune._types import Batch, Mask, Params, PyTree, UnitMask
from jaxprune.graph import GraphError, load_rewritten, save_rewritten, trace
from jaxprune.rewrites import RewriteResult
from jaxprune.rewrites._collapse import collapse
from jaxprune.rewrites._fuse import fuse
from jaxprune.rewrites._prune import prune_units

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "Mask",
    "Params",
    "PyTree",
    "RewriteResult",
    "UnitMask",
    "analysis",
    "collapse",
    "data",
    "fuse",
    "graph",
    "GraphError",
    "load_rewritten",
    "models",
    "prune_units",
    "rewrites",
    "save_rewritten",
    "trace",
    "training",
    "transforms",
]
