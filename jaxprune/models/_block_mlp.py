"""MLP whose layers are LW blocks, each followed by a normalization slot (paper 002, sec. 1.1)."""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxprune.models._activations import kernel_initializer, output_activation
from jaxprune.models._norm_slot import norm_slot

__all__ = ["BlockMLP"]


class BlockMLP(nn.Module):
    """Dense ReLU layers and a head, every layer one block for layerwise reinitialization.

    The synthetic-data network of paper 002 (sec. 1.1): two hidden layers of 32 ReLU units and a
    softmax classifier head (``out_activation="identity"`` gives logits for the cross-entropy).
    "Treating every layer as a block, we have K = 3": block ``i`` is ``relu_{i}`` and the last
    block is the head ``out``. After every block sits an LW normalization slot (identity until
    LW sets it, see :func:`jaxprune.rewrites.update_normalization`).

    Parameter paths: ``relu_{i}`` (``kernel (in, hidden[i])``, ``bias``) and ``out``, as in
    :class:`~jaxprune.models.MLP`; the slots live in the ``"lw_norm"`` collection as
    ``block_{k}``, k = 1..K (``{"mean": (), "std": ()}``).

    Attributes:
      hidden: widths of the hidden ReLU layers.
      out: number of classes (width of the head).
      out_activation: ``"identity"`` (logits), ``"softmax"`` or ``"sigmoid"``.
      kernel_init: kernel initializer name; default ``"he_normal"`` (paper 002, sec. 3: "We use
        He-initialization (He et al. 2015) for all models"; the paper's other setting is "He
        normal or Xavier uniform", so He normal: Keras' truncated normal with variance
        ``2 / fan_in``). ``"glorot_uniform"`` is the alternative (Xavier uniform, Keras'
        default). Biases start at zero.

    >>> import jax, jaxprune as jp
    >>> m = jp.models.BlockMLP(hidden=(32, 32), out=8)
    >>> v = m.init(jax.random.key(0), jax.numpy.zeros((1, 128)))
    >>> sorted(v["params"]), sorted(v["lw_norm"])
    (['out', 'relu_0', 'relu_1'], ['block_1', 'block_2', 'block_3'])
    >>> m.lw_blocks()
    (('relu_0',), ('relu_1',), ('out',))

    References:
      Paper 002, sec. 1.1 (MLP 32-32, softmax head) and Algorithm 1 (blocks, lambda layer).
    """

    hidden: tuple[int, ...] = (32, 32)
    out: int = 8
    out_activation: str = "identity"
    kernel_init: str = "he_normal"

    def __post_init__(self):
        if any(int(w) < 1 for w in self.hidden):
            raise ValueError(f"hidden: widths must be >= 1, got {self.hidden}")
        if self.out < 1:
            raise ValueError(f"out: must be >= 1, got {self.out}")
        output_activation(self.out_activation)
        kernel_initializer(self.kernel_init)  # validates the name
        super().__post_init__()

    def lw_blocks(self) -> tuple[tuple[str, ...], ...]:
        """The LW blocks in forward order, each a tuple of top-level parameter names."""
        return (*((f"relu_{i}",) for i in range(len(self.hidden))), ("out",))

    def fc_layers(self) -> tuple[str, ...]:
        """The classifier head, reinitialized by the FC method.

        Every layer of an MLP is fully connected; paper 002 (sec. 1) defines FC as "only the last
        fully-connected layers", naming Zhao et al.'s head-only variant, and is silent for the
        synthetic MLP, so the head alone is our choice (``train_rounds(fc_layers=...)`` for more).
        """
        return ("out",)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Forward pass on ``(..., features)``; ``train`` is accepted for a uniform signature."""
        del train
        init = kernel_initializer(self.kernel_init)
        h = x
        for i, width in enumerate(self.hidden):
            h = nn.relu(nn.Dense(width, kernel_init=init, name=f"relu_{i}")(h))
            h = norm_slot(self, h, i + 1)
        h = nn.Dense(self.out, kernel_init=init, name="out")(h)
        h = norm_slot(self, h, len(self.hidden) + 1)
        return output_activation(self.out_activation)(h)
