"""Read-only measurements of trained networks."""

from jaxprune.analysis.ablation import ACTIVE_THRESHOLD, active_units, unit_ablation
from jaxprune.analysis.count import count_params

__all__ = ["ACTIVE_THRESHOLD", "active_units", "count_params", "unit_ablation"]
