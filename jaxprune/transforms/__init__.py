"""optax gradient transformations: freezing, masks, straight-through scores, slope sparsity.

Each is a factory returning an ``optax.GradientTransformation``, with its state NamedTuple.
"""

from jaxprune.transforms._freeze import FreezeUnitsState, freeze_units
from jaxprune.transforms._scores import AddMinimalPenaltyState, add_minimal_penalty, train_scores
from jaxprune.transforms._slope_sparsity import SlopeSparsityState, slope_sparsity

__all__ = [
    "AddMinimalPenaltyState",
    "FreezeUnitsState",
    "SlopeSparsityState",
    "add_minimal_penalty",
    "freeze_units",
    "slope_sparsity",
    "train_scores",
]
