"""Architectures an experiment can be pointed at (``--arch``), each with its paper's recipe.

A :class:`Recipe` is the paper's training setup (optimizer, schedule, weight decay, batch,
epochs, augmentation); :data:`ARCHS` maps an ``--arch`` name to the model builder, its
default recipe and (paper 004) its post-training recipe. ``--quick`` swaps in
:meth:`Arch.build` with ``quick=True`` (a shallow, narrow stand-in of the same family, stated in
``quick_note``) and :meth:`Recipe.quick` (a few epochs, small batches), so CI runs offline in
seconds; the full recipe is what runs without ``--quick``.

Add an architecture with :func:`register` (experiments of other papers add theirs beside).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import optax

import jaxprune as jp

__all__ = ["ARCHS", "AUGMENTATIONS", "Arch", "Recipe", "augmentation", "get_arch", "register"]

AUGMENTATIONS = ("none", "flip", "cifar", "imagenet")
"""``flip``: random horizontal flip; ``cifar``: pad 4, random crop, flip; ``imagenet``:
random-resized crop to ``Recipe.image_size`` and flip (center crop for evaluation)."""


@dataclass(frozen=True)
class Recipe:
    """One training phase as a paper specifies it.

    ``weight_decay`` is PyTorch SGD's: ``wd * w`` added to the gradient before momentum, on every
    parameter (BatchNorm's too, as ``torch.optim.SGD(model.parameters(), ...)`` does). The
    multistep schedule multiplies the learning rate by ``gamma`` at each milestone epoch
    (PyTorch ``MultiStepLR``, default ``gamma=0.1``).
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    batch: int = 256
    epochs: int = 200
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    augment: str = "none"
    image_size: int | None = None
    source: str = ""

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {self.optimizer!r}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment: expected one of {AUGMENTATIONS}, got {self.augment!r}")
        if any(m <= 0 or m >= self.epochs for m in self.milestones):
            raise ValueError(
                f"milestones: expected epochs in (0, {self.epochs}), got {self.milestones}"
            )

    def replace(self, **changes) -> Recipe:
        return dataclasses.replace(self, **changes)

    def quick(self, epochs: int = 2, batch: int = 32) -> Recipe:
        """The same recipe shrunk for CI: ``epochs`` epochs, ``batch`` examples, milestones
        scaled into the shorter run."""
        scaled = tuple(sorted({max(1, min(epochs - 1, round(m * epochs / self.epochs)))
                               for m in self.milestones})) if epochs > 1 else ()  # fmt: skip
        return self.replace(epochs=epochs, batch=min(batch, self.batch), milestones=scaled)

    def schedule(self, steps_per_epoch: int) -> optax.Schedule:
        """The learning rate per step: constant, or multistep at the milestone epochs."""
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch: expected >= 1, got {steps_per_epoch}")
        if not self.milestones:
            return optax.constant_schedule(self.lr)
        bounds = {m * steps_per_epoch: self.gamma for m in self.milestones}
        return optax.piecewise_constant_schedule(self.lr, bounds)

    def optimizer_for(self, steps_per_epoch: int) -> optax.GradientTransformation:
        """The optax transformation of this recipe for ``steps_per_epoch`` steps an epoch."""
        lr = self.schedule(steps_per_epoch)
        if self.optimizer == "adam":
            tx = optax.adam(lr)
        else:
            tx = optax.sgd(lr, momentum=self.momentum or None, nesterov=self.nesterov)
        if self.weight_decay:
            tx = optax.chain(optax.add_decayed_weights(self.weight_decay), tx)
        return tx

    def describe(self) -> str:
        parts = [f"{self.optimizer.upper()} lr {self.lr}"]
        if self.optimizer == "sgd" and self.momentum:
            parts.append(f"momentum {self.momentum}")
        if self.milestones:
            parts.append(f"x{self.gamma} at epochs {', '.join(map(str, self.milestones))}")
        if self.weight_decay:
            parts.append(f"weight decay {self.weight_decay}")
        parts += [f"batch {self.batch}", f"{self.epochs} epochs", f"augment {self.augment}"]
        return ", ".join(parts) + (f" ({self.source})" if self.source else "")


def augmentation(name: str, *, image_size: int | None = None, train: bool = True) -> Callable:
    """``fn(key, images) -> images`` of an :data:`AUGMENTATIONS` name (identity for ``none``
    and, except ImageNet's center crop, for evaluation)."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augment: expected one of {AUGMENTATIONS}, got {name!r}")
    if name == "imagenet":
        if image_size is None:
            raise ValueError("image_size: the imagenet augmentation needs the crop side")
        if train:
            return lambda key, x: jp.data.imagenet_augment(key, x, image_size)
        return lambda key, x: jp.data.center_crop(x, image_size)
    if not train or name == "none":
        return lambda key, x: x
    return jp.data.random_flip if name == "flip" else jp.data.cifar_augment


@dataclass(frozen=True)
class Arch:
    """An ``--arch``: ``build(num_classes, quick) -> model``, its recipes and the paper's name."""

    build: Callable[[int, bool], object]
    recipe: Recipe
    post: Recipe | None = None
    paper: str = ""
    quick_note: str = ""


ARCHS: dict[str, Arch] = {}
"""``--arch`` name -> :class:`Arch`."""


def register(name: str, arch: Arch) -> Arch:
    """Adds ``arch`` under ``name`` (an existing name raises, so two experiments cannot
    silently disagree on a recipe)."""
    if name in ARCHS:
        raise ValueError(f"name: --arch {name!r} is already registered")
    ARCHS[name] = arch
    return arch


def get_arch(name: str) -> Arch:
    if name not in ARCHS:
        raise ValueError(f"--arch: expected one of {sorted(ARCHS)}, got {name!r}")
    return ARCHS[name]


# Paper 004, App. C.2, Fig. 26 (CIFAR-10 / CINIC-10 / CIFAR-100 training) and Fig. 27
# (post-training); Figs. 3 and 4 shorten the post-training to 30 epochs, milestones 10/20.
PAPER004_TRAIN = Recipe(
    lr=0.1, momentum=0.9, weight_decay=1e-4, batch=256, epochs=200, milestones=(100, 150),
    augment="flip", source="paper 004, App. C.2, Fig. 26",
)  # fmt: skip
PAPER004_POST = Recipe(
    lr=0.1, momentum=0.9, weight_decay=1e-4, batch=256, epochs=30, milestones=(10, 20),
    augment="flip", source="paper 004, App. C.2, Fig. 27; 30 epochs for Figs. 3-4",
)  # fmt: skip

_QUICK_RESNET = "--quick: depth 8 (one block a stage)"


def _cifar_resnet(residual: bool):
    def build(num_classes: int, quick: bool):
        if quick:
            return jp.models.CifarResNet(
                depth=8, version=2, shortcut="A", residual=residual,
                num_classes=num_classes,
            )  # fmt: skip
        return jp.models.CifarResNet(
            depth=56, version=2, shortcut="A", residual=residual, num_classes=num_classes
        )

    return build


register(
    "resnet56",
    Arch(_cifar_resnet(True), PAPER004_TRAIN, PAPER004_POST, "ResNet56 Short", _QUICK_RESNET),
)
register(
    "resnet56_noshort",
    Arch(_cifar_resnet(False), PAPER004_TRAIN, PAPER004_POST, "ResNet56 NoShort", _QUICK_RESNET),
)
register(
    "pyramidnet110",
    Arch(
        lambda n, quick: jp.models.PyramidNet(depth=8 if quick else 110, num_classes=n),
        PAPER004_TRAIN,
        PAPER004_POST,
        "PyramidNet110 Short",
        "--quick: depth 8",
    ),
)
