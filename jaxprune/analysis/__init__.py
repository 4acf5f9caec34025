"""Read-only measurements of trained networks."""

from jaxprune.analysis.ablation import ACTIVE_THRESHOLD, active_units, unit_ablation
from jaxprune.analysis.count import count_params
from jaxprune.analysis.fusion import FusionCandidate, fusion_candidates
from jaxprune.analysis.moments import (
    Moments,
    moments_init,
    moments_merge,
    moments_update,
    streaming_moments,
)

__all__ = [
    "ACTIVE_THRESHOLD",
    "FusionCandidate",
    "Moments",
    "active_units",
    "count_params",
    "fusion_candidates",
    "moments_init",
    "moments_merge",
    "moments_update",
    "streaming_moments",
    "unit_ablation",
]
