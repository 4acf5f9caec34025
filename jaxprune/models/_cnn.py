"""A plain stack of conv and dense layers, each with its own activation (paper 001, Fig. 1)."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from jaxprune.models._activations import output_activation

__all__ = ["CNN", "ConvLayer", "DenseLayer"]

_PADDINGS = ("SAME", "VALID")


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """One 2-D convolution ``f(conv(x, kernel, stride) + b)`` followed by a max-pool.

    Attributes:
      features: output channels.
      kernel: square kernel size ``k`` (``kernel (k, k, in, features)``).
      stride: convolution stride ``s`` (both spatial axes).
      padding: ``"SAME"`` or ``"VALID"`` (``lax`` conventions; see :class:`CNN`).
      activation: ``"relu"``, ``"identity"``, ``"tanh"``, ``"sigmoid"`` or ``"softmax"``.
      pool: max-pool window = stride ``r`` applied after the activation (1 = none), as the
        paper's ``f_1`` "activation function and a max-pool of stride r".
    """

    features: int
    kernel: int = 3
    stride: int = 1
    padding: str = "SAME"
    activation: str = "relu"
    pool: int = 1

    def __post_init__(self):
        for field in ("features", "kernel", "stride", "pool"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"ConvLayer.{field}: must be >= 1, got {getattr(self, field)}")
        if self.padding not in _PADDINGS:
            raise ValueError(
                f"ConvLayer.padding: expected one of {_PADDINGS}, got {self.padding!r}"
            )
        output_activation(self.activation)


@dataclasses.dataclass(frozen=True)
class DenseLayer:
    """One dense layer ``f(x @ kernel + b)``.

    Attributes:
      features: output width.
      activation: as for :class:`ConvLayer`.
    """

    features: int
    activation: str = "relu"

    def __post_init__(self):
        if int(self.features) < 1:
            raise ValueError(f"DenseLayer.features: must be >= 1, got {self.features}")
        output_activation(self.activation)


class CNN(nn.Module):
    """Conv layers (NHWC) then dense layers; the input is flattened before the first dense layer.

    Parameter paths: ``conv_{i}`` for the i-th :class:`ConvLayer` (``kernel (k, k, in, out)``,
    ``bias (out,)``) and ``dense_{j}`` for the j-th :class:`DenseLayer` (``kernel (in, out)``,
    ``bias (out,)``), numbered separately in forward order. Dense kernels after convs act on the
    row-major flattening of ``(H, W, C)``. Convolutions use ``lax``'s SAME padding (total
    ``max((out-1)s + k - L, 0)`` zeros, the smaller half *before*), which for odd ``k`` and stride 1
    equals the paper's Definition 1.

    An MLP is a ``CNN`` with dense layers only.

    Attributes:
      layers: the layer specs in forward order; all :class:`ConvLayer` before any
        :class:`DenseLayer`.

    >>> import jax, jaxprune as jp
    >>> from jaxprune.models import CNN, ConvLayer, DenseLayer
    >>> net = CNN((ConvLayer(4), ConvLayer(8, stride=2), DenseLayer(10, "identity")))
    >>> x = jax.numpy.zeros((2, 8, 8, 1))
    >>> params = net.init(jax.random.key(0), x)["params"]
    >>> net.layer_names(), params["dense_0"]["kernel"].shape
    (('conv_0', 'conv_1', 'dense_0'), (128, 10))
    >>> a1 = net.apply({"params": params}, x, stop=1)       # output of conv_0 (input to conv_1)
    >>> net.apply({"params": params}, a1, start=1).shape    # the rest of the network
    (2, 10)
    """

    layers: tuple[ConvLayer | DenseLayer, ...] = (DenseLayer(10, "identity"),)

    def __post_init__(self):
        if not self.layers:
            raise ValueError("layers: expected at least one ConvLayer or DenseLayer")
        seen_dense = False
        for i, spec in enumerate(self.layers):
            if isinstance(spec, DenseLayer):
                seen_dense = True
            elif isinstance(spec, ConvLayer):
                if seen_dense:
                    raise ValueError(f"layers[{i}]: a ConvLayer cannot follow a DenseLayer")
            else:
                raise ValueError(
                    f"layers[{i}]: expected ConvLayer or DenseLayer, got {type(spec).__name__}"
                )
        super().__post_init__()

    def layer_names(self) -> tuple[str, ...]:
        """Parameter names of the layers in forward order (``conv_0, ..., dense_0, ...``)."""
        n_conv = sum(isinstance(s, ConvLayer) for s in self.layers)
        return (
            *(f"conv_{i}" for i in range(n_conv)),
            *(f"dense_{j}" for j in range(len(self.layers) - n_conv)),
        )

    @nn.compact
    def __call__(
        self, x: jax.Array, *, start: int = 0, stop: int | None = None, pre_activation: bool = False
    ) -> jax.Array:
        """Runs layers ``start .. stop-1`` on ``x`` (the input of layer ``start``).

        Args:
          x: ``(N, H, W, C)`` images for a conv layer, ``(N, ...)`` (flattened) for a dense one.
          start: index of the first layer to run.
          stop: one past the last layer to run (default: all).
          pre_activation: return the last run layer's pre-activation (before its activation and
            pool) instead of its output.

        Returns:
          The output (or pre-activation) of layer ``stop - 1``.
        """
        stop = len(self.layers) if stop is None else stop
        if not 0 <= start < stop <= len(self.layers):
            raise ValueError(
                f"start/stop: expected 0 <= start < stop <= {len(self.layers)}, got {start}, {stop}"
            )
        names = self.layer_names()
        h = x
        for i in range(start, stop):
            spec = self.layers[i]
            if isinstance(spec, ConvLayer):
                k = (spec.kernel, spec.kernel)
                h = nn.Conv(
                    spec.features, k, strides=spec.stride, padding=spec.padding, name=names[i]
                )(h)
            else:
                h = h.reshape(h.shape[0], -1)
                h = nn.Dense(spec.features, name=names[i])(h)
            if pre_activation and i == stop - 1:
                return h
            h = output_activation(spec.activation)(h)
            if isinstance(spec, ConvLayer) and spec.pool > 1:
                h = nn.max_pool(h, (spec.pool, spec.pool), strides=(spec.pool, spec.pool))
        return h
