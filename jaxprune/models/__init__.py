"""Small reference Flax (linen) modules whose parameter paths are documented."""

from jaxprune.models.convnet import ConvNet
from jaxprune.models.mlp import MLP

__all__ = ["ConvNet", "MLP"]
