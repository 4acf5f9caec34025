"""The one registry of what the layer graph knows about each JAX primitive.

The channel dataflow (:mod:`._analyze`) looks a primitive up here to choose its rule; a
primitive in none of these sets and without a structural rule, applied to an activation with
channel structure, is a :class:`~jaxprune.graph.GraphError` naming it and the user's source
line: nothing is guessed to be elementwise.

How to add a primitive:

1. If it acts elementwise on its operands (same shape in and out, no mixing along any axis),
   add its name to the set that says how it treats an activation: :data:`LINEAR_UNARY` (a
   linear map of one operand: the value stays an affine function of the layers before it),
   :data:`NONLINEAR_UNARY` (a nonlinearity: its input channels are units), :data:`BINARY`
   (two or more operands; ``add``/``sub`` join residual streams, ``mul`` by a parameter scales
   channels, any other is a nonlinearity), or :data:`SHAPE_ONLY` (the identity on values).
   Give a nonlinearity a readable name in :data:`NONLINEAR_LABEL` if its primitive's name is
   not one (``max`` with 0 is a ReLU).
2. A reduction over some axes goes in :data:`REDUCE` (over the channel axis it couples the
   channels, as a norm does; over other axes it keeps them; ``reduce_sum`` is linear), a
   pooling window in :data:`REDUCE_WINDOW`.
3. Anything that moves, splits, joins or mixes axes needs a rule of its own in
   :data:`STRUCTURAL`'s module (``_analyze._RULES``: a function from the operands' layouts to
   the output's, recording layers, slices and couplings) and, if pruning changes a shape
   parameter of it, a line in the narrowed evaluation (``_rewritten._fix_params``).
4. The rewrites and analyses built on the dataflow read views of these sets, named here so
   that a new primitive is added once: :data:`POOL` (pooling that selects one input of its
   window: a path-counting site, paper 004), :data:`FUSION_PASS` and :data:`FUSION_POOL` (what
   fusion's pair search lets through between two layers, paper 001), :data:`AFFINE_ARITH`,
   :data:`AFFINE_ELEMENTWISE` and :data:`CHANNEL_MOVES` (per-channel affine steps and moves
   that leave the channel map alone: affine runs, collapse), :data:`PER_CHANNEL_PASS` (what
   keeps a per-channel constant per channel), :data:`STREAM_JOIN` (sums of residual streams),
   :data:`RANDOM` (PRNG draws: dropout masks), :data:`CALLS` (call primitives the trace
   inlines) and :data:`OUT_SHAPE_PARAM` / :data:`SHAPE_PARAMS` (parameters that carry a
   call's shapes: recomputed by a narrowed evaluation, ignored when matching a region across
   calls). A primitive that is one of these goes in the set too.
5. Add a test on a model that uses it: the graph's evaluation equals the model, and a unit
   mask equals the masked forward computed by hand. ``tests/graph/test_primitives.py`` checks
   that every name here is a primitive of the installed JAX (or in :data:`LEGACY`) and that no
   other module of the package keeps a set of primitive names of its own.
"""

from __future__ import annotations

__all__ = [
    "AFFINE_ARITH",
    "AFFINE_ELEMENTWISE",
    "BINARY",
    "CALLS",
    "CHANNEL_MOVES",
    "ELEMENTWISE",
    "FUSION_PASS",
    "FUSION_POOL",
    "LEGACY",
    "LINEAR_UNARY",
    "NONLINEAR_LABEL",
    "NONLINEAR_UNARY",
    "OUT_SHAPE_PARAM",
    "PER_CHANNEL_PASS",
    "POOL",
    "RANDOM",
    "REDUCE",
    "REDUCE_WINDOW",
    "SHAPE_ONLY",
    "SHAPE_PARAMS",
    "STREAM_JOIN",
    "STRUCTURAL",
]

