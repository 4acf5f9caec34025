"""cpu_rewrite: convolutions, also inside loops, in the layout XLA:CPU runs with its fast kernel
(bit-identical where XLA would do the same), and narrow contractions as sums of rank-1 terms."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from jaxprune.training import cpu_rewrite
from jaxprune.training._cpu_rewrite import (
    MAX_SPLIT_GROUPS,
    MAX_UNROLLED_CONTRACTION,
    MAX_UNROLLED_TERMS,
)

CANONICAL_2D = "b01f_01io->b01f"


def _same(f, *args, exact=True):
    """``f`` and its rewrite agree: bit for bit, or to float32 rounding (``exact=False``)."""
    want = jax.jit(f)(*args)
    got = jax.jit(cpu_rewrite(f))(*args)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        if exact:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        else:
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def _conv_labels(fn, *args) -> list[str]:
    """dim_labels of every convolution XLA:CPU compiled for ``fn`` (loop bodies included)."""
    text = fn.lower(*args).compile().as_text()
    return re.findall(r"convolution\(.*?dim_labels=([^,\s]+)", text)


def _normal(i, shape):
    return jax.random.normal(jax.random.key(i), shape)


@settings(max_examples=20, deadline=None)
@given(
    layout=st.sampled_from(
        [("NHWC", "HWIO", "NHWC"), ("NCHW", "OIHW", "NCHW"), ("NHWC", "OIHW", "NCHW")]
    ),
    stride=st.sampled_from([(1, 1), (2, 1)]),
    padding=st.sampled_from(["SAME", "VALID", ((1, 0), (2, 1))]),
    dilation=st.sampled_from([(1, 1), (1, 2)]),
    groups=st.sampled_from([(1, 1), (2, 1), (1, 2)]),
    grad_of=st.sampled_from([None, 0, 1]),
)
def test_any_convolution_and_its_gradients_agree(
    layout, stride, padding, dilation, groups, grad_of
):
    fg, bg = groups
    n, cin, cout, hw = 2 * bg, 2 * fg, 2 * fg * bg, (7, 6)
    lhs = {"N": n, "C": cin, "H": hw[0], "W": hw[1]}
    rhs = {"O": cout, "I": cin // fg, "H": 3, "W": 2}
    x = _normal(0, tuple(lhs[c] for c in layout[0]))
    w = _normal(1, tuple(rhs[c] for c in layout[1]))

    def conv(x, w):
        return lax.conv_general_dilated(
            x,
            w,
            stride,
            padding,
            rhs_dilation=dilation,
            dimension_numbers=layout,
            feature_group_count=fg,
            batch_group_count=bg,
        )

    # outside loops XLA itself canonicalizes ungrouped convolutions the same way: bit-identical;
    # a grouped one split into one per group sums in another order
    exact = groups == (1, 1)
    if grad_of is None:
        _same(conv, x, w, exact=exact)
    else:
        f = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))), argnums=grad_of)
        _same(f, x, w, exact=exact)


class ConvNet(nn.Module):
    """A small conv net as users write it (flax defaults, NHWC, ReLU, pooling, a dense head)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.max_pool(nn.relu(nn.Conv(8, (3, 3), strides=2)(x)), (2, 2), (2, 2))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _scanned_training(model, x, y):
    tx = optax.sgd(0.1, momentum=0.9)

    def run(params):
        def step(carry, _):
            p, s = carry
            loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
                model.apply({"params": p}, x), y
            ).mean()
            u, s = tx.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        return lax.scan(step, (params, tx.init(params)), None, length=3)[0][0]

    return run


def test_training_steps_in_a_scan_compile_to_canonical_convolutions_only():
    model, x = ConvNet(), _normal(2, (4, 9, 9, 2))
    y = jnp.array([0, 1, 2, 1])
    params = model.init(jax.random.key(0), x)["params"]
    run = _scanned_training(model, x, y)
    plain, fast = jax.jit(run), jax.jit(cpu_rewrite(run))
    # the premise: XLA leaves the gradient convolutions inside the loop in other layouts
    assert set(_conv_labels(plain, params)) - {CANONICAL_2D}
    labels = _conv_labels(fast, params)
    assert labels and set(labels) == {CANONICAL_2D}
    _same(run, params, exact=False)  # XLA's loop kernel sums in another order


