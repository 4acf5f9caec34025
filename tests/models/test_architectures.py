"""The papers' architectures in jaxprune.models: reference parameter counts (abstract init only),
and on small versions: trace, collapse (outputs kept), pruning a unit (equals the masked
network), a training step carrying BatchNorm state (the running mean by hand), NoShort's graph
without residual adds, APL of the CIFAR ResNets in closed form, and 001's successive fusions."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from jaxprune.analysis import average_path_length
from jaxprune.models import (
    SCNN,
    VGG16,
    CifarResNet,
    FusionNet,
    MobileNet,
    PyramidNet,
    ResNet50,
    ToyNet,
    fusion_layers,
    fusion_net,
)


def _count(model, shape, collection="params"):
    v = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(v.get(collection, {})))


def _size(tree):
    return sum(int(np.size(a)) for a in jax.tree.leaves(tree))


IMAGENET = (1, 224, 224, 3)
CIFAR = (1, 32, 32, 3)


# -- reference parameter counts --------------------------------------------------------------


def test_imagenet_networks_have_the_reference_counts():
    assert _count(ResNet50(num_classes=1000), IMAGENET) == 25_557_032  # torchvision resnet50
    assert _count(VGG16(num_classes=1000), IMAGENET) == 138_357_544  # torchvision vgg16
    assert _count(MobileNet(num_classes=1000), IMAGENET) == 4_231_976  # Keras, trainable
    assert _count(MobileNet(), IMAGENET, "batch_stats") == 21_888  # Keras' non-trainable
    # paper 002's variants: layer norm after VGG's 13 convs (scale + bias per channel);
    # MobileNet's and ResNet-50's layer norms replace BatchNorms one for one
    convs = 2 * 64 + 2 * 128 + 3 * 256 + 6 * 512
    assert _count(VGG16(norm="layer"), IMAGENET) == 138_357_544 + 2 * convs
    assert _count(MobileNet(norm="layer"), IMAGENET) == 4_231_976
    assert _count(ResNet50(norm="layer"), IMAGENET) == 25_557_032
    # the shallow MobileNet drops five 14x14 blocks: depthwise 3x3x512, pointwise 512x512, and
    # two norms of 512 channels each
    assert _count(MobileNet(shallow=True), IMAGENET) == 4_231_976 - 5 * (
        9 * 512 + 512 * 512 + 4 * 512
    )
    # no norm: each of the 53 BatchNorms' scale and bias (2c) becomes its conv's bias (c); the
    # norms' channels: the stem's 64, per block p + p + 4p, and 4p for each stage's projection
    stages = [(64, 3), (128, 4), (256, 6), (512, 3)]
    channels = 64 + sum(n * 6 * p + 4 * p for p, n in stages)
    assert channels == 26_560
    assert _count(ResNet50(norm=None), IMAGENET) == 25_557_032 - channels


def _cifar_resnet_count(n, widths, version, shortcut, residual, classes=10):
    """Parameters by hand: stem 3x3x3x16, two 3x3 convs and two norms per block, option B's
    1x1 projections with their norms where the shape changes, the final norm (v2), the head."""
    total, c_in = 27 * 16 + (2 * 16 if version == 1 else 0), 16
    for s, w in enumerate(widths):
        for b in range(n):
            stride = 2 if s > 0 and b == 0 else 1
            total += 9 * c_in * w + 9 * w * w
            total += 2 * (c_in + w) if version == 2 else 4 * w  # v2 norms: bn1 on the input
            if residual and shortcut == "B" and (stride != 1 or c_in != w):
                total += c_in * w + 2 * w
            c_in = w
    total += 2 * c_in if version == 2 else 0
    return total + c_in * classes + classes


def test_cifar_resnet56_counts():
    assert _count(CifarResNet(depth=56, version=2, shortcut="A", residual=True), CIFAR) == 853_018
    assert _count(CifarResNet(depth=56, version=1), CIFAR) == 853_018
    assert _count(CifarResNet(depth=56, residual=False), CIFAR) == 853_018  # NoShort
    # option B adds 1x1 projections 16->32 and 32->64 with their BatchNorms
    assert _count(CifarResNet(depth=56, shortcut="B"), CIFAR) == 853_018 + (16 * 32 + 64) + (
        32 * 64 + 128
    )
    for depth, width, shortcut, version in [(56, 2, "B", 2), (20, 0.5, "B", 2), (110, 1, "A", 1)]:
        net = CifarResNet(depth=depth, width=width, shortcut=shortcut, version=version)
        n, widths = (depth - 2) // 6, tuple(round(c * width) for c in (16, 32, 64))
        assert _count(net, CIFAR) == _cifar_resnet_count(n, widths, version, shortcut, True)


def _pyramid_count(stages, start, alpha, bottleneck, stem, classes):
    """PyramidNet's parameters from the formula of its widths (Han et al., Eq. 2): block k has
    ``int(round(start + k * alpha / N))`` planes; zero-padded shortcuts have no parameters."""
    total_blocks = sum(stages)
    c_in = 16 if stem == "cifar" else 64
    total = (27 * 16 + 2 * 16) if stem == "cifar" else (75 * 64 + 2 * 64)
    f = float(start)
    for _ in range(total_blocks):
        f += alpha / total_blocks
        p = int(round(f))
        if bottleneck:
            total += 2 * c_in + c_in * p + 2 * p + 9 * p * p + 2 * p + p * 4 * p + 2 * 4 * p
            c_in = 4 * p
        else:
            total += 2 * c_in + 9 * c_in * p + 2 * p + 9 * p * p + 2 * p
            c_in = p
    return total + 2 * c_in + c_in * classes + classes


def test_pyramidnet_counts():
    # 1,772,706: Han et al. report "1.7M" (Table 4); osmr's imgclsmob port of the authors' code
    # (pyramidnet110_a48_cifar10) lists the same 1,772,706
    assert _count(PyramidNet(depth=110, alpha=48), CIFAR) == 1_772_706
    assert _pyramid_count((18,) * 3, 16, 48, False, "cifar", 10) == 1_772_706
    assert _count(PyramidNet(depth=110, alpha=84), CIFAR) == 3_904_446  # imgclsmob: the same
    assert _count(PyramidNet(depth=110, residual=False), CIFAR) == 1_772_706  # NoShort
    # PyramidNet-41 (Tiny ImageNet, 200 classes): bottlenecks 3-4-6, widths 32 -> 128, checked
    # against the width formula
    tiny = PyramidNet(depth=41, num_classes=200)
    assert tiny.widths[0] == 39 and tiny.widths[-1] == 128
    assert _count(tiny, (1, 64, 64, 3)) == _pyramid_count((3, 4, 6), 32, 96, True, "tiny", 200)
    assert _count(tiny, (1, 64, 64, 3)) == 1_811_742
    assert _count(PyramidNet(depth=164, alpha=270, bottleneck=True), CIFAR) == _pyramid_count(
        (18,) * 3, 16, 270, True, "cifar", 10
    )


def test_toynet_and_fusion_net_counts_by_hand():
    # Toy-Net: 3x3 convs without bias, BatchNorm scale + bias, dense head
    assert _count(ToyNet(depth=10), CIFAR) == (
        27 * 32 + 2 * 32 + 9 * (9 * 32 * 32 + 2 * 32) + 32 * 10 + 10
    )
    # Table V rows on 20 positioning features: 20-16-128-2, 20-16-2, 20-2
    x = (1, 20)
    assert _count(fusion_net("V", 3), x) == (20 * 16 + 16) + (16 * 128 + 128) + (128 * 2 + 2)
    assert _count(fusion_net("V", 2), x) == (20 * 16 + 16) + (16 * 2 + 2)
    assert _count(fusion_net("V", 1), x) == 20 * 2 + 2
    # Table I at CIFAR-10 size: 3x3 convs 32-32-64-64-128-128, pools after every second conv,
    # the head reads 4x4x128
    convs = [(3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)]
    assert (
        _count(fusion_net("I"), CIFAR) == sum(9 * a * b + b for a, b in convs) + 16 * 128 * 10 + 10
    )
    # Table III: 1-D convs 9 -> 18 -> 36 (kernel 3), pool 2 after the second, head of 6
    har = _count(fusion_net("III"), (1, 128, 9))
    assert har == (3 * 9 * 18 + 18) + (3 * 18 * 36 + 36) + 64 * 36 * 6 + 6


# -- small versions: trace, collapse, prune, train ---------------------------------------------

SMALL = {  # (model, input shape, the stem conv and its BatchNorm, BatchNorm momentum)
    "cifar_v2_A": (CifarResNet(depth=8), (4, 8, 8, 3), ("conv1", "layer1_0/bn1"), 0.9),
    "cifar_v2_noshort": (
        CifarResNet(depth=8, residual=False),
        (4, 8, 8, 3),
        ("conv1", "layer1_0/bn1"),
        0.9,
    ),
    "cifar_v2_B_width": (
        CifarResNet(depth=8, shortcut="B", width=0.5),
        (4, 8, 8, 3),
        ("conv1", "layer1_0/bn1"),
        0.9,
    ),
    "cifar_v1_A": (CifarResNet(depth=8, version=1), (4, 8, 8, 3), ("conv1", "bn1"), 0.9),
    "resnet50": (
        ResNet50(width=4, stage_sizes=(1, 1, 1, 1), num_classes=5),
        (4, 32, 32, 3),
        ("conv1", "bn1"),
        0.9,
    ),
    "vgg16_bn": (
        VGG16(width=1 / 16, dense=8, num_classes=5, norm="batch"),
        (4, 32, 32, 3),
        ("conv_0", "norm_0"),
        0.9,
    ),
    "mobilenet": (
        MobileNet(alpha=0.125, num_classes=5, shallow=True),
        (4, 32, 32, 3),
        ("conv1", "conv1_bn"),
        0.99,
    ),
    "pyramidnet": (PyramidNet(depth=8, alpha=6), (4, 8, 8, 3), ("conv1", "bn1"), 0.9),
    "pyramidnet_bottleneck": (
        PyramidNet(depth=11, alpha=6, bottleneck=True),
        (4, 8, 8, 3),
        ("conv1", "bn1"),
        0.9,
    ),
    "toynet": (ToyNet(depth=3, width=4), (4, 8, 8, 3), ("Conv_0", "BatchNorm_0"), 0.9),
}


def _variables(model, x):
    """Random variables without compiling ``model.init`` (slow on a small CPU): kernels He
    normal, biases, norm scales and shifts, and BatchNorm running statistics non-trivial."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    rng = np.random.default_rng(0)

    def draw(path, s):
        name = path[-1].key
        if name == "kernel":
            return rng.normal(0, np.sqrt(2 / np.prod(s.shape[:-1])), s.shape).astype(s.dtype)
        if name in ("var", "scale"):
            return (0.5 + rng.random(s.shape)).astype(s.dtype)
        return (0.3 * rng.normal(size=s.shape)).astype(s.dtype)  # bias, mean

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _get(tree, path):
    for k in path.split("/"):
        tree = tree[k]
    return tree


