"""Small reference Flax (linen) modules whose parameter paths are documented."""

from jaxprune.models._block_mlp import BlockMLP
from jaxprune.models._cnn import CNN, ConvLayer, DenseLayer
from jaxprune.models._convnet import ConvNet
from jaxprune.models._initializers import INITIALIZERS, get_initializer, signed_he_constant
from jaxprune.models._masked import (
    MaskedConv,
    MaskedConvNet,
    MaskedDense,
    MaskedMLP,
    conv2,
    conv4,
    conv6,
    lenet_300_100,
)
from jaxprune.models._mlp import MLP
from jaxprune.models._prelu import ChannelPReLU, PReLUMLP, PReLUResMLP, prelu
from jaxprune.models._scnn import SCNN
from jaxprune.models._scored import Scored

__all__ = [
    "BlockMLP",
    "CNN",
    "ChannelPReLU",
    "ConvLayer",
    "ConvNet",
    "DenseLayer",
    "INITIALIZERS",
    "MLP",
    "MaskedConv",
    "MaskedConvNet",
    "MaskedDense",
    "MaskedMLP",
    "PReLUMLP",
    "PReLUResMLP",
    "SCNN",
    "Scored",
    "conv2",
    "conv4",
    "conv6",
    "get_initializer",
    "lenet_300_100",
    "prelu",
    "signed_he_constant",
]
