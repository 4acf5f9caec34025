"""optax gradient transformations: freezing, masks, straight-through scores, slope sparsity."""

__all__: list[str] = []
