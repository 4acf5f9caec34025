"""The simple CNN "scnn" of paper 002 (App. B.1) with LW normalization slots after its blocks."""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxprune.models._activations import kernel_initializer, output_activation
from jaxprune.models._norm_slot import norm_slot

__all__ = ["SCNN"]


class SCNN(nn.Module):
    """Four conv blocks (conv, layer norm, ReLU, max-pool after blocks 2 and 4), dense 512, head.

    App. B.1: "Every convolutional block is a 2D convolutional layer, followed by layer
    normalization and ReLU activation"; 32-32-64-64 filters; then flatten, dense 512, layer norm,
    ReLU, dropout and the classifier head. The paper's layer norm is TensorFlow's
    ``GroupNormalization(groups=1)``, i.e. one mean and variance per example over ``(H, W, C)``:
    here ``nn.GroupNorm(num_groups=1)``. The dense layer's layer norm is ``nn.LayerNorm``. The
    four conv blocks are the LW blocks (K = 4); an LW normalization slot follows each block
    (after its pooling). The input size is free: the dense kernel is sized at ``init``, e.g.
    ``(56 * 56 * 64, 512)`` at the paper's 224x224 (App. B.1: "We resize images to 224x224").

    Parameter paths: ``conv_{i}`` (``kernel (k, k, in, features[i])``, ``bias``), ``norm_{i}``
    (``scale``, ``bias``), ``dense`` (``kernel (flat, dense)``, ``bias``), ``dense_norm``
    (``scale``, ``bias``), ``out`` (head). Slots: ``"lw_norm"`` collection, ``block_{k}`` after
    block k = 1..4.

    Attributes:
      features: filters of each conv block (paper: ``(32, 32, 64, 64)``).
      pool: per block, whether a 2x2 max-pool ends it (paper: after blocks 2 and 4).
      kernel_size: conv kernel size (3; not stated in the paper, an assumption).
      dense: width of the dense layer (paper: 512).
      dropout: dropout rate after the dense layer (paper: 0 or 0.25); needs a ``"dropout"`` rng
        when ``train=True`` and ``dropout > 0``.
      out: number of classes.
      out_activation: ``"identity"`` (logits) by default.
      kernel_init: initializer of every conv and dense kernel; default ``"he_normal"`` (sec. 3:
        "We use He-initialization (He et al. 2015) for all models unless stated otherwise", and
        the settings varied are "He normal or Xavier uniform": Keras' truncated normal with
        variance ``2 / fan_in``). ``"glorot_uniform"`` gives the Xavier-uniform setting.
        Biases start at zero, norm scales at one.

    >>> import jax, jaxprune as jp
    >>> net = jp.models.SCNN(features=(4, 4, 8, 8), dense=16, out=3)
    >>> x = jax.numpy.zeros((2, 8, 8, 1))
    >>> v = jax.eval_shape(net.init, jax.random.key(0), x)  # shapes only, nothing compiled
    >>> v["params"]["dense"]["kernel"].shape, jax.eval_shape(net.apply, v, x).shape
    ((32, 16), (2, 3))
    >>> net.lw_blocks()[1]
    ('conv_1', 'norm_1')

    References:
      Paper 002, App. B.1 ("Simple CNN (scnn)") and Algorithm 1 (blocks, lambda layers).
    """

    features: tuple[int, ...] = (32, 32, 64, 64)
    pool: tuple[bool, ...] = (False, True, False, True)
    kernel_size: int = 3
    dense: int = 512
    dropout: float = 0.0
    out: int = 10
    out_activation: str = "identity"
    kernel_init: str = "he_normal"

    def __post_init__(self):
        if not self.features or any(int(c) < 1 for c in self.features):
            raise ValueError(f"features: expected positive filter counts, got {self.features}")
        if len(self.pool) != len(self.features):
            raise ValueError(
                f"pool: expected {len(self.features)} entries (one per block), got {len(self.pool)}"
            )
        if self.kernel_size < 1 or self.dense < 1 or self.out < 1:
            raise ValueError(
                "kernel_size, dense, out: must be >= 1, got "
                f"{self.kernel_size}, {self.dense}, {self.out}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a rate in [0, 1), got {self.dropout}")
        output_activation(self.out_activation)
        kernel_initializer(self.kernel_init)  # validates the name
        super().__post_init__()

    def lw_blocks(self) -> tuple[tuple[str, ...], ...]:
        """The K conv blocks in forward order, each ``(conv_i, norm_i)``."""
        return tuple((f"conv_{i}", f"norm_{i}") for i in range(len(self.features)))

    def fc_layers(self) -> tuple[str, ...]:
        """The fully connected layers (dense, its layer norm, head), reinitialized by FC."""
        return ("dense", "dense_norm", "out")

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Forward pass on NHWC images; ``train`` enables dropout."""
        init = kernel_initializer(self.kernel_init)
        h = x
        k = (self.kernel_size, self.kernel_size)
        for i, c in enumerate(self.features):
            h = nn.Conv(c, k, padding="SAME", kernel_init=init, name=f"conv_{i}")(h)
            h = nn.relu(nn.GroupNorm(num_groups=1, name=f"norm_{i}")(h))
            if self.pool[i]:
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
            h = norm_slot(self, h, i + 1)
        h = h.reshape((*h.shape[:-3], -1))
        h = nn.Dense(self.dense, kernel_init=init, name="dense")(h)
        h = nn.relu(nn.LayerNorm(name="dense_norm")(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.Dense(self.out, kernel_init=init, name="out")(h)
        return output_activation(self.out_activation)(h)
