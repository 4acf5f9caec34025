"""PyramidNet (Han et al. 2017, additive widening) with paper 004's Short/NoShort variants."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.models._resnet import norm_layer, pad_channels

__all__ = ["PyramidNet"]


@dataclasses.dataclass(frozen=True)
class _Layout:
    stage_sizes: tuple[int, ...]
    bottleneck: bool
    stem: str  # "cifar" or "tiny_imagenet"
    start: int  # the width the additive widening starts from
    alpha: float


def _avg_pool2(x: jax.Array) -> jax.Array:
    """PyTorch's ``AvgPool2d(2, 2, ceil_mode=True)``: odd sizes get a last, partial window."""
    pad = [(0, x.shape[1] % 2), (0, x.shape[2] % 2)]
    return nn.avg_pool(x, (2, 2), strides=(2, 2), padding=pad, count_include_pad=False)


class _PyramidBlock(nn.Module):
    """``BN-conv3x3-BN-ReLU-conv3x3-BN`` (basic) or ``BN-1x1-BN-ReLU-3x3-BN-ReLU-1x1-BN``."""

    planes: int
    strides: int
    bottleneck: bool
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
            kernel_init=nn.initializers.he_normal(),
            dtype=self.dtype,
            name=name,
        )
        bn = lambda name: norm_layer("batch", train, name, self.dtype)  # noqa: E731
        s, p = self.strides, self.planes
        y = bn("bn1")(x)  # no ReLU first: PyramidNet removes the pre-activation's first ReLU
        if self.bottleneck:
            y = nn.relu(bn("bn2")(conv(p, 1, 1, "conv1")(y)))
            y = nn.relu(bn("bn3")(conv(p, 3, s, "conv2")(y)))
            y = bn("bn4")(conv(4 * p, 1, 1, "conv3")(y))
        else:
            y = nn.relu(bn("bn2")(conv(p, 3, s, "conv1")(y)))
            y = bn("bn3")(conv(p, 3, 1, "conv2")(y))
        if not self.residual:
            return y
        if s != 1:
            x = _avg_pool2(x)
        return y + pad_channels(x, y.shape[-1], where="end")


