"""Pure params -> params (and model -> model) pytree rewrites."""

from jaxprune.rewrites.collapse import collapse, fold_dense
from jaxprune.rewrites.fuse import FusionPlan, fuse, fusion_plan
from jaxprune.rewrites.fusion_solve import FusionWarning, fusion_mse, fusion_weights
from jaxprune.rewrites.optimizer_state import reset_optimizer_state

__all__ = [
    "FusionPlan",
    "FusionWarning",
    "collapse",
    "fold_dense",
    "fuse",
    "fusion_mse",
    "fusion_plan",
    "fusion_weights",
    "reset_optimizer_state",
]
