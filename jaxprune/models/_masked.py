"""Bias-free layers and networks whose fixed weights are gated by trained scores (paper 003).

Parameter paths (documented, relied on by :mod:`jaxprune.analysis.connectivity` and
:func:`~jaxprune.transforms.train_scores`): every layer holds ``weights`` (Flax kernel layout,
``(in, out)`` or ``(kh, kw, in, out)``) and, unless ``kind is None``, ``scores`` of the same
shape. With ``kind=None`` the same network is an ordinary bias-free one (the paper's baseline)
whose ``weights`` are trained directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune._straight_through import check_kind, gate, init_scores
from jaxprune.models._initializers import get_initializer

__all__ = [
    "MaskedConv",
    "MaskedConvNet",
    "MaskedDense",
    "MaskedMLP",
    "conv2",
    "conv4",
    "conv6",
    "lenet_300_100",
]


def score_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Flax initializer for scores: uniform in ``(0, 0.1]`` (paper 003, sec. 2)."""
    return init_scores(jnp.zeros(shape, dtype), key=key)


def _check_layer(kind, p) -> None:
    if kind is not None:
        check_kind(kind)
    if not isinstance(p, int | float) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")


class _Gated(nn.Module):
    def gated_weights(self, shape) -> jax.Array:
        w = self.param("weights", get_initializer(self.weight_init, self.p), shape, jnp.float32)
        if self.kind is None:
            return w
        t = self.param("scores", score_init, shape, jnp.float32)
        return w * gate(t, self.kind)


class MaskedDense(_Gated):
    """Dense layer without bias: ``y = x @ (w * m(t))`` (Eq. 2) or ``x @ (w * f(t))``.

    Attributes:
      features: output width.
      kind: ``"mask"``, ``"flip"`` or ``None`` (plain trainable weights).
      weight_init: initializer name (``"glorot_normal"``, ``"he_normal"``,
        ``"signed_he_constant"``) or a JAX initializer.
      p: probability of a positive weight for ``"signed_he_constant"`` (sec. 2.4).

    >>> import jax, jax.numpy as jnp
    >>> layer = MaskedDense(3, kind="mask")
    >>> params = layer.init(jax.random.key(0), jnp.ones((1, 4)))["params"]
    >>> {k: v.shape for k, v in sorted(params.items())}
    {'scores': (4, 3), 'weights': (4, 3)}
    """

    features: int
    kind: str | None = "mask"
    weight_init: str | Callable = "glorot_normal"
    p: float = 0.5

    def __post_init__(self):
        _check_layer(self.kind, self.p)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.gated_weights((x.shape[-1], self.features))


class MaskedConv(_Gated):
    """SAME-padded convolution without bias, with gated weights ``(kh, kw, in, features)``.

    Attributes: as :class:`MaskedDense`, plus ``kernel_size`` (default 3, as Conv2/4/6).

    >>> import jax, jax.numpy as jnp
    >>> conv = MaskedConv(5, kind="flip")
    >>> y, params = jax.eval_shape(conv.init_with_output, jax.random.key(0), jnp.ones((1, 8, 8, 2)))
    >>> y.shape, params["params"]["scores"].shape
    ((1, 8, 8, 5), (3, 3, 2, 5))
    """

    features: int
    kind: str | None = "mask"
    weight_init: str | Callable = "glorot_normal"
    p: float = 0.5
    kernel_size: int = 3

    def __post_init__(self):
        _check_layer(self.kind, self.p)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        w = self.gated_weights((k, k, x.shape[-1], self.features))
        return jax.lax.conv_general_dilated(
            x, w.astype(x.dtype), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )


