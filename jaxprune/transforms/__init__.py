"""optax gradient transformations: freezing, masks, straight-through scores, slope sparsity."""

from jaxprune.transforms.freeze import FreezeUnitsState, freeze_units, set_frozen_units

__all__ = ["FreezeUnitsState", "freeze_units", "set_frozen_units"]
