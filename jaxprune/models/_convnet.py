"""Small conv stack with collapsible 1x1 linear convolutions (paper 000, sec. 5)."""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxprune.models._activations import kernel_initializer, output_activation

__all__ = ["ConvNet"]


class ConvNet(nn.Module):
    """Conv-ReLU blocks, each optionally followed by 1x1 *linear* convolutions, then a dense head.

    Paper 000 (sec. 5) notes that a linear layer cannot sit between convolutions, but a stack of
    ``1x1xn`` convolutions with identity activation can, and collapses like a linear dense layer.

    Parameter paths:

    * ``conv_{i}``: ``kernel_size x kernel_size`` SAME convolution + ReLU (+ 2x2 max-pool when
      ``pool[i]``), ``kernel (k, k, in, features[i])``, ``bias (features[i],)``.
    * ``linear_{i}_{j}``: 1x1 linear convolutions after block i, ``kernel (1, 1, in, out)``,
      **no bias**: under SAME zero padding a bias would not fold exactly into a following ``k x k``
      convolution (the padded border would see 0 instead of the bias), so these layers have none.
    * ``out``: dense head on the flattened ``(H, W, C)`` features.

    Attributes:
      features: channels of each conv-ReLU block.
      kernel_size: spatial size of the block convolutions.
      linear_after: per block, the channel widths of the 1x1 linear convs after it (``()`` = none).
      pool: per block, whether a 2x2 max-pool follows the ReLU (before the linear convs).
      out: width of the dense head.
      out_activation: as in :class:`~jaxprune.models.MLP`.
      kernel_init: kernel initializer name (default ``"glorot_uniform"``, as Keras).

    >>> import jax, jaxprune as jp
    >>> net = jp.models.ConvNet(features=(4, 8), linear_after=((6, 6), ()), out=3)
    >>> params = net.init(jax.random.key(0), jax.numpy.zeros((1, 8, 8, 1)))["params"]
    >>> sorted(params)
    ['conv_0', 'conv_1', 'linear_0_0', 'linear_0_1', 'out']
    """

    features: tuple[int, ...] = (8, 16)
    kernel_size: int = 3
    linear_after: tuple[tuple[int, ...], ...] = ()
    pool: tuple[bool, ...] = ()
    out: int = 10
    out_activation: str = "identity"
    kernel_init: str = "glorot_uniform"

    def __post_init__(self):
        if not self.features or any(int(c) < 1 for c in self.features):
            raise ValueError(f"features: expected positive channel counts, got {self.features}")
        for field in ("linear_after", "pool"):
            value = getattr(self, field)
            if value and len(value) != len(self.features):
                raise ValueError(
                    f"{field}: expected {len(self.features)} entries (one per block) or (), "
                    f"got {len(value)}"
                )
        if self.kernel_size < 1:
            raise ValueError(f"kernel_size: must be >= 1, got {self.kernel_size}")
        output_activation(self.out_activation)
        kernel_initializer(self.kernel_init)
        super().__post_init__()

    def _linear_widths(self, i: int) -> tuple[int, ...]:
        """Channel widths of the 1x1 linear convs after block ``i``."""
        return tuple(self.linear_after[i]) if self.linear_after else ()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Forward pass on NHWC images."""
        init = kernel_initializer(self.kernel_init)
        h = x
        k = (self.kernel_size, self.kernel_size)
        for i, c in enumerate(self.features):
            name = f"conv_{i}"
            h = nn.relu(nn.Conv(c, k, padding="SAME", kernel_init=init, name=name)(h))
            if self.pool and self.pool[i]:
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
            for j, lw in enumerate(self._linear_widths(i)):
                h = nn.Conv(lw, (1, 1), use_bias=False, kernel_init=init, name=f"linear_{i}_{j}")(h)
        h = h.reshape((*h.shape[:-3], -1))
        return output_activation(self.out_activation)(
            nn.Dense(self.out, kernel_init=init, name="out")(h)
        )