class MaskedMLP(nn.Module):
    """Bias-free ReLU MLP of masked layers ``dense_{i}`` and a linear ``out`` (logits).

    Inputs are flattened after the batch axis (so images can be fed directly).

    >>> import jax, jax.numpy as jnp
    >>> net = lenet_300_100(kind="mask")
    >>> params = jax.eval_shape(net.init, jax.random.key(0), jnp.ones((1, 28, 28, 1)))["params"]
    >>> sorted(params), params["dense_0"]["weights"].shape
    (['dense_0', 'dense_1', 'out'], (784, 300))
    """

    hidden: tuple[int, ...] = (300, 100)
    out: int = 10
    kind: str | None = "mask"
    weight_init: str | Callable = "glorot_normal"
    p: float = 0.5

    def __post_init__(self):
        _check_layer(self.kind, self.p)
        super().__post_init__()

    def layer_names(self) -> tuple[str, ...]:
        """Layers in forward order."""
        return (*(f"dense_{i}" for i in range(len(self.hidden))), "out")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x.reshape((x.shape[0], -1))
        opts: dict[str, Any] = dict(kind=self.kind, weight_init=self.weight_init, p=self.p)
        for i, width in enumerate(self.hidden):
            h = nn.relu(MaskedDense(width, name=f"dense_{i}", **opts)(h))
        return MaskedDense(self.out, name="out", **opts)(h)


class MaskedConvNet(nn.Module):
    """VGG-like bias-free network of App. A: conv blocks, 2x2 max-pool after each, dense head.

    Layers ``conv_{i}`` (3x3 SAME, ReLU) in blocks ``blocks = ((64, 64), (128, 128), ...)``, a
    2x2 max-pool after each block, then ``dense_{i}`` (ReLU) and a linear ``out``.

    >>> import jax, jax.numpy as jnp
    >>> net = conv4(kind="flip")
    >>> params = jax.eval_shape(net.init, jax.random.key(0), jnp.ones((1, 32, 32, 3)))["params"]
    >>> sorted(params)
    ['conv_0', 'conv_1', 'conv_2', 'conv_3', 'dense_0', 'dense_1', 'out']
    """

    blocks: tuple[tuple[int, ...], ...] = ((64, 64),)
    hidden: tuple[int, ...] = (256, 256)
    out: int = 10
    kind: str | None = "mask"
    weight_init: str | Callable = "glorot_normal"
    p: float = 0.5

    def __post_init__(self):
        _check_layer(self.kind, self.p)
        super().__post_init__()

    def layer_names(self) -> tuple[str, ...]:
        """Layers in forward order."""
        n_conv = sum(len(b) for b in self.blocks)
        return (
            *(f"conv_{i}" for i in range(n_conv)),
            *(f"dense_{i}" for i in range(len(self.hidden))),
            "out",
        )

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        opts: dict[str, Any] = dict(kind=self.kind, weight_init=self.weight_init, p=self.p)
        h, i = x, 0
        for block in self.blocks:
            for channels in block:
                h = nn.relu(MaskedConv(channels, name=f"conv_{i}", **opts)(h))
                i += 1
            h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape((h.shape[0], -1))
        for j, width in enumerate(self.hidden):
            h = nn.relu(MaskedDense(width, name=f"dense_{j}", **opts)(h))
        return MaskedDense(self.out, name="out", **opts)(h)


def lenet_300_100(
    kind: str | None = "mask", weight_init: str = "glorot_normal", p: float = 0.5, out: int = 10
) -> MaskedMLP:
    """LeNet-300-100 of App. A, Table A.2 (FC 300, 100, 10; no biases)."""
    return MaskedMLP((300, 100), out, kind, weight_init, p)


def conv2(
    kind: str | None = "mask", weight_init: str = "glorot_normal", p: float = 0.5, out: int = 10
) -> MaskedConvNet:
    """Conv2 of App. A, Table A.2: 2x64, pool; FC 256, 256, 10."""
    return MaskedConvNet(((64, 64),), (256, 256), out, kind, weight_init, p)


def conv4(
    kind: str | None = "mask", weight_init: str = "glorot_normal", p: float = 0.5, out: int = 10
) -> MaskedConvNet:
    """Conv4 of App. A, Table A.2: 2x64, pool, 2x128, pool; FC 256, 256, 10."""
    return MaskedConvNet(((64, 64), (128, 128)), (256, 256), out, kind, weight_init, p)


def conv6(
    kind: str | None = "mask", weight_init: str = "glorot_normal", p: float = 0.5, out: int = 10
) -> MaskedConvNet:
    """Conv6 of App. A, Table A.2: 2x64, pool, 2x128, pool, 2x256, pool; FC 256, 256, 10."""
    return MaskedConvNet(((64, 64), (128, 128), (256, 256)), (256, 256), out, kind, weight_init, p)
