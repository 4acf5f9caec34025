"""Read-only measurements of trained networks."""

from jaxprune.analysis.ablation import ACTIVE_THRESHOLD, active_units, unit_ablation
from jaxprune.analysis.connectivity import (
    changed_fraction,
    connectivity_mask,
    effective_weights,
    layer_fractions,
    size_in_bits,
)
from jaxprune.analysis.count import count_params

__all__ = [
    "ACTIVE_THRESHOLD",
    "active_units",
    "changed_fraction",
    "connectivity_mask",
    "count_params",
    "effective_weights",
    "layer_fractions",
    "size_in_bits",
    "unit_ablation",
]