def test_vmapped_seeds_split_into_one_canonical_convolution_per_seed():
    model, x = ConvNet(), _normal(3, (4, 9, 9, 2))
    y = jnp.array([0, 1, 2, 1])
    keys = jax.random.split(jax.random.key(1), 3)
    params = jax.vmap(lambda k: model.init(k, x)["params"])(keys)
    run = jax.vmap(_scanned_training(model, x, y))
    labels = _conv_labels(jax.jit(cpu_rewrite(run)), params)
    assert set(labels) == {CANONICAL_2D}
    _same(run, params, exact=False)


def test_many_groups_stay_one_grouped_convolution():
    groups = MAX_SPLIT_GROUPS + 1
    x, w = _normal(4, (2, 5, 5, groups)), _normal(5, (3, 3, 1, groups))

    def depthwise(x, w):
        return lax.conv_general_dilated(
            x,
            w,
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )

    assert len(_conv_labels(jax.jit(cpu_rewrite(depthwise)), x, w)) == 1
    _same(depthwise, x, w)


def test_branches_keyword_arguments_and_functions_without_convolutions():
    x, w = _normal(6, (1, 3, 6, 6)), _normal(7, (2, 3, 3, 3))

    def f(x, *, w, flag):
        conv = lambda: lax.conv(x, w, (1, 1), "SAME")  # NCHW / OIHW
        return lax.cond(flag, conv, lambda: jnp.zeros((1, 2, 6, 6))) + 1

    for flag in (True, False):
        want = jax.jit(f)(x, w=w, flag=flag)
        got = jax.jit(cpu_rewrite(f))(x, w=w, flag=flag)
        np.testing.assert_array_equal(np.asarray(want), np.asarray(got))
    dense = lambda a, b: {"y": jnp.tanh(a @ b)}
    a = _normal(8, (3, 4))
    np.testing.assert_array_equal(
        np.asarray(jax.jit(cpu_rewrite(dense))(a, a.T)["y"]), np.asarray(dense(a, a.T)["y"])
    )


_DOT_CASES = [
    # (lhs shape, rhs shape, ((lhs contract, rhs contract), (lhs batch, rhs batch)))
    ((5, 3), (3, 4), (((1,), (0,)), ((), ()))),  # x @ w, a layer with 3 inputs
    ((5, 4), (3, 4), (((1,), (1,)), ((), ()))),  # g @ w.T, the input gradient of 4 outputs
    ((2, 5, 3), (2, 3, 4), (((2,), (1,)), ((0,), (0,)))),  # vmapped over 2 runs
    ((3, 2, 5, 2), (2, 3, 4, 2), (((1, 3), (0, 3)), ((0,), (1,)))),  # two contracted axes
    ((4, 15), (15,), (((1,), (0,)), ((), ()))),  # matrix-vector, contraction at the limit
    ((4, 0), (0, 3), (((1,), (0,)), ((), ()))),  # empty contraction: zeros
]


@settings(max_examples=30, deadline=None)
@given(
    case=st.sampled_from(_DOT_CASES),
    dtypes=st.sampled_from(
        [(jnp.float32, None), (jnp.bfloat16, jnp.float32), (jnp.int32, None), (jnp.int8, jnp.int32)]
    ),
    seed=st.integers(0, 2**16),
)
def test_narrow_contractions_equal_the_dot(case, dtypes, seed):
    lhs_shape, rhs_shape, dims = case
    dtype, preferred = dtypes
    k1, k2 = jax.random.split(jax.random.key(seed))
    if jnp.issubdtype(dtype, jnp.integer):
        a = jax.random.randint(k1, lhs_shape, -9, 10).astype(dtype)
        b = jax.random.randint(k2, rhs_shape, -9, 10).astype(dtype)
    else:
        a = jax.random.normal(k1, lhs_shape).astype(dtype)
        b = jax.random.normal(k2, rhs_shape).astype(dtype)

    def dot(a, b):
        return lax.dot_general(a, b, dims, preferred_element_type=preferred)

    want = jax.jit(dot)(a, b)
    got = jax.jit(cpu_rewrite(dot))(a, b)
    assert got.dtype == want.dtype and got.shape == want.shape
    if jnp.issubdtype(dtype, jnp.integer):  # integer sums are exact in any order
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    else:  # bfloat16 operands are multiplied in float32, as the dot does
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def _dots(fn, *args) -> int:
    return len(re.findall(r"= \S+ dot\(", fn.lower(*args).compile().as_text()))


