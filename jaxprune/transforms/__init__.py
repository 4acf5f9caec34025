"""optax gradient transformations: freezing, masks, straight-through scores, slope sparsity."""

from jaxprune.transforms.slope_sparsity import (
    SlopeSparsityState,
    inactive_fraction,
    slope_layers_of,
    slope_sparsity,
)

__all__ = ["SlopeSparsityState", "inactive_fraction", "slope_layers_of", "slope_sparsity"]
