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
4. Add a test on a model that uses it: the graph's evaluation equals the model, and a unit
   mask equals the masked forward computed by hand.
"""

from __future__ import annotations

__all__ = [
    "BINARY",
    "LINEAR_UNARY",
    "NONLINEAR_LABEL",
    "NONLINEAR_UNARY",
    "REDUCE",
    "REDUCE_WINDOW",
    "SHAPE_ONLY",
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
