"""ResNets of papers 004 and 002: the CIFAR ResNet (v1, v2, Short, NoShort) and ResNet-50."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.models._norm_slot import norm_slot

__all__ = ["CifarResNet", "ResNet50"]

NORMS = ("batch", "layer", None)


def norm_layer(norm, train: bool, name: str, dtype=None, momentum=0.9, epsilon=1e-5):
    """The normalization after a conv: PyTorch's ``BatchNorm2d`` (``momentum=0.9`` in Flax's
    convention, ``epsilon=1e-5``), paper 002's layer norm (``GroupNorm(num_groups=1)``), or none.
    """
    if norm == "batch":
        return nn.BatchNorm(
            use_running_average=not train,
            momentum=momentum,
            epsilon=epsilon,
            dtype=dtype,
            name=name,
        )
    if norm == "layer":
        return nn.GroupNorm(num_groups=1, epsilon=epsilon, dtype=dtype, name=name)
    return lambda h: h


def check_norm(norm) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")


def pad_channels(x: jax.Array, features: int, where: str = "both") -> jax.Array:
    """Zero-pads the channel axis to ``features`` (option A): half before and half after the
    old channels (``"both"``, the CIFAR ResNet) or all after them (``"end"``, PyramidNet)."""
    extra = features - x.shape[-1]
    if extra < 0:
        raise ValueError(f"option A cannot shrink {x.shape[-1]} channels to {features}")
    before = extra // 2 if where == "both" else 0
    pad = [(0, 0)] * (x.ndim - 1) + [(before, extra - before)]
    return jnp.pad(x, pad)


class _CifarBlock(nn.Module):
    """Basic block: v1 ``conv-BN-ReLU-conv-BN (+x) ReLU``, v2 ``BN-ReLU-conv-BN-ReLU-conv (+x)``."""

    features: int
    strides: int
    version: int
    shortcut: str
    residual: bool
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = lambda c, k, s, name: nn.Conv(  # noqa: E731
            c,
            (k, k),
            (s, s),
            padding=[(k // 2, k // 2)] * 2,
            use_bias=False,
            dtype=self.dtype,
            name=name,
        )
        bn = lambda name: norm_layer("batch", train, name, self.dtype)  # noqa: E731
        s = self.strides
        if self.version == 2:
            y = conv(self.features, 3, s, "conv1")(nn.relu(bn("bn1")(x)))
            y = conv(self.features, 3, 1, "conv2")(nn.relu(bn("bn2")(y)))
        else:
            y = nn.relu(bn("bn1")(conv(self.features, 3, s, "conv1")(x)))
            y = bn("bn2")(conv(self.features, 3, 1, "conv2")(y))
        if self.residual:
            if s != 1 or x.shape[-1] != self.features:
                if self.shortcut == "A":  # subsample, zero-pad the new channels
                    x = pad_channels(x[:, ::s, ::s, :], self.features)
                else:  # B: 1x1 projection and its BatchNorm
                    x = bn("shortcut_bn")(conv(self.features, 1, s, "shortcut_conv")(x))
            y = y + x
        return nn.relu(y) if self.version == 1 else y


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (depth ``6n + 2``), with paper 004's variants.

    Three stages of ``n = (depth - 2) / 6`` basic blocks at 16, 32 and 64 channels (times
    ``width``), strides 1, 2, 2, global average pooling and a dense head. ``version=2`` is the
    pre-activation ResNet of He et al. 2016 ("Identity mappings", the "BasicBlock v2" of paper
    004, App. C.1): a 3x3 stem conv without norm, blocks ``BN-ReLU-conv-BN-ReLU-conv`` plus the
    shortcut, then a final ``BN-ReLU`` before pooling. ``version=1`` is the original
    post-activation network (He et al. 2015): stem ``conv-BN-ReLU``, blocks
    ``conv-BN-ReLU-conv-BN``, add, ReLU. Both have 853,018 parameters at ``depth=56`` with 10
    classes and option A (BatchNorm scales and biases counted, running statistics not).

    Shortcuts where a block changes the shape: option ``"A"`` subsamples by the stride and
    zero-pads the new channels, half before and half after the old ones (no parameters, as the
    paper's code pads ``planes // 4`` on each side); option ``"B"`` is a 1x1 conv with the
    block's stride and a BatchNorm. ``residual=False`` is paper 004's "NoShort": the same
    network without the identity adds and without the shortcut branches.

    ``width`` multiplies the channels of every block (paper 004, Fig. 8); the stem keeps 16
    filters, as in the paper's code, so at ``width != 1`` the first block changes the channel
    count too (which is why the paper uses option B for Fig. 8; option A zero-pads it).

    Parameter paths: ``conv1`` (stem), ``bn1`` (v1 stem norm), ``layer{s}_{b}`` (stage
    ``s = 1..3``, block ``b = 0..n-1``) with ``conv1``, ``bn1``, ``conv2``, ``bn2`` and, for
    option B, ``shortcut_conv``, ``shortcut_bn``; ``bn_final`` (v2); ``fc`` (head). BatchNorm
    follows PyTorch (``momentum=0.9`` in Flax's convention, ``epsilon=1e-5``); running
    statistics live in ``batch_stats``. Convs have no bias.

    Attributes:
      depth: ``6n + 2`` (56: ResNet-56; paper 004's Fig. 10 scales ``n``).
      version: 2 (pre-activation, paper 004) or 1 (post-activation).
      shortcut: ``"A"`` (zero-padding) or ``"B"`` (1x1 projection).
      residual: False for NoShort (no shortcut connections at all).
      num_classes: outputs of the head.
      width: channel multiplier of the blocks (16, 32, 64 times ``width``, rounded).
      dtype: computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32 and the logits
        are returned in float32.

    >>> import jax, jaxprune as jp
    >>> net = jp.models.CifarResNet(depth=56)
    >>> v = jax.eval_shape(net.init, jax.random.key(0), jax.numpy.zeros((1, 32, 32, 3)))
    >>> sum(a.size for a in jax.tree.leaves(v["params"]))
    853018
    >>> sorted(v["params"])[:3], v["params"]["layer2_0"]["conv1"]["kernel"].shape
    (['bn_final', 'conv1', 'fc'], (3, 3, 16, 32))

    References:
      He et al. 2016, "Deep residual learning" (sec. 4.2) and "Identity mappings in deep residual
      networks"; paper 004, sec. 4 and App. C.1 (Short/NoShort, options A and B, width, depth).
    """

    depth: int = 56
    version: int = 2
    shortcut: str = "A"
    residual: bool = True
    num_classes: int = 10
    width: float = 1.0
    dtype: Any = None

    def __post_init__(self):
        if not isinstance(self.depth, int) or self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(
                f"depth: expected 6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...), got {self.depth}"
            )
        if self.version not in (1, 2):
            raise ValueError(f"version: expected 1 or 2, got {self.version!r}")
        if self.shortcut not in ("A", "B"):
            raise ValueError(f"shortcut: expected 'A' or 'B', got {self.shortcut!r}")
        if not self.width > 0 or round(16 * self.width) < 1:
            raise ValueError(f"width: expected a multiplier with 16 * width >= 1, got {self.width}")
        if self.shortcut == "A" and self.residual and self.widths[0] < 16:
            raise ValueError(
                f"width: {self.width} makes the first stage {self.widths[0]} channels wide, "
                "narrower than the 16-filter stem, which option A (zero-padding) cannot shrink; "
                "expected width >= 1 or shortcut='B'"
            )
        if self.num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {self.num_classes}")
        super().__post_init__()

    @property
    def widths(self) -> tuple[int, int, int]:
        """Channels of the three stages."""
        a, b, c = (max(1, round(c * self.width)) for c in (16, 32, 64))
        return a, b, c

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits of NHWC images; ``train=True`` normalizes with batch statistics."""
        h = nn.Conv(
            16, (3, 3), padding=[(1, 1), (1, 1)], use_bias=False, dtype=self.dtype, name="conv1"
        )(x)
        if self.version == 1:
            h = nn.relu(norm_layer("batch", train, "bn1", self.dtype)(h))
        n = (self.depth - 2) // 6
        for s, c in enumerate(self.widths):
            for b in range(n):
                h = _CifarBlock(
                    c,
                    2 if s > 0 and b == 0 else 1,
                    self.version,
                    self.shortcut,
                    self.residual,
                    self.dtype,
                    name=f"layer{s + 1}_{b}",
                )(h, train)
        if self.version == 2:
            h = nn.relu(norm_layer("batch", train, "bn_final", self.dtype)(h))
        h = jnp.mean(h, axis=(1, 2))
        out = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(h)
        return out if self.dtype is None else out.astype(jnp.float32)


class _Bottleneck(nn.Module):
    """torchvision's ``Bottleneck`` (v1.5: the stride on the 3x3 conv)."""

    planes: int
    strides: int
    norm: str | None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        bias = self.norm is None
        conv = lambda c, k, s, name: nn.Conv(  # noqa: E731
            c,
            (k, k),
            (s, s),
            padding=[(k // 2, k // 2)] * 2,
            use_bias=bias,
            kernel_init=nn.initializers.he_normal(),
            dtype=self.dtype,
            name=name,
        )
        norm = lambda name: norm_layer(self.norm, train, name, self.dtype)  # noqa: E731
        s, out = self.strides, 4 * self.planes
        y = nn.relu(norm("bn1")(conv(self.planes, 1, 1, "conv1")(x)))
        y = nn.relu(norm("bn2")(conv(self.planes, 3, s, "conv2")(y)))
        y = norm("bn3")(conv(out, 1, 1, "conv3")(y))
        if s != 1 or x.shape[-1] != out:
            x = norm("downsample_bn")(conv(out, 1, s, "downsample_conv")(x))
        return nn.relu(y + x)


class ResNet50(nn.Module):
    """ResNet-50 as torchvision defines it: 25,557,032 parameters with 1000 classes.

    Stem ``conv 7x7/2 (64) - BN - ReLU - max-pool 3x3/2`` (padding 3 and 1, as PyTorch's), four
    stages of 3, 4, 6, 3 bottleneck blocks (``1x1 - 3x3 - 1x1`` convs with 64, 128, 256, 512
    planes and 4x expansion, the stride on the 3x3 conv: torchvision's "v1.5"), a 1x1 conv
    projection with BatchNorm on each stage's first block, global average pooling and a dense
    head. Paper 004 linearizes torchvision's pretrained ResNet-50; paper 002 trains it at
    224x224 with He initialization (Flax's default for ``nn.Conv`` is LeCun normal, so
    ``kernel_init`` is He normal here, PyTorch's ``kaiming_normal_(mode="fan_out")`` aside).

    Parameter paths mirror torchvision's state dict (``layer1.0.conv1.weight`` is
    ``params/layer1_0/conv1/kernel``): ``conv1``, ``bn1``, ``layer{s}_{b}`` with ``conv1..3``,
    ``bn1..3``, ``downsample_conv``, ``downsample_bn``, then ``fc``. BatchNorm follows PyTorch
    (``momentum=0.9`` in Flax's convention, ``epsilon=1e-5``).

    Paper 002's LW treats the 16 blocks as its K = 16 blocks (the stem joins the first):
    :meth:`lw_blocks`, with a normalization slot (:func:`~jaxprune.models.norm_slot`) after each.

    Attributes:
      num_classes: outputs of the head.
      norm: ``"batch"`` (torchvision), ``"layer"`` (paper 002's layer norm:
        ``GroupNorm(num_groups=1)``, the same parameter count) or ``None``: no normalization and
        biased convs (the architecture :func:`jaxprune.collapse` folds the BatchNorms into).
      width: channels of the stem and the first stage's planes (64); the stages have
        ``width * (1, 2, 4, 8)`` planes. A smaller width gives a small test network.
      stage_sizes: blocks per stage, ``(3, 4, 6, 3)``.
      dtype: computation dtype; parameters stay float32, logits are returned in float32.

    >>> import jax, jaxprune as jp
    >>> v = jax.eval_shape(jp.models.ResNet50().init, jax.random.key(0),
    ...                    jax.numpy.zeros((1, 224, 224, 3)))
    >>> sum(a.size for a in jax.tree.leaves(v["params"]))
    25557032
    >>> v["params"]["layer4_0"]["downsample_conv"]["kernel"].shape
    (1, 1, 1024, 2048)

    References:
      He et al. 2016 ("Deep residual learning", Table 1); torchvision ``resnet50``; paper 004,
      App. C.1; paper 002, App. B.1.
    """

    num_classes: int = 1000
    norm: str | None = "batch"
    width: int = 64
    stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
    dtype: Any = None

    def __post_init__(self):
        check_norm(self.norm)
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"width: expected a positive int, got {self.width!r}")
        if not self.stage_sizes or any(int(n) < 1 for n in self.stage_sizes):
            raise ValueError(f"stage_sizes: expected positive block counts, got {self.stage_sizes}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {self.num_classes}")
        super().__post_init__()

    def lw_blocks(self) -> tuple[tuple[str, ...], ...]:
        """Paper 002's LW blocks: one per bottleneck block; the stem joins the first."""
        names = [f"layer{s + 1}_{b}" for s, n in enumerate(self.stage_sizes) for b in range(n)]
        stem = ("conv1",) if self.norm is None else ("conv1", "bn1")
        return (stem + (names[0],), *((n,) for n in names[1:]))

    def fc_layers(self) -> tuple[str, ...]:
        """The fully connected layers (the head), reinitialized by FC."""
        return ("fc",)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits of NHWC images; ``train=True`` normalizes with batch statistics."""
        init = nn.initializers.he_normal()
        h = nn.Conv(
            self.width,
            (7, 7),
            (2, 2),
            padding=[(3, 3), (3, 3)],
            use_bias=self.norm is None,
            kernel_init=init,
            dtype=self.dtype,
            name="conv1",
        )(x)
        h = nn.relu(norm_layer(self.norm, train, "bn1", self.dtype)(h))
        h = nn.max_pool(h, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
        k = 0
        for s, n in enumerate(self.stage_sizes):
            for b in range(n):
                block = _Bottleneck(
                    self.width * 2**s,
                    2 if s > 0 and b == 0 else 1,
                    self.norm,
                    self.dtype,
                    name=f"layer{s + 1}_{b}",
                )
                h = norm_slot(self, block(h, train), k := k + 1)
        h = jnp.mean(h, axis=(1, 2))
        out = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(h)
        return out if self.dtype is None else out.astype(jnp.float32)
