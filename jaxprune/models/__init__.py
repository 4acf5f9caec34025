"""Small reference Flax (linen) modules whose parameter paths are documented."""

from jaxprune.models.block_mlp import BlockMLP
from jaxprune.models.convnet import ConvNet
from jaxprune.models.mlp import MLP
from jaxprune.models.scnn import SCNN

__all__ = ["SCNN", "BlockMLP", "ConvNet", "MLP"]