@pytest.mark.parametrize("name", sorted(SMALL))
def test_traces_collapses_and_prunes_a_unit_exactly(name):
    model, shape, _, _ = SMALL[name]
    x = jax.random.normal(jax.random.key(0), shape)
    v = _variables(model, x)
    graph = jp.trace(model, v, x, model_kwargs={"train": False})
    kernels = [p for p in jax.tree_util.tree_leaves_with_path(v["params"])]
    n_kernels = sum(1 for p, _ in kernels if p[-1].key == "kernel")
    assert len(graph.layers) == n_kernels  # every conv and dense layer is a layer of the graph
    y = model.apply(v, x, train=False)
    scale = float(jnp.abs(y).max())
    tol = dict(rtol=1e-4, atol=1e-5 * scale)

    result = jp.collapse(model, v, x, model_kwargs={"train": False})
    small, sv = result.model, result.variables
    np.testing.assert_allclose(small.apply(sv, x, train=False), y, **tol)
    assert _size(sv) <= _size(v)

    # prune one unit of every group: the narrow network equals the masked one
    keep = {u: np.arange(g.width) != 1 for u, g in graph.units.items()}
    result = jp.prune_units(model, v, keep, x, model_kwargs={"train": False})
    narrow, nv = result.model, result.variables
    masked = graph.apply(v, x, masks=keep)
    np.testing.assert_allclose(narrow.apply(nv, x, train=False), masked, **tol)
    assert float(jnp.abs(masked - y).max()) > 0  # the unit mattered
    assert _size(nv["params"]) < _size(v["params"])


