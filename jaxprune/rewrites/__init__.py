"""Pure params -> params (and model -> model) pytree rewrites."""

from jaxprune.rewrites.collapse import collapse, fold_dense
from jaxprune.rewrites.optimizer_state import reset_optimizer_state
from jaxprune.rewrites.weight_factoring import factor_weights

__all__ = ["collapse", "factor_weights", "fold_dense", "reset_optimizer_state"]
