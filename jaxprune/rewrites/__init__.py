"""Pure params -> params (and model -> model) pytree rewrites."""

from jaxprune.rewrites.collapse import collapse, fold_dense

__all__ = ["collapse", "fold_dense"]
