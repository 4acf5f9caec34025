"""The networks of paper 001's Tables I-V and the successive fusions between their rows."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax

from jaxprune.models._activations import output_activation

__all__ = ["FusionNet", "fusion_layers", "fusion_net"]

PAPER_INIT_STD = math.sqrt(0.05)
"""Sec. II-D: "zero-mean Gaussian random variables with variance 0.05" (std ~ 0.2236)."""


class FusionNet(nn.Module):
    """Conv layers (1-D or 2-D), then dense layers, then the output layer; ReLU between.

    Each conv is ``ReLU(conv(h) + b)`` with SAME padding (paper 001's Definition 1 for odd
    kernels), optionally followed by a max-pool of window and stride 2; the last conv's output
    is flattened for the dense layers; each dense layer is ``ReLU(h W + b)``; the output layer
    is ``out_activation(h W + b)`` (logits by default). Kernels start ``N(0, init_std^2)``
    (the paper's variance 0.05), biases at zero.

    Parameter paths: ``conv_{i}``, ``dense_{j}``, ``out``.

    Attributes:
      conv: filters of each conv layer.
      dense: widths of the hidden dense layers.
      out: outputs of the output layer (classes, or 2 for a position).
      spatial_dims: 1 for sequences ``(N, L, C)`` (HAR, speech), 2 for images ``(N, H, W, C)``.
      kernel_size: per conv layer (an int for all).
      pool: per conv layer, whether a 2-wide max-pool follows it (a bool for all).
      out_activation: ``"identity"`` (logits; regression) or another name of
        :func:`jaxprune.models.CNN`'s activations.
      init_std: standard deviation of the kernels' normal initializer.

    >>> import jax, jaxprune as jp
    >>> net = jp.models.fusion_net("III")      # HAR: 1-D convs 18-36 on (128, 9) windows
    >>> x = jax.numpy.zeros((2, 128, 9))
    >>> v = net.init(jax.random.key(0), x)
    >>> v["params"]["conv_1"]["kernel"].shape, net.apply(v, x).shape
    ((3, 18, 36), (2, 6))
    """

    conv: tuple[int, ...] = ()
    dense: tuple[int, ...] = ()
    out: int = 10
    spatial_dims: int = 2
    kernel_size: int | tuple[int, ...] = 3
    pool: bool | tuple[bool, ...] = False
    out_activation: str = "identity"
    init_std: float = PAPER_INIT_STD

    def __post_init__(self):
        if any(int(c) < 1 for c in (*self.conv, *self.dense)) or self.out < 1:
            raise ValueError(
                f"conv, dense, out: expected positive widths, got {self.conv}, {self.dense}, "
                f"{self.out}"
            )
        if self.spatial_dims not in (1, 2):
            raise ValueError(f"spatial_dims: expected 1 or 2, got {self.spatial_dims!r}")
        for field in ("kernel_size", "pool"):
            value = getattr(self, field)
            if isinstance(value, tuple) and len(value) != len(self.conv):
                raise ValueError(
                    f"{field}: expected one entry per conv layer ({len(self.conv)}), got {value}"
                )
        if any(int(k) < 1 for k in self._per_conv(self.kernel_size)):
            raise ValueError(f"kernel_size: expected sizes >= 1, got {self.kernel_size}")
        if not self.init_std > 0:
            raise ValueError(f"init_std: expected > 0, got {self.init_std}")
        output_activation(self.out_activation)
        super().__post_init__()

    def _per_conv(self, value) -> tuple:
        return value if isinstance(value, tuple) else (value,) * len(self.conv)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Outputs of ``(N, L, C)`` sequences or ``(N, H, W, C)`` images (``train`` unused)."""
        del train
        init = nn.initializers.normal(self.init_std)
        nd = self.spatial_dims
        h = x
        for i, (c, k, p) in enumerate(
            zip(self.conv, self._per_conv(self.kernel_size), self._per_conv(self.pool), strict=True)
        ):
            h = nn.relu(
                nn.Conv(c, (k,) * nd, padding="SAME", kernel_init=init, name=f"conv_{i}")(h)
            )
            if p:
                h = nn.max_pool(h, (2,) * nd, strides=(2,) * nd)
        if self.conv:
            h = h.reshape((h.shape[0], -1))
        for j, d in enumerate(self.dense):
            h = nn.relu(nn.Dense(d, kernel_init=init, name=f"dense_{j}")(h))
        h = nn.Dense(self.out, kernel_init=init, name="out")(h)
        return output_activation(self.out_activation)(h)


# Each table: its deepest network's fields, and how a row becomes the next one (the pair fused).
_TABLES: dict[str, dict[str, Any]] = {
    # Table I, CIFAR-10 (32x32x3): conv 32-32-64-64-128-128 with 2x2 pooling after every
    # second conv, dense head of 10. Each fusion merges the last conv into the head (Theorem 1,
    # conv-dense): 6 -> 5 -> 4 layers.
    "I": dict(
        net=dict(conv=(32, 32, 64, 64, 128, 128), pool=(False, True) * 3, out=10),
        rows=(6, 5, 4),
        kind="conv_dense",
    ),
    # Table II, Fashion-MNIST (28x28x1): conv 2-4-8-16, each followed by 2x2 pooling, head of
    # 10; the last conv fused into the head: 4 -> 3 -> 2 -> 1.
    "II": dict(
        net=dict(conv=(2, 4, 8, 16), pool=True, out=10), rows=(4, 3, 2, 1), kind="conv_dense"
    ),
    # Table III, HAR (128 time steps x 9 sensor channels, 6 activities): 1-D convs 18-36, a
    # 2-wide pool after the second, head of 6; the two convs fused into one 36-filter conv
    # (Theorem 2, conv-conv) with the pair's receptive field 5: 2 -> 1.
    "III": dict(
        net=dict(conv=(18, 36), pool=(False, True), out=6, spatial_dims=1),
        rows=(2, 1),
        kind="conv_conv",
    ),
    # Table IV, speech commands (1-D: 98 frames x 40 features, 12 classes): convs 32-32-64-64,
    # 2-wide pools after the second and fourth; the first two fused (conv-conv): 4 -> 3.
    "IV": dict(
        net=dict(conv=(32, 32, 64, 64), pool=(False, True, False, True), out=12, spatial_dims=1),
        rows=(4, 3),
        kind="conv_conv",
    ),
    # Table V, wireless positioning (regression of the 2-D position): dense 16-128, output 2;
    # the last hidden layer fused into the output (dense-dense): 3 -> 2 -> 1 layers.
    "V": dict(net=dict(dense=(16, 128), out=2), rows=(3, 2, 1), kind="dense_dense"),
}


def _check(table: str, layers: int | None):
    if table not in _TABLES:
        raise ValueError(f"table: expected one of {sorted(_TABLES)}, got {table!r}")
    rows = _TABLES[table]["rows"]
    if layers is None:
        layers = rows[0]
    if layers not in rows:
        raise ValueError(f"layers: Table {table} has rows with {rows} layers, got {layers!r}")
    return _TABLES[table], layers


def fusion_net(table: str, layers: int | None = None) -> FusionNet:
    """The network of one row of paper 001's Tables I-V (default: the deepest row).

    "Layers" counts what the tables list: conv layers for Tables I-IV (the dense head is not
    counted), dense layers including the output for Table V. The rows follow from the deepest
    one by the fusions of :func:`fusion_layers`; a fused row's shapes are those
    :func:`jaxprune.fuse` produces (Table III/IV: the fused conv gets the pair's receptive
    field, ``2k - 1 = 5``).

    The paper gives the widths; the rest is not stated there and these are assumptions:
    3x3 (2-D) and 3 (1-D) kernels, where the 2-wide max-pools sit (see the module's table),
    the inputs (CIFAR-10 32x32x3, Fashion-MNIST 28x28x1, HAR 128x9, speech commands 98 frames
    x 40 features with 12 classes, positioning features of any width).

    Args:
      table: ``"I"``, ``"II"``, ``"III"``, ``"IV"`` or ``"V"``.
      layers: the row (``6, 5, 4`` / ``4, 3, 2, 1`` / ``2, 1`` / ``4, 3`` / ``3, 2, 1``).

    Returns:
      A :class:`FusionNet`.

    Raises:
      ValueError: an unknown table or a row the table does not have.

    >>> import jaxprune as jp
    >>> jp.models.fusion_net("I", 5).conv, jp.models.fusion_net("V").dense
    ((32, 32, 64, 64, 128), (16, 128))

    References:
      Paper 001, Tables I-V and sec. III.
    """
    spec, layers = _check(table, layers)
    net = dict(spec["net"])
    drop = spec["rows"][0] - layers
    if spec["kind"] == "conv_dense":
        n = len(net["conv"]) - drop
        net["conv"] = net["conv"][:n]
        if isinstance(net["pool"], tuple):
            net["pool"] = net["pool"][:n]
    elif spec["kind"] == "conv_conv":
        if drop:  # conv_0 and conv_1 became one conv of conv_1's width, kernel 5
            net["conv"] = net["conv"][1:]
            net["pool"] = net["pool"][1:]
            net["kernel_size"] = (5,) + (3,) * (len(net["conv"]) - 1)
    else:
        net["dense"] = net["dense"][: len(net["dense"]) - drop]
    return FusionNet(**net)


def fusion_layers(table: str, layers: int | None = None) -> tuple[str, str]:
    """The pair :func:`jaxprune.fuse` merges to go from row ``layers`` to the next row.

    >>> fusion_layers("I", 6), fusion_layers("III"), fusion_layers("V", 2)
    (('conv_5', 'out'), ('conv_0', 'conv_1'), ('dense_0', 'out'))

    Raises:
      ValueError: an unknown table, or the table's shallowest row (nothing left to fuse).
    """
    spec, layers = _check(table, layers)
    if layers == spec["rows"][-1]:
        raise ValueError(f"layers: {layers} is Table {table}'s last row; nothing is fused from it")
    net = fusion_net(table, layers)
    if spec["kind"] == "conv_dense":
        return (f"conv_{len(net.conv) - 1}", "out")
    if spec["kind"] == "conv_conv":
        return ("conv_0", "conv_1")
    return (f"dense_{len(net.dense) - 1}", "out")