# compiling the trainer's program takes 10-30 s per network on a small shared CPU: the library's
# step runs on the cheap ones (BatchNorm state is generic there); every network is checked by hand
LIBRARY_STEP = {"cifar_v2_A", "cifar_v2_noshort", "toynet"}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_training_step_updates_batchnorm_state(name):
    model, shape, (conv, bn), momentum = SMALL[name]
    x = jax.random.normal(jax.random.key(0), shape)
    y = jnp.arange(shape[0]) % 3
    v = _variables(model, x)
    rngs = {"dropout": jax.random.key(3)}
    # the first BatchNorm's running mean after one batch, by hand: it normalizes the stem
    # conv's output, so new = momentum * old + (1 - momentum) * batch mean over (N, H, W)
    _, state = model.apply(
        v, x, train=True, rngs=rngs, mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda mdl, _: mdl.path == tuple(conv.split("/")),
    )  # fmt: skip
    stem = _get(state["intermediates"], conv)["__call__"][0]
    old = _get(v["batch_stats"], bn)["mean"]
    expect = momentum * old + (1 - momentum) * stem.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(_get(state["batch_stats"], bn)["mean"], expect, rtol=1e-5, atol=1e-6)
    if name not in LIBRARY_STEP:
        return
    # one SGD step of the library's trainer over the whole batch carries the same statistics
    out = jp.training.train_epochs(
        model, (x, y), keys=jax.random.key(4), variables=v, loss="cross_entropy",
        optimizer=optax.sgd(0.1), epochs=1, batch_size=shape[0], progress=False,
    )  # fmt: skip
    for a, b in zip(
        jax.tree.leaves(out.state["batch_stats"]),
        jax.tree.leaves(state["batch_stats"]),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert bool(np.isfinite(out.history["loss"]).all())
    moved = [float(jnp.abs(a - b).max()) for a, b in zip(
        jax.tree.leaves(out.params), jax.tree.leaves(v["params"]), strict=True)]  # fmt: skip
    assert max(moved) > 0


# -- NoShort, APL ---------------------------------------------------------------------------


def _graph(model):
    x = jnp.ones((1, 32, 32, 3))
    v = jax.eval_shape(model.init, jax.random.key(0), x)
    v = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), v)
    return jp.trace(model, v, x)


