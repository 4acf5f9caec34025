"""Pure params -> params (and model -> model) pytree rewrites."""

from jaxprune.rewrites.collapse import collapse, fold_dense
from jaxprune.rewrites.optimizer_state import reset_optimizer_state
from jaxprune.rewrites.prune_units import prune_units
from jaxprune.rewrites.reinit_units import OUTGOING_CHOICES, reinit_units

__all__ = [
    "OUTGOING_CHOICES",
    "collapse",
    "fold_dense",
    "prune_units",
    "reinit_units",
    "reset_optimizer_state",
]
