"""MobileNet v1 (Howard et al. 2017) as Keras' ``MobileNet``, paper 002's "mobilenet"."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.models._norm_slot import norm_slot
from jaxprune.models._resnet import check_norm, norm_layer

__all__ = ["MobileNet"]

# (pointwise filters, stride of the depthwise conv) of the 13 depthwise separable blocks
_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
_SHALLOW_DROPPED = frozenset(range(6, 11))  # the five 14x14x512 -> 512 blocks (Table 1: "5x")


class MobileNet(nn.Module):
    """MobileNet v1: 4,231,976 trainable parameters with 1000 classes at ``alpha=1``.

    A 3x3/2 conv with 32 filters, then 13 depthwise separable blocks (3x3 depthwise conv, norm,
    ReLU, 1x1 pointwise conv, norm, ReLU; Howard et al., Table 1 and Fig. 3), global average
    pooling, dropout and the classifier. Written as Keras' ``MobileNet``: convs without bias,
    strided convs padded by one row and column at the bottom and right (Keras'
    ``ZeroPadding2D(((0, 1), (0, 1)))`` then a VALID conv), BatchNorm with ``momentum=0.99``,
    ``epsilon=1e-3``, the head a dense layer on the pooled features (Keras' 1x1 ``conv_preds``
    with bias: the same parameters). The BatchNorm scales and biases are the trainable
    parameters Keras counts; the 21,888 moving statistics are ``batch_stats``.

    Paper 002 (App. B.1) uses the shallow MobileNet (Howard et al., sec. 4.2: the five
    14x14x512 separable blocks removed; ``shallow=True``) with layer norm (``norm="layer"``,
    the same parameter count as BatchNorm). The paper says its LW has K = 7 blocks there and does
    not say how its 9 standard blocks (the stem conv and 8 separable ones) form 7, so
    :meth:`lw_blocks` lists the standard blocks themselves; pass ``blocks=`` to LW for another
    grouping.

    Activation: ReLU as in the paper (Keras uses ReLU6: ``activation="relu6"``).

    Parameter paths (Keras' layer names): ``conv1``, ``conv1_bn``, ``conv_dw_{i}``,
    ``conv_dw_{i}_bn``, ``conv_pw_{i}``, ``conv_pw_{i}_bn`` (``i = 1..13``), ``conv_preds``.

    Attributes:
      num_classes: outputs of the head.
      alpha: width multiplier (Keras' ``alpha``; channels ``int(c * alpha)``).
      norm: ``"batch"`` (Keras), ``"layer"`` (paper 002) or ``None``.
      shallow: drop the five 14x14x512 blocks (paper 002's "shallow MobileNet").
      dropout: dropout rate before the head (Keras: 1e-3); needs a ``"dropout"`` rng when
        ``train=True``.
      activation: ``"relu"`` or ``"relu6"``.
      dtype: computation dtype; parameters stay float32, logits are returned in float32.

    >>> import jax, jaxprune as jp
    >>> v = jax.eval_shape(jp.models.MobileNet().init, jax.random.key(0),
    ...                    jax.numpy.zeros((1, 224, 224, 3)))
    >>> sum(a.size for a in jax.tree.leaves(v["params"]))
    4231976
    >>> v["params"]["conv_dw_2"]["kernel"].shape  # depthwise: one 3x3 filter per channel
    (3, 3, 1, 64)

    References:
      Howard et al. 2017, Table 1, Fig. 3 and sec. 4.2; Keras ``applications.MobileNet``;
      paper 002, App. B.1.
    """

    num_classes: int = 1000
    alpha: float = 1.0
    norm: str | None = "batch"
    shallow: bool = False
    dropout: float = 1e-3
    activation: str = "relu"
    dtype: Any = None

    def __post_init__(self):
        check_norm(self.norm)
        if not self.alpha > 0 or int(32 * self.alpha) < 1:
            raise ValueError(
                f"alpha: expected a multiplier with int(32 * alpha) >= 1, got {self.alpha}"
            )
        if self.activation not in ("relu", "relu6"):
            raise ValueError(f"activation: expected 'relu' or 'relu6', got {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a rate in [0, 1), got {self.dropout}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {self.num_classes}")
        super().__post_init__()

    def _blocks(self) -> list[int]:
        return [i for i in range(len(_BLOCKS)) if not (self.shallow and i in _SHALLOW_DROPPED)]

    def lw_blocks(self) -> tuple[tuple[str, ...], ...]:
        """The standard blocks in forward order: the stem conv, then each separable block."""
        norm = self.norm is not None
        out: list[tuple[str, ...]] = [("conv1", "conv1_bn") if norm else ("conv1",)]
        for i in self._blocks():
            names = (f"conv_dw_{i + 1}", f"conv_pw_{i + 1}")
            out.append(names + (tuple(n + "_bn" for n in names) if norm else ()))
        return tuple(out)

    def fc_layers(self) -> tuple[str, ...]:
        """The classifier head, reinitialized by FC."""
        return ("conv_preds",)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits of NHWC images; ``train=True`` enables dropout and batch statistics."""
        act = jax.nn.relu6 if self.activation == "relu6" else nn.relu
        init = nn.initializers.he_normal()

        def conv(h, c, k, s, name, groups=1):
            pad = [(k // 2, k // 2)] * 2 if s == 1 else [(0, 1), (0, 1)]
            h = nn.Conv(
                c,
                (k, k),
                (s, s),
                padding=pad,
                feature_group_count=groups,
                use_bias=False,
                kernel_init=init,
                dtype=self.dtype,
                name=name,
            )(h)
            bn = norm_layer(self.norm, train, f"{name}_bn", self.dtype, 0.99, 1e-3)
            return act(bn(h))

        h = conv(x, int(32 * self.alpha), 3, 2, "conv1")
        h = norm_slot(self, h, k := 1)
        for i in self._blocks():
            c, s = _BLOCKS[i]
            h = conv(h, h.shape[-1], 3, s, f"conv_dw_{i + 1}", groups=h.shape[-1])
            h = conv(h, int(c * self.alpha), 1, 1, f"conv_pw_{i + 1}")
            h = norm_slot(self, h, k := k + 1)
        h = jnp.mean(h, axis=(1, 2))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        out = nn.Dense(self.num_classes, dtype=self.dtype, name="conv_preds")(h)
        return out if self.dtype is None else out.astype(jnp.float32)
