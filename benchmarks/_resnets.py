"""User-style linen ResNets for the benchmarks (nothing here is a jaxprune class).

* ``ResNet56``: the CIFAR ResNet of He et al. (3 stages x 9 basic blocks, 16/32/64 channels,
  option-A zero-padding shortcuts), post-activation, BatchNorm.
* ``ResNet50``: the ImageNet bottleneck ResNet (3/4/6/3 blocks, 1x1 projection shortcuts).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class BasicBlock(nn.Module):
    features: int
    strides: int = 1
    dtype: Any = None  # computation dtype (e.g. jnp.bfloat16); parameters stay float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = lambda: nn.BatchNorm(use_running_average=not train, dtype=self.dtype)  # noqa: E731
        conv = partial(nn.Conv, use_bias=False, dtype=self.dtype)
        s = (self.strides, self.strides)
        y = nn.relu(norm()(conv(self.features, (3, 3), s)(x)))
        y = norm()(conv(self.features, (3, 3))(y))
        if x.shape != y.shape:  # option A: subsample and pad channels with zeros
            x = x[:, :: self.strides, :: self.strides, :]
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.features - x.shape[-1])))
        return nn.relu(y + x)


class ResNet56(nn.Module):
    num_classes: int = 10
    blocks_per_stage: int = 9
    dtype: Any = None  # computation dtype (mixed precision: bf16 layers, float32 logits)

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(16, (3, 3), use_bias=False, dtype=self.dtype)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, dtype=self.dtype)(x))
        for stage, features in enumerate((16, 32, 64)):
            for b in range(self.blocks_per_stage):
                strides = 2 if stage > 0 and b == 0 else 1
                x = BasicBlock(features, strides, self.dtype)(x, train)
        logits = nn.Dense(self.num_classes, dtype=self.dtype)(jnp.mean(x, axis=(1, 2)))
        return logits if self.dtype is None else logits.astype(jnp.float32)


class Bottleneck(nn.Module):
    features: int
    strides: int = 1
    norm: bool = True  # False: no BatchNorm, biased convs (the BatchNorm-folded architecture)

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.norm:
            norm = lambda: nn.BatchNorm(use_running_average=not train)  # noqa: E731
        else:
            norm = lambda: lambda h: h  # noqa: E731
        conv = partial(nn.Conv, use_bias=not self.norm)
        s = (self.strides, self.strides)
        y = nn.relu(norm()(conv(self.features, (1, 1))(x)))
        y = nn.relu(norm()(conv(self.features, (3, 3), s)(y)))
        y = norm()(conv(self.features * 4, (1, 1))(y))
        if x.shape != y.shape:
            x = norm()(conv(self.features * 4, (1, 1), s)(x))
        return nn.relu(y + x)


class ResNet50(nn.Module):
    num_classes: int = 1000
    norm: bool = True  # False: written by hand without BatchNorm, convs with biases

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(64, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=not self.norm)(x)
        if self.norm:
            x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for stage, (features, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True)):
            for b in range(n):
                strides = 2 if stage > 0 and b == 0 else 1
                x = Bottleneck(features, strides, self.norm)(x, train)
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))
