"""optax gradient transformations: freezing, masks, straight-through scores, slope sparsity."""

from jaxprune._straight_through import (
    KINDS,
    effective_params,
    gate,
    init_scores,
    minimal_penalty,
)
from jaxprune.transforms._freeze import FreezeUnitsState, freeze_units, set_frozen_units
from jaxprune.transforms._scores import (
    AddMinimalPenaltyState,
    add_minimal_penalty,
    is_score,
    train_scores,
)
from jaxprune.transforms._slope_sparsity import (
    SlopeSparsityState,
    inactive_fraction,
    slope_layers_of,
    slope_sparsity,
)

__all__ = [
    "AddMinimalPenaltyState",
    "FreezeUnitsState",
    "KINDS",
    "SlopeSparsityState",
    "add_minimal_penalty",
    "effective_params",
    "freeze_units",
    "gate",
    "inactive_fraction",
    "init_scores",
    "is_score",
    "minimal_penalty",
    "set_frozen_units",
    "slope_layers_of",
    "slope_sparsity",
    "train_scores",
]
