"""Read-only measurements of trained networks."""

from jaxprune.analysis.ablation import ACTIVE_THRESHOLD, active_units, unit_ablation
from jaxprune.analysis.count import count_params
from jaxprune.analysis.margins import head_weight_product, sharpness, softmax_margins

__all__ = [
    "ACTIVE_THRESHOLD",
    "active_units",
    "count_params",
    "head_weight_product",
    "sharpness",
    "softmax_margins",
    "unit_ablation",
]
