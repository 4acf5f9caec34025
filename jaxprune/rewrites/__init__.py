"""Pure params -> params (and model -> model) pytree rewrites."""

from jaxprune.rewrites.collapse import collapse, fold_dense
from jaxprune.rewrites.optimizer_state import reset_optimizer_state

__all__ = ["collapse", "fold_dense", "reset_optimizer_state"]
