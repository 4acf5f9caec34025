"""Read-only measurements of trained networks."""

from jaxprune.analysis.ablation import ACTIVE_THRESHOLD, active_units, unit_ablation
from jaxprune.analysis.count import count_params
from jaxprune.analysis.polygon import painted_image, polygon_sides, trace_contours
from jaxprune.analysis.redundancy import (
    REDUNDANCY_THRESHOLD,
    redundancy_groups,
    redundant_units,
    unit_similarity,
)

__all__ = [
    "ACTIVE_THRESHOLD",
    "REDUNDANCY_THRESHOLD",
    "active_units",
    "count_params",
    "painted_image",
    "polygon_sides",
    "redundancy_groups",
    "redundant_units",
    "trace_contours",
    "unit_ablation",
    "unit_similarity",
]
