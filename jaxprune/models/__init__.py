"""Small reference Flax (linen) modules whose parameter paths are documented."""

from jaxprune.models.convnet import ConvNet
from jaxprune.models.mlp import MLP
from jaxprune.models.prelu import ChannelPReLU, PReLUMLP, PReLUResMLP, prelu

__all__ = ["ChannelPReLU", "ConvNet", "MLP", "PReLUMLP", "PReLUResMLP", "prelu"]
