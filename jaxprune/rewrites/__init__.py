"""Pure params -> params (and model -> model) pytree rewrites."""

from jaxprune._fusion_solve import FusionWarning
from jaxprune._weight_factoring import factor_weights
from jaxprune.rewrites._collapse import collapse
from jaxprune.rewrites._fold_linear import fold_linear
from jaxprune.rewrites._fuse import fuse
from jaxprune.rewrites._layerwise import rescale_blocks, update_normalization
from jaxprune.rewrites._lw_slots import LWSlots, lw_slots
from jaxprune.rewrites._mask_transfer import set_linear_slopes, transfer_mask
from jaxprune.rewrites._optimizer_state import reset_optimizer_state
from jaxprune.rewrites._prelu_swap import swap_relu_for_prelu
from jaxprune.rewrites._prune import prune_units
from jaxprune.rewrites._reinit_round import model_initializer, reinit_round, reinitialize
from jaxprune.rewrites._reinit_units import reinit_units
from jaxprune.rewrites._result import RewriteReport, RewriteResult

__all__ = [
    "FusionWarning",
    "LWSlots",
    "RewriteReport",
    "RewriteResult",
    "collapse",
    "factor_weights",
    "fold_linear",
    "fuse",
    "lw_slots",
    "model_initializer",
    "prune_units",
    "reinit_round",
    "reinit_units",
    "reinitialize",
    "rescale_blocks",
    "reset_optimizer_state",
    "set_linear_slopes",
    "swap_relu_for_prelu",
    "transfer_mask",
    "update_normalization",
]
