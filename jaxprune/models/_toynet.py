"""Paper 004's Toy-Net (App. B.4, Fig. 24): constant-width Conv-BN-ReLU layers with skips."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ToyNet"]


class ToyNet(nn.Module):
    """Conv-BN-ReLU layers of constant width, residual connections of length 1, a dense head.

    App. C.1: "a simple Conv-BN-ReLU ToyNet with constant width (32 Filters), no striding after
    the first layer, residual connections of length 1 and a final fully connected layer". Here:
    a first 3x3 conv with stride ``stride``, BatchNorm, ReLU; then ``depth - 1`` layers
    ``h + ReLU(BN(conv3x3(h)))`` (each skip spans one layer); global average pooling; the
    dense head. Not stated in the paper, so assumptions: the 3x3 kernels, the first layer's
    stride 2, the skip added after the ReLU, the average pooling before the head (set
    ``stride=1`` for no striding at all, ``residual=False`` for the plain stack).

    BatchNorm as PyTorch's (``momentum=0.9`` in Flax's convention, ``epsilon=1e-5``), like the
    paper's other networks. Parameter paths are Flax's defaults: ``Conv_{i}``,
    ``BatchNorm_{i}`` (``i = 0..depth-1``), ``Dense_0``.

    Attributes:
      depth: number of conv layers (Fig. 24 varies it).
      width: filters of every conv (32).
      stride: the first conv's stride.
      residual: the length-1 skips (False: a plain Conv-BN-ReLU stack).
      num_classes: outputs of the head.
      dtype: computation dtype; parameters stay float32, logits are returned in float32.

    >>> import jax, jaxprune as jp
    >>> net = jp.models.ToyNet(depth=4, width=8, num_classes=3)
    >>> x = jax.numpy.ones((2, 8, 8, 3))
    >>> v = net.init(jax.random.key(0), x)
    >>> net.apply(v, x).shape, v["params"]["Conv_3"]["kernel"].shape
    ((2, 3), (3, 3, 8, 8))

    References:
      Paper 004, App. B.4 (Fig. 24) and App. C.1.
    """

    depth: int = 20
    width: int = 32
    stride: int = 2
    residual: bool = True
    num_classes: int = 10
    dtype: Any = None

    def __post_init__(self):
        for field in ("depth", "width", "stride", "num_classes"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{field}: expected a positive int, got {value!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits of NHWC images; ``train=True`` normalizes with batch statistics."""
        for i in range(self.depth):
            s = self.stride if i == 0 else 1
            y = nn.Conv(
                self.width,
                (3, 3),
                (s, s),
                padding=[(1, 1), (1, 1)],
                use_bias=False,
                dtype=self.dtype,
            )(x)
            bn = nn.BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
            )
            y = nn.relu(bn(y))
            x = x + y if self.residual and i > 0 else y
        out = nn.Dense(self.num_classes, dtype=self.dtype)(jnp.mean(x, axis=(1, 2)))
        return out if self.dtype is None else out.astype(jnp.float32)
