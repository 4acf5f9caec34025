"""Pure params -> params (and model -> model) pytree rewrites."""

from jaxprune.rewrites.collapse import collapse, fold_dense
from jaxprune.rewrites.optimizer_state import reset_optimizer_state
from jaxprune.rewrites.prelu_swap import swap_relu_for_prelu

__all__ = ["collapse", "fold_dense", "reset_optimizer_state", "swap_relu_for_prelu"]
