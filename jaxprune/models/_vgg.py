"""VGG16 as torchvision defines it (configuration D), paper 002's "vgg16"."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.models._norm_slot import norm_slot
from jaxprune.models._resnet import check_norm, norm_layer

__all__ = ["VGG16", "adaptive_avg_pool"]

_CFG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _bins(n: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows: ``[floor(i n / out), ceil((i + 1) n / out))``."""
    return [((i * n) // out, -((-(i + 1) * n) // out)) for i in range(out)]


def _pool_axis(x: jax.Array, axis: int, out: int) -> jax.Array:
    n = x.shape[axis]
    if n == out:
        return x
    if out % n == 0:  # every window is one input position, repeated
        return jnp.repeat(x, out // n, axis=axis)
    if n % out == 0:  # equal windows
        shape = x.shape[:axis] + (out, n // out) + x.shape[axis + 1 :]
        return x.reshape(shape).mean(axis=axis + 1)
    parts = [
        jax.lax.slice_in_dim(x, a, b, axis=axis).mean(axis=axis, keepdims=True)
        for a, b in _bins(n, out)
    ]
    return jnp.concatenate(parts, axis=axis)


def adaptive_avg_pool(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """PyTorch's ``AdaptiveAvgPool2d(size)`` on NHWC input.

    Output cell ``i`` averages input rows ``floor(i H / h)`` to ``ceil((i + 1) H / h) - 1``
    (likewise for columns): the identity when ``H == h``, a replication when ``h`` is a
    multiple of ``H`` (a 1x1 map becomes 7x7 copies, as torchvision's VGG at 32x32 input).

    >>> import jax.numpy as jnp
    >>> x = jnp.arange(3.0).reshape(1, 3, 1, 1)
    >>> adaptive_avg_pool(x, (2, 1))[0, :, 0, 0].tolist()  # rows {0, 1} and {1, 2}
    [0.5, 1.5]
    """
    return _pool_axis(_pool_axis(x, 1, size[0]), 2, size[1])


class VGG16(nn.Module):
    """VGG16 (configuration D of Simonyan and Zisserman) as torchvision's ``vgg16``.

    Thirteen 3x3 convs (64, 64, pool, 128, 128, pool, 256 x3, pool, 512 x3, pool, 512 x3,
    pool), each followed by ReLU, then adaptive average pooling to 7x7 (the identity at 224x224
    input), flatten (``7 * 7 * 512``), dense 4096, ReLU, dropout, dense 4096, ReLU, dropout,
    dense head: 138,357,544 parameters with 1000 classes and no normalization.

    Paper 002 (App. B.1) puts a layer norm after every conv ("convolutional layers with layer
    normalization and ReLU", TensorFlow's ``GroupNormalization(groups=1)``): ``norm="layer"``
    (8,448 more parameters); ``norm="batch"`` is torchvision's ``vgg16_bn``. Its LW has K = 13
    blocks, one per conv (:meth:`lw_blocks`), with a normalization slot after each.

    Kernels start He normal (paper 002: "He-initialization for all models"), biases at zero.

    Parameter paths: ``conv_{i}`` (``i = 0..12``), ``norm_{i}`` (with a norm), ``fc1``, ``fc2``,
    ``fc3`` (head).

    Attributes:
      num_classes: outputs of the head.
      norm: ``None`` (torchvision's ``vgg16``), ``"layer"`` (paper 002) or ``"batch"``.
      width: channel multiplier of the convs (64 ... 512 times ``width``, at least 1).
      dense: width of the two hidden dense layers (4096).
      dropout: dropout rate of the classifier (torchvision: 0.5); needs a ``"dropout"`` rng
        when ``train=True``.
      pool_size: the adaptive pooling's output (7, 7).
      dtype: computation dtype; parameters stay float32, logits are returned in float32.

    >>> import jax, jaxprune as jp
    >>> v = jax.eval_shape(jp.models.VGG16().init, jax.random.key(0),
    ...                    jax.numpy.zeros((1, 224, 224, 3)))
    >>> sum(a.size for a in jax.tree.leaves(v["params"])), v["params"]["fc1"]["kernel"].shape
    (138357544, (25088, 4096))

    References:
      Simonyan and Zisserman 2015, Table 1 (D); torchvision ``vgg16``; paper 002, App. B.1.
    """

    num_classes: int = 1000
    norm: str | None = None
    width: float = 1.0
    dense: int = 4096
    dropout: float = 0.5
    pool_size: tuple[int, int] = (7, 7)
    dtype: Any = None

    def __post_init__(self):
        check_norm(self.norm)
        if not self.width > 0:
            raise ValueError(f"width: expected a positive multiplier, got {self.width}")
        if self.dense < 1 or self.num_classes < 1:
            raise ValueError(
                f"dense, num_classes: expected >= 1, got {self.dense}, {self.num_classes}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a rate in [0, 1), got {self.dropout}")
        super().__post_init__()

    def lw_blocks(self) -> tuple[tuple[str, ...], ...]:
        """Paper 002's LW blocks: each conv with its norm (K = 13)."""
        n = sum(1 for c in _CFG_D if c != "M")
        norm = () if self.norm is None else ("norm_{}",)
        return tuple(tuple(s.format(i) for s in ("conv_{}", *norm)) for i in range(n))

    def fc_layers(self) -> tuple[str, ...]:
        """The fully connected layers, reinitialized by FC."""
        return ("fc1", "fc2", "fc3")

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits of NHWC images; ``train=True`` enables dropout (and batch statistics)."""
        init = nn.initializers.he_normal()
        h, i = x, 0
        for c in _CFG_D:
            if c == "M":
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
                continue
            c = max(1, round(int(c) * self.width))
            h = nn.Conv(
                c,
                (3, 3),
                padding=[(1, 1), (1, 1)],
                kernel_init=init,
                dtype=self.dtype,
                name=f"conv_{i}",
            )(h)
            h = nn.relu(norm_layer(self.norm, train, f"norm_{i}", self.dtype)(h))
            h = norm_slot(self, h, i := i + 1)
        h = adaptive_avg_pool(h, self.pool_size)
        h = h.reshape((h.shape[0], -1))
        for j in (1, 2):
            h = nn.relu(nn.Dense(self.dense, kernel_init=init, dtype=self.dtype, name=f"fc{j}")(h))
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        out = nn.Dense(self.num_classes, kernel_init=init, dtype=self.dtype, name="fc3")(h)
        return out if self.dtype is None else out.astype(jnp.float32)