def test_narrow_layers_compile_without_dots_and_wide_contractions_stay_dots():
    class Narrow(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.relu(nn.Dense(9)(nn.relu(nn.Dense(3)(x)))))

    x = _normal(9, (128, 2))
    params = Narrow().init(jax.random.key(0), x)["params"]
    forward = lambda p, x: Narrow().apply({"params": p}, x)
    assert _dots(jax.jit(forward), params, x) == 3  # the premise: XLA keeps one dot per layer
    assert _dots(jax.jit(cpu_rewrite(forward)), params, x) == 0
    _same(forward, params, x, exact=False)

    # in a training step the weight gradients contract the 128 rows of the batch: still dots
    loss = lambda p: jnp.mean((forward(p, x) - 1.0) ** 2)
    grad = jax.grad(loss)
    assert _dots(jax.jit(cpu_rewrite(grad)), params) == 3
    _same(grad, params, exact=False)

    wide = lambda a, b: a @ b
    a = _normal(10, (4, MAX_UNROLLED_CONTRACTION + 1))
    assert _dots(jax.jit(cpu_rewrite(wide)), a, a.T) == 1
    # 12 summed terms: unrolled while 12 x (right operand's free size) <= MAX_UNROLLED_TERMS
    a = _normal(12, (128, 12))
    assert MAX_UNROLLED_TERMS == 64
    assert _dots(jax.jit(cpu_rewrite(wide)), a, _normal(13, (12, 5))) == 0
    assert _dots(jax.jit(cpu_rewrite(wide)), a, _normal(14, (12, 6))) == 1
    # a chain of 15-wide linear layers stays dots (unrolled, XLA recomputed each layer 15x)
    chain = lambda h, w: h @ w @ w @ w
    assert _dots(jax.jit(cpu_rewrite(chain)), _normal(15, (128, 15)), _normal(16, (15, 15))) == 3


def test_static_arguments_of_the_enclosing_jit_stay_python_values():
    def f(a, b, flip: bool):
        out = a @ b  # a narrow contraction: rewritten
        return -out if flip else out  # `flip` must stay a Python bool

    a = _normal(11, (4, 3))
    fast = jax.jit(cpu_rewrite(f), static_argnums=2)
    for flip in (True, False):
        np.testing.assert_allclose(
            np.asarray(fast(a, a.T, flip)), np.asarray(f(a, a.T, flip)), rtol=1e-6, atol=1e-6
        )


def test_explicit_out_shardings_are_kept():
    # explicit-sharding mode: a narrow product that names its result's sharding is kept as it is
    # (rewritten, its result followed the input's sharding, P('x', None), instead)
    mesh = jax.make_mesh((2,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,))
    spec = jax.sharding.PartitionSpec
    with jax.set_mesh(mesh):
        a = jax.device_put(_normal(21, (8, 2)), jax.sharding.NamedSharding(mesh, spec("x", None)))
        b = _normal(22, (2, 4))
        dot = lambda a, b: jnp.matmul(a, b, out_sharding=spec(None, None))
        got = jax.jit(cpu_rewrite(dot))(a, b)
        assert got.sharding.spec == spec(None, None)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(jax.jit(dot)(a, b)))
        assert "dot_general" in str(jax.make_jaxpr(cpu_rewrite(dot))(a, b))
        # without out_sharding the same product is rewritten
        assert "dot_general" not in str(jax.make_jaxpr(cpu_rewrite(jnp.matmul))(a, b))
    # automatic axes: the transposed product of a gradient carries an out_sharding of the mesh,
    # and is still rewritten (keeping it made 30 vmapped runs of paper 000's model 2 slower)
    auto = jax.make_mesh((2,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    grad_x = jax.grad(lambda x, w: jnp.sum(jnp.tanh(x @ w)))  # forward and input gradient: narrow
    x, w = _normal(23, (16, 2)), _normal(24, (2, 3))
    with jax.set_mesh(auto):
        eqns = jax.make_jaxpr(grad_x)(x, w).jaxpr.eqns
        assert any(e.params.get("out_sharding") is not None for e in eqns)
        assert "dot_general" not in str(jax.make_jaxpr(cpu_rewrite(grad_x))(x, w))
        np.testing.assert_allclose(
            np.asarray(jax.jit(cpu_rewrite(grad_x))(x, w)), np.asarray(grad_x(x, w)), atol=1e-6
        )