LINEAR_UNARY = frozenset(
    {"neg", "convert_element_type", "copy", "copy_p", "reduce_precision", "real"}
)
NONLINEAR_UNARY = frozenset({
    "tanh", "logistic", "exp", "exp2", "log", "log1p", "expm1", "erf", "erfc", "erf_inv", "abs",
    "sign", "sqrt", "rsqrt", "cbrt", "integer_pow", "sin", "cos", "tan", "floor", "ceil",
    "round", "is_finite", "square", "not", "asinh", "acosh", "atanh", "sinh", "cosh", "atan",
    "asin", "acos", "lgamma", "digamma", "logsumexp",
})  # fmt: skip
BINARY = frozenset({
    "add", "sub", "mul", "div", "max", "min", "pow", "atan2", "rem", "nextafter", "eq", "ne",
    "lt", "le", "gt", "ge", "and", "or", "xor", "add_any", "select_n", "clamp",
})  # fmt: skip
REDUCE = frozenset({
    "reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin", "reduce_and",
    "reduce_or", "reduce_xor",
})  # fmt: skip
REDUCE_WINDOW = frozenset({"reduce_window_sum", "reduce_window_max", "reduce_window_min"})
SHAPE_ONLY = frozenset({"stop_gradient", "optimization_barrier"})
NONLINEAR_LABEL = {
    "max": "relu",
    "logistic": "sigmoid",
    "tanh": "tanh",
    "select_n": "select",
    "integer_pow": "power",
    "erf": "erf",
    "reduce_window_max": "max_pool",
    "reduce_max": "max",
}
# Primitives with a rule of their own in the channel dataflow (layers, axis moves, attention).
STRUCTURAL = frozenset({
    "dot_general", "conv_general_dilated", "reshape", "transpose", "broadcast_in_dim",
    "squeeze", "concatenate", "slice", "pad", "gather", "split",
})  # fmt: skip

# Call primitives: the trace inlines their bodies. A call without a name of its own leaves
# its primitive's name in a node's context, which names nothing the user wrote.
CALLS = frozenset({
    "jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
    "custom_vjp_call_jaxpr", "checkpoint", "remat", "remat2",
})  # fmt: skip
# PRNG primitives: values drawn from a key (dropout's masks), never activations.
RANDOM = frozenset({
    "random_bits", "random_wrap", "random_unwrap", "random_seed", "random_split",
    "random_fold_in", "threefry2x32",
})  # fmt: skip
# Names in the sets above that are no primitive of the JAX this release is tested with: the
# names older JAX gives them (``pjit`` before ``jit``, ``checkpoint`` before ``remat2``,
# ``copy_p`` before ``copy``, ``custom_vjp_call_jaxpr`` before ``custom_vjp_call``) and names
# kept from the first lists. On the current JAX they match nothing.
LEGACY = frozenset({
    "copy_p", "pjit", "checkpoint", "remat", "core_call", "custom_vjp_call_jaxpr", "logsumexp",
})  # fmt: skip

ELEMENTWISE = LINEAR_UNARY | NONLINEAR_UNARY | BINARY
# Sums that join residual streams (their operands' channels are one group).
STREAM_JOIN = frozenset({"add", "sub", "add_any"})
# Max/min pooling and reductions: a site that selects one input of its window (path counting).
POOL = frozenset({"reduce_window_max", "reduce_window_min", "reduce_max", "reduce_min"})
# Fusion's pair search (paper 001): elementwise operations and pooling windows between the two
# layers of a pair (a pooling window must keep its channels apart).
FUSION_PASS = ELEMENTWISE | {"custom_jvp_call", "stop_gradient"}
FUSION_POOL = frozenset({"reduce_window_max", "reduce_window_sum"})
# Per-channel affine steps: an operand that is a parameter or constant per channel (or scalar).
AFFINE_ARITH = frozenset({"add", "sub", "mul", "div"})
# Moves that leave a value's channel map alone (an affine run continues through them).
CHANNEL_MOVES = frozenset({"transpose", "convert_element_type", "copy"})
# Linear in their one activation operand, per channel (collapse's elementwise steps).
AFFINE_ELEMENTWISE = AFFINE_ARITH | {"neg", "convert_element_type", "copy"}
# What keeps a per-channel (or scalar) constant per channel: broadcasts, reshapes, casts.
PER_CHANNEL_PASS = frozenset({"broadcast_in_dim", "reshape", "convert_element_type", "copy"})
# The parameter that holds a primitive's output shape: a narrowed evaluation sets it to the
# narrowed shape (the other shape parameters it fixes, per primitive, are in
# ``_rewritten._fix_params``: pad, slice, split, gather, grouped convolutions).
OUT_SHAPE_PARAM = {"reshape": "new_sizes", "broadcast_in_dim": "shape", "iota": "shape"}
# Parameters that carry a call's shapes: a replaced region is matched across calls without them.
SHAPE_PARAMS = frozenset(OUT_SHAPE_PARAM.values()) | {"sharding", "out_sharding"}
