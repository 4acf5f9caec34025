"""Small reference Flax (linen) modules whose parameter paths are documented."""

from jaxprune._straight_through import effective_params, gate, init_scores, is_score
from jaxprune.models._block_mlp import BlockMLP
from jaxprune.models._cnn import CNN, ConvLayer, DenseLayer
from jaxprune.models._convnet import ConvNet
from jaxprune.models._fusion_nets import FusionNet, fusion_layers, fusion_net
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
from jaxprune.models._mobilenet import MobileNet
from jaxprune.models._norm_slot import NORM_COLLECTION, OUTPUT_COLLECTION, norm_slot, slot_name
from jaxprune.models._prelu import ChannelPReLU, PReLUMLP, PReLUResMLP, prelu
from jaxprune.models._pyramidnet import PyramidNet
from jaxprune.models._resnet import CifarResNet, ResNet50
from jaxprune.models._scnn import SCNN
from jaxprune.models._scored import Scored
from jaxprune.models._toynet import ToyNet
from jaxprune.models._transformer import Transformer, sinusoidal_positions
from jaxprune.models._vgg import VGG16

__all__ = [
    "BlockMLP",
    "CNN",
    "ChannelPReLU",
    "CifarResNet",
    "ConvLayer",
    "ConvNet",
    "DenseLayer",
    "FusionNet",
    "INITIALIZERS",
    "MLP",
    "MaskedConv",
    "MaskedConvNet",
    "MaskedDense",
    "MaskedMLP",
    "MobileNet",
    "NORM_COLLECTION",
    "OUTPUT_COLLECTION",
    "PReLUMLP",
    "PReLUResMLP",
    "PyramidNet",
    "ResNet50",
    "SCNN",
    "Scored",
    "ToyNet",
    "Transformer",
    "VGG16",
    "conv2",
    "conv4",
    "conv6",
    "effective_params",
    "fusion_layers",
    "fusion_net",
    "gate",
    "get_initializer",
    "init_scores",
    "is_score",
    "lenet_300_100",
    "norm_slot",
    "prelu",
    "signed_he_constant",
    "sinusoidal_positions",
    "slot_name",
]