class PyramidNet(nn.Module):
    """PyramidNet with additive widening and zero-padded shortcuts (Han et al. 2017).

    Every block widens the network by ``alpha / N`` channels (``N`` blocks in all, widths
    rounded as ``int(round(.))``, Python's rounding, as the authors' code), so the last block
    is ``start + alpha`` wide. Blocks are pre-activation without the first ReLU and with a
    BatchNorm at the end (Han et al., Fig. 6(d)); a downsampling block's shortcut is a 2x2
    average pool, and every shortcut zero-pads the new channels after the old ones (option A,
    no parameters). ``residual=False`` is paper 004's NoShort (no shortcuts). Then
    ``BN-ReLU``, global average pooling and the dense head.

    Layouts, chosen by ``depth``:

    * ``depth = 6n + 2`` (``bottleneck=False``): CIFAR, three stages of ``n`` basic blocks,
      strides 1, 2, 2, a 3x3 stem conv with 16 filters and BatchNorm, widths from 16 to
      ``16 + alpha`` (``alpha`` default 48). PyramidNet-110 with ``alpha=48`` has 1,772,706
      parameters with 10 classes (Han et al., Table 4: "1.7M"; the same count as osmr's
      imgclsmob ``pyramidnet110_a48_cifar10``, ported from the authors' code).
    * ``depth = 9n + 2`` with ``bottleneck=True``: the same with bottleneck blocks (4x
      expansion), e.g. PyramidNet-164.
    * ``depth = 41``: paper 004's PyramidNet-41 for Tiny ImageNet, as in its authors' group's
      public code (the paper's text lists it but its numbers are unreadable): bottleneck
      blocks in stages of 3, 4, 6, a 5x5 stem conv with 64 filters, BatchNorm, ReLU and a 3x3/2
      max-pool, stage strides 1, 2, 2, widths from 32 to ``32 + alpha`` (``alpha`` default 96,
      i.e. 128 planes and 512 channels at the end); ``1 + 13 * 3 + 1 = 41`` weight layers;
      1,811,742 parameters with Tiny ImageNet's 200 classes.

    Parameter paths: ``conv1``, ``bn1`` (stem), ``layer{s}_{b}`` with ``bn1``, ``conv1``,
    ``bn2``, ``conv2``, ``bn3`` (and ``conv3``, ``bn4`` for bottlenecks), ``bn_final``, ``fc``.
    Kernels start as the authors' code (``N(0, 2 / (k * k * out))``: He normal on the fan-out;
    here Flax's He normal on the fan-in).

    Attributes:
      depth: 110, 41, or any ``6n + 2`` (``9n + 2`` with ``bottleneck=True``).
      alpha: total widening (None: 48, or 96 at depth 41).
      num_classes: outputs of the head (CIFAR-10: 10; Tiny ImageNet: 200).
      residual: False for NoShort.
      bottleneck: bottleneck blocks for a ``9n + 2`` depth.
      dtype: computation dtype; parameters stay float32, logits are returned in float32.

    >>> import jax, jaxprune as jp
    >>> net = jp.models.PyramidNet(depth=110, alpha=48)
    >>> v = jax.eval_shape(net.init, jax.random.key(0), jax.numpy.zeros((1, 32, 32, 3)))
    >>> sum(a.size for a in jax.tree.leaves(v["params"])), net.widths[:3], net.widths[-1]
    (1772706, (17, 18, 19), 64)

    References:
      Han, Kim and Kim 2017, "Deep pyramidal residual networks" (Eq. 2, Fig. 6(d), Table 4);
      paper 004, sec. 4 and App. C.1.
    """

    depth: int = 110
    alpha: float | None = None
    num_classes: int = 10
    residual: bool = True
    bottleneck: bool = False
    dtype: Any = None

    def __post_init__(self):
        self.layout  # validates depth and bottleneck  # noqa: B018
        if self.alpha is not None and not self.alpha >= 0:
            raise ValueError(f"alpha: expected a widening >= 0, got {self.alpha}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {self.num_classes}")
        super().__post_init__()

    @property
    def layout(self) -> _Layout:
        """Stages, block kind, stem and widening implied by ``depth``."""
        d = self.depth
        if not isinstance(d, int):
            raise ValueError(f"depth: expected an int, got {d!r}")
        if d == 41:
            alpha = 96 if self.alpha is None else self.alpha
            return _Layout((3, 4, 6), True, "tiny_imagenet", 32, alpha)
        per = 9 if self.bottleneck else 6
        if d < per + 2 or (d - 2) % per:
            kind = "bottleneck" if self.bottleneck else "basic"
            raise ValueError(
                f"depth: expected {per}n + 2 (n >= 1) for {kind} blocks, or 41, got {d}"
            )
        n = (d - 2) // per
        return _Layout(
            (n, n, n), self.bottleneck, "cifar", 16, 48 if self.alpha is None else self.alpha
        )

    @property
    def widths(self) -> tuple[int, ...]:
        """Planes of every block in forward order."""
        lay = self.layout
        total = sum(lay.stage_sizes)
        f, out = float(lay.start), []
        for _ in range(total):
            f += lay.alpha / total
            out.append(int(round(f)))
        return tuple(out)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits of NHWC images; ``train=True`` normalizes with batch statistics."""
        lay = self.layout
        init = nn.initializers.he_normal()
        if lay.stem == "cifar":
            h = nn.Conv(
                16,
                (3, 3),
                padding=[(1, 1)] * 2,
                use_bias=False,
                kernel_init=init,
                dtype=self.dtype,
                name="conv1",
            )(x)
            h = norm_layer("batch", train, "bn1", self.dtype)(h)
        else:
            h = nn.Conv(
                64,
                (5, 5),
                padding=[(2, 2)] * 2,
                use_bias=False,
                kernel_init=init,
                dtype=self.dtype,
                name="conv1",
            )(x)
            h = nn.relu(norm_layer("batch", train, "bn1", self.dtype)(h))
            h = nn.max_pool(h, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
        widths = iter(self.widths)
        for s, n in enumerate(lay.stage_sizes):
            for b in range(n):
                h = _PyramidBlock(
                    next(widths),
                    2 if s > 0 and b == 0 else 1,
                    lay.bottleneck,
                    self.residual,
                    self.dtype,
                    name=f"layer{s + 1}_{b}",
                )(h, train)
        h = nn.relu(norm_layer("batch", train, "bn_final", self.dtype)(h))
        h = jnp.mean(h, axis=(1, 2))
        out = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(h)
        return out if self.dtype is None else out.astype(jnp.float32)
