"""Trace any JAX model into a layer graph: layers, units and their coupling groups.

Everything else in jaxprune reaches a user's model through this package.
"""

from jaxprune.graph._adapters import ModelAdapter, as_model, path_str
from jaxprune.graph._errors import GraphError
from jaxprune.graph._graph import Graph, Layer, Unit, trace
from jaxprune.graph._rewritten_io import load_rewritten, save_rewritten

__all__ = [
    "Graph",
    "GraphError",
    "Layer",
    "ModelAdapter",
    "Unit",
    "as_model",
    "load_rewritten",
    "path_str",
    "save_rewritten",
    "trace",
]