def _residual_adds(graph):
    return sum(1 for p in graph.analysis.paths if p.kind == "sum" and len(p.srcs) > 1)


def test_resnet56_noshort_has_no_residual_adds_and_apl_in_closed_form():
    """APL of an all-active network at channel level (paper 004, sec. 3.1): let ``S(z)`` be the
    sum of a stage's channel path polynomials. A v2 block of width ``w`` maps ``S`` to
    ``81 w^2 z^2 S`` through its two ReLU-conv pairs (each 3x3 conv output channel sums 9 times
    every input channel), plus ``S`` through an option-A shortcut (each channel is one input
    channel, zero-padded ones none), plus ``w S`` through an option-B 1x1 projection. The head's
    ReLU adds one. So APL = ``P'(1)/P(1)`` = ``1 + sum_blocks 2 * 81 w^2 / (81 w^2 + c)`` with
    ``c = 1`` (identity, option A), ``c = w`` (projection); NoShort: ``1 + 2 * blocks``."""
    short = _graph(CifarResNet(depth=56))
    noshort = _graph(CifarResNet(depth=56, residual=False))
    assert _residual_adds(short) == 27
    assert _residual_adds(noshort) == 0
    assert all(len(u.layers) == 1 for u in noshort.units.values())  # nothing ties channels
    widths = [16] * 9 + [32] * 9 + [64] * 9
    expect = 1 + sum(2 * 81 * w * w / (81 * w * w + 1) for w in widths)
    assert average_path_length(short) == pytest.approx(expect, rel=1e-12)
    assert average_path_length(noshort) == pytest.approx(55, rel=1e-12)
    # option B at width 2: the first block (16 -> 32) and the stage transitions project
    b = _graph(CifarResNet(depth=14, shortcut="B", width=2))
    blocks = [(32, True), (32, False), (64, True), (64, False), (128, True), (128, False)]
    expect = 1 + sum(2 * 81 * w * w / (81 * w * w + (w if proj else 1)) for w, proj in blocks)
    assert average_path_length(b) == pytest.approx(expect, rel=1e-12)


