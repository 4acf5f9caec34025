"""Pure params -> params (and model -> model) pytree rewrites."""

from jaxprune.rewrites.collapse import collapse, fold_dense
from jaxprune.rewrites.layerwise import (
    above_block_mask,
    block_statistics,
    check_blocks,
    layer_norms,
    rescale_blocks,
    update_normalization,
)
from jaxprune.rewrites.optimizer_state import reset_optimizer_state
from jaxprune.rewrites.reinit_masks import layer_mask, magnitude_mask, random_mask
from jaxprune.rewrites.reinit_round import model_initializer, reinit_round, reinitialize

__all__ = [
    "above_block_mask",
    "block_statistics",
    "check_blocks",
    "collapse",
    "fold_dense",
    "layer_mask",
    "layer_norms",
    "magnitude_mask",
    "model_initializer",
    "random_mask",
    "reinit_round",
    "reinitialize",
    "rescale_blocks",
    "reset_optimizer_state",
    "update_normalization",
]
