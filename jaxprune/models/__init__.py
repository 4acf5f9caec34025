"""Small reference Flax (linen) modules whose parameter paths are documented."""

from jaxprune.models.cnn import CNN, ConvLayer, DenseLayer
from jaxprune.models.convnet import ConvNet
from jaxprune.models.mlp import MLP

__all__ = ["CNN", "ConvLayer", "ConvNet", "DenseLayer", "MLP"]