# -- paper 001's successive fusions ----------------------------------------------------------


def _shapes_in_order(variables):
    return [tuple(a.shape) for a in jax.tree.leaves(variables)]


@pytest.mark.filterwarnings("ignore::jaxprune.rewrites.FusionWarning")  # dead ReLUs at init
@pytest.mark.parametrize(
    "table, shape",
    [("I", (600, 8, 8, 3)), ("III", (96, 16, 9)), ("IV", (64, 16, 40)), ("V", (200, 20))],
)
def test_fusing_a_row_gives_the_next_rows_network(table, shape):
    """Fusing the pair of :func:`fusion_layers` gives the next row's network: the same shapes
    in forward order, and the next row's :class:`FusionNet` loaded with the fused weights
    computes what the fused model does (from which the next fusion continues). Tables III and
    IV fuse two 1-D convs ``(N, L, C)`` into one conv of kernel 5 (Theorem 2)."""
    x = jax.random.normal(jax.random.key(0), shape)
    rows = {"I": (6, 5, 4), "III": (2, 1), "IV": (4, 3), "V": (3, 2, 1)}[table]
    net = fusion_net(table, rows[0])
    v = net.init(jax.random.key(1), x)
    for row, nxt in zip(rows, rows[1:], strict=False):
        result = jp.fuse(net, v, fusion_layers(table, row), [x])
        small, fv = result.model, result.variables
        mse = result.report.mse[fusion_layers(table, row)]
        net = fusion_net(table, nxt)
        ref = net.init(jax.random.key(0), x)
        assert _shapes_in_order(fv) == _shapes_in_order(ref)  # the fused layer sorts last
        v = jax.tree.unflatten(jax.tree.structure(ref), jax.tree.leaves(fv))
        out = small.apply(fv, x)
        np.testing.assert_allclose(
            net.apply(v, x), out, rtol=1e-5, atol=1e-5 * float(jnp.abs(out).max())
        )
        assert float(mse) >= 0


def test_fusion_net_initializer_is_the_papers_normal():
    v = FusionNet(dense=(4096,), out=2).init(jax.random.key(0), jnp.zeros((1, 64)))
    k = v["params"]["dense_0"]["kernel"]
    assert float(k.var()) == pytest.approx(0.05, rel=0.02)  # variance 0.05 (sec. II-D)
    assert float(jnp.abs(v["params"]["dense_0"]["bias"]).max()) == 0.0


# -- bad arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: CifarResNet(depth=55), "depth: expected 6n \\+ 2"),
        (lambda: CifarResNet(version=3), "version: expected 1 or 2"),
        (lambda: CifarResNet(shortcut="C"), "shortcut: expected 'A' or 'B'"),
        (lambda: CifarResNet(width=0.5), "width: 0.5 makes the first stage 8 channels"),
        (lambda: ResNet50(norm="group"), "norm: expected one of"),
        (lambda: VGG16(dropout=1.0), "dropout: expected a rate"),
        (lambda: MobileNet(activation="gelu"), "activation: expected 'relu' or 'relu6'"),
        (lambda: PyramidNet(depth=40), "depth: expected 6n \\+ 2 .* or 41, got 40"),
        (lambda: PyramidNet(depth=14, bottleneck=True), "depth: expected 9n \\+ 2"),
        (lambda: ToyNet(depth=0), "depth: expected a positive int"),
        (lambda: fusion_net("VI"), "table: expected one of"),
        (lambda: fusion_net("I", 3), "layers: Table I has rows with \\(6, 5, 4\\) layers"),
        (lambda: fusion_layers("V", 1), "layers: 1 is Table V's last row"),
        (lambda: FusionNet(conv=(4, 4), pool=(True,)), "pool: expected one entry per conv"),
    ],
)
def test_bad_arguments_name_themselves(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_scnn_takes_any_input_size():
    """002's scnn at its paper's 224x224 (two 2x2 pools: a 56x56x64 flatten) and at 32x32."""
    for size, flat in [(224, 56 * 56 * 64), (32, 8 * 8 * 64), (28, 7 * 7 * 64)]:
        v = jax.eval_shape(SCNN().init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
        assert v["params"]["dense"]["kernel"].shape == (flat, 512)
