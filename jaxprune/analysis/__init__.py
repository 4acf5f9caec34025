"""Read-only measurements of trained networks."""

from jaxprune._fusion_solve import fusion_mse
from jaxprune._moments import (
    Moments,
    moments_init,
    moments_merge,
    moments_update,
    streaming_moments,
)
from jaxprune._slopes import slope_layers_of
from jaxprune.analysis._ablation import ACTIVE_THRESHOLD, active_units, unit_ablation
from jaxprune.analysis._connectivity import (
    changed_fraction,
    connectivity_mask,
    effective_weights,
    layer_fractions,
    size_in_bits,
)
from jaxprune.analysis._count import count_params
from jaxprune.analysis._fusion import FusionCandidate, fusion_candidates
from jaxprune.analysis._importance import IMPORTANCE_METHODS, importance, keep_top
from jaxprune.analysis._layerwise import above_block_mask
from jaxprune.analysis._margins import head_weight_product, sharpness, softmax_margins
from jaxprune.analysis._path_length import (
    average_path_length,
    effective_width,
    linear_units,
    normalized_average_path_length,
    path_histogram,
    units_from_param_masks,
)
from jaxprune.analysis._polygon import (
    POLYGON_MIN_SIZE,
    painted_image,
    polygon_sides,
    trace_contours,
)
from jaxprune.analysis._redundancy import (
    REDUNDANCY_THRESHOLD,
    redundancy_groups,
    redundant_units,
    unit_similarity,
)
from jaxprune.analysis._reinit_masks import layer_mask, magnitude_mask, random_mask
from jaxprune.analysis._slopes import inactive_fraction
from jaxprune.graph.extend import block_statistics, layer_norms

__all__ = [
    "ACTIVE_THRESHOLD",
    "FusionCandidate",
    "IMPORTANCE_METHODS",
    "Moments",
    "POLYGON_MIN_SIZE",
    "REDUNDANCY_THRESHOLD",
    "above_block_mask",
    "active_units",
    "average_path_length",
    "block_statistics",
    "changed_fraction",
    "connectivity_mask",
    "count_params",
    "effective_weights",
    "effective_width",
    "fusion_candidates",
    "fusion_mse",
    "head_weight_product",
    "importance",
    "inactive_fraction",
    "keep_top",
    "layer_fractions",
    "layer_mask",
    "layer_norms",
    "linear_units",
    "magnitude_mask",
    "moments_init",
    "moments_merge",
    "moments_update",
    "normalized_average_path_length",
    "painted_image",
    "path_histogram",
    "polygon_sides",
    "random_mask",
    "redundancy_groups",
    "redundant_units",
    "sharpness",
    "size_in_bits",
    "slope_layers_of",
    "softmax_margins",
    "streaming_moments",
    "trace_contours",
    "unit_ablation",
    "unit_similarity",
    "units_from_param_masks",
]
