"""Pure params -> params (and model -> model) pytree rewrites."""

from jaxprune.rewrites.collapse import collapse, fold_dense
from jaxprune.rewrites.fold_linear import MLPCost, fold_linear, mlp_cost
from jaxprune.rewrites.fuse import FusionPlan, fuse, fusion_plan
from jaxprune.rewrites.fusion_solve import FusionWarning, fusion_mse, fusion_weights
from jaxprune.rewrites.mask_transfer import MASK_TRANSFER_MODES, set_linear_slopes, transfer_mask
from jaxprune.rewrites.optimizer_state import reset_optimizer_state
from jaxprune.rewrites.prelu_swap import swap_relu_for_prelu
from jaxprune.rewrites.prune_units import prune_units
from jaxprune.rewrites.reinit_units import OUTGOING_CHOICES, reinit_units
from jaxprune.rewrites.weight_factoring import factor_weights

__all__ = [
    "FusionPlan",
    "FusionWarning",
    "MASK_TRANSFER_MODES",
    "MLPCost",
    "OUTGOING_CHOICES",
    "collapse",
    "factor_weights",
    "fold_dense",
    "fold_linear",
    "fuse",
    "fusion_mse",
    "fusion_plan",
    "fusion_weights",
    "mlp_cost",
    "prune_units",
    "reinit_units",
    "reset_optimizer_state",
    "set_linear_slopes",
    "swap_relu_for_prelu",
    "transfer_mask",
]
