"""optax gradient transformations: freezing, masks, straight-through scores, slope sparsity."""

from jaxprune.transforms.scores import (
    AddMinimalPenaltyState,
    add_minimal_penalty,
    is_score,
    train_scores,
)
from jaxprune.transforms.slope_sparsity import (
    SlopeSparsityState,
    inactive_fraction,
    slope_layers_of,
    slope_sparsity,
)
from jaxprune.transforms.straight_through import (
    KINDS,
    effective_params,
    gate,
    init_scores,
    minimal_penalty,
)

__all__ = [
    "AddMinimalPenaltyState",
    "KINDS",
    "SlopeSparsityState",
    "add_minimal_penalty",
    "effective_params",
    "gate",
    "inactive_fraction",
    "init_scores",
    "is_score",
    "minimal_penalty",
    "slope_layers_of",
    "slope_sparsity",
    "train_scores",
]
