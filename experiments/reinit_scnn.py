"""Paper 002, Table 6 and sec. 3-4: scnn, VGG16, MobileNet, ResNet-50 and the reinit methods.

Command::

    python -m experiments reinit_scnn                      # digits, scnn, 6 methods x 3 seeds
    python -m experiments reinit_scnn --quick              # CI: small scnn, 2 seeds, 4 x 20 steps
    python -m experiments reinit_scnn --quick --arch vgg16 # CI: a narrow VGG16 stand-in

Table 6's rows at the paper's scale (CIFAR-10 resized to 224x224 on the device, TFDS)::

    python -m experiments reinit_scnn --dataset cifar10 --arch scnn
    python -m experiments reinit_scnn --dataset cifar10 --arch vgg16 --seeds 1
    python -m experiments reinit_scnn --dataset cifar10 --arch mobilenet
    python -m experiments reinit_scnn --dataset cifar10 --arch resnet50

Architectures (``--arch``, App. B.1, each with a layer norm where the paper puts one and He
normal kernels, sec. 3): ``scnn`` (four conv blocks 32-32-64-64, dense 512; K = 4),
``vgg16`` (``jp.models.VGG16(norm="layer", dropout=0)``; K = 13), ``mobilenet`` (the shallow
MobileNet v1, ``norm="layer"``, no dropout; its 9 standard blocks, the paper's K = 7 grouping
is not given), ``resnet50`` (``norm="layer"``; K = 16). LW uses each model's standard blocks
(``lw_blocks``), N = 1, so every method runs K rounds and BL one run of K x the round budget.

Recipe (sec. 3 and App. B, the same for every architecture; Table 6: no augmentation, no
dropout): SGD, learning rate 0.003, momentum 0.9, batch 256, L2 penalty 1e-5 on the kernels;
10% of the training split held out for early stopping (one evaluation per epoch); the learning
rate halved when the validation loss has not improved for 20 epochs (``--lr-patience``; each
round starts again at 0.003); at most 100,000 steps per round (``--steps``). The paper gives no
early-stopping patience: ours is 40 epochs (``--patience``), so a round stops once a halving has
not helped for 20 more epochs. Images are resized to 224x224 (``--image-size``) inside the
jitted step, so the dataset stays on the device at its native size (CIFAR-10: 150 MB as
uint8). WELSR, DSD and WELS redraw 20% of each tensor per round; FC redraws the dense layers
(and their norms) and the head.

The default, offline run (digits, scnn at 8x8, ``--steps 300``, patience 20, no halving and
no resizing: the settings of the committed ``results/reinit_scnn``) keeps a 2-core CPU
busy about 20 minutes. The paper reports no digits numbers; table.md shows its Table 6 rows
of the architecture (FMNIST, CIFAR-10) beside ours, labelled, as a reference.

Cost at the paper's scale (CIFAR-10 at 224x224, one seed, all six methods): XLA's FLOP count
of one SGD step at batch 256 (forward, backward, update; ``jit(...).lower().compile()
.cost_analysis()``) times the steps, at an assumed sustained 100 TFLOP/s on one accelerator
(about 40% of an H100's dense bf16/TF32 tensor-core rate: an estimate, no accelerator was
available to measure). Steps: 6 methods x K rounds x 60 epochs (a round's length in the
paper's Fig. 8; early stopping ends most rounds sooner, the 100k-step cap later) x 176 steps
(45,000 training images / 256). The CPU column is a measured step at batch 2 (2-core shared
machine under a load of ~10, 2026-12-06), scaled linearly to batch 256, for comparison only.

============  ===  ==================  ==============  ======================  =================
arch          K    TFLOP / step (256)  steps (6 x K)   accelerator hours/seed  CPU s / step(256)
============  ===  ==================  ==============  ======================  =================
scnn          4    2.0                 253,440         ~1.4                    ~560
mobilenet     9    1.4                 570,240         ~2.3                    ~1,600
resnet50      16   6.1                 1,013,760       ~17                     ~1,900
vgg16         13   23.1                823,680         ~53                     ~4,700
============  ===  ==================  ==============  ======================  =================

Memory: ``train_rounds`` draws every round's re-initialization up front, seeds x K copies of
the variables (VGG16: 138 M parameters x 13 rounds x 4 bytes = 7.2 GB per seed), so run
VGG16 with one or two seeds on one 80 GB accelerator.

Analyses (sec. 4, App. D) on the training set, per method and seed: the smallest ``--margins``
softmax margins (Fig. 6), the increase of the training loss and drop of training accuracy under
Gaussian parameter noise N(0, sigma^2) for several sigma (Fig. 5; on a fixed sample of
``--analysis-size`` training images, 8 draws per sigma), and ||input to head|| x ||head||_F
relative to BL (App. D).

``--quick`` shrinks each architecture to a narrow stand-in of the same family at the native
image size (scnn 4-4-8-8 with dense 16; VGG16 at width 1/16 with dense 16 and a 1x1 adaptive
pool; MobileNet at alpha 1/8; ResNet-50 with one block per stage and width 4), 2 seeds, 20
steps per round, patience 5 and no halving; it reads at most 256 training and 128 test images
of a TFDS dataset.

Writes ``results.json`` (one entry per method, saved as each finishes; ``--resume`` keeps them),
``table.md``, ``margins.png`` and ``sharpness.png``.
"""

from __future__ import annotations

import dataclasses
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprune as jp
from experiments import _scnn_plots as plots
from experiments._common import (
    RunStore,
    add_arch_dataset,
    base_parser,
    fmt_pm,
    load_images,
    output_dir,
)
from experiments._recipes import Arch, Recipe

NAME = "reinit_scnn"
METHODS = ("bl", "welsr", "dsd", "wels", "fc", "lw")
SIGMAS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04)


def _parse_methods(parser, text):
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        parser.error(f"--methods: unknown {unknown}; expected a subset of {METHODS}")
    return methods


# Paper 002, sec. 3 and App. B: one recipe for every architecture and dataset.
RECIPE = Recipe(
    lr=0.003, momentum=0.9, batch=256, epochs=400, augment="none",
    source="paper 002, sec. 3 and App. B (at most 100k steps per round, lr halved after 20 "
    "epochs without improvement, L2 1e-5 on the kernels)",
)  # fmt: skip
MAX_STEPS = 100_000  # per round (App. B)
LR_PATIENCE = 20  # epochs without improvement before the rate is halved (App. B)
PATIENCE = 40  # epochs without improvement before a round stops (not in the paper: ours)
IMAGE_SIZE = 224


def _scnn(n: int, quick: bool):
    if quick:
        return jp.models.SCNN(features=(4, 4, 8, 8), dense=16, out=n)
    return jp.models.SCNN(out=n)


def _vgg16(n: int, quick: bool):
    if quick:
        return jp.models.VGG16(
            num_classes=n, norm="layer", width=1 / 16, dense=16, dropout=0.0, pool_size=(1, 1)
        )
    return jp.models.VGG16(num_classes=n, norm="layer", dropout=0.0)


def _mobilenet(n: int, quick: bool):
    alpha = 0.125 if quick else 1.0
    return jp.models.MobileNet(num_classes=n, alpha=alpha, norm="layer", shallow=True, dropout=0.0)


def _resnet50(n: int, quick: bool):
    if quick:
        return jp.models.ResNet50(num_classes=n, norm="layer", width=4, stage_sizes=(1, 1, 1, 1))
    return jp.models.ResNet50(num_classes=n, norm="layer")


ARCHS = {
    "scnn": Arch(_scnn, RECIPE, paper="scnn (App. B.1)", quick_note="--quick: 4-4-8-8, dense 16"),
    "vgg16": Arch(_vgg16, RECIPE, paper="vgg16", quick_note="--quick: width 1/16, dense 16"),
    "mobilenet": Arch(
        _mobilenet, RECIPE, paper="mobilenet (shallow v1)", quick_note="--quick: alpha 1/8"
    ),
    "resnet50": Arch(
        _resnet50, RECIPE, paper="resnet50", quick_note="--quick: one block a stage, width 4"
    ),
}
"""``--arch`` name -> the architecture with paper 002's recipe (the same for all four)."""

HEADS = {"scnn": "out", "vgg16": "fc3", "mobilenet": "conv_preds", "resnet50": "fc"}
"""The classifier head of each architecture (App. D's head-weight product)."""


class OnDevice(nn.Module):
    """``model`` on uint8 images scaled to [0, 1] and resized to ``size`` inside the step.

    It shares ``model``'s scope: the variables, LW blocks and FC layers are the model's own.
    """

    model: nn.Module
    size: int | None = None

    def setup(self):
        nn.share_scope(self, self.model)

    def __call__(self, x, train: bool = False):
        if x.dtype == jnp.uint8:
            x = x.astype(jnp.float32) / 255.0
        if self.size and x.shape[-3:-1] != (self.size, self.size):
            x = jax.image.resize(x, (*x.shape[:-3], self.size, self.size, x.shape[-1]), "bilinear")
        return self.model(x, train=train)

    def lw_blocks(self):
        return self.model.lw_blocks()

    def fc_layers(self):
        return self.model.fc_layers()


def split_validation(train, seed: int):
    """``(train, validation)``: 10% of the training split held out (sec. 3)."""
    x, y = train
    order = np.random.default_rng(seed + 1).permutation(len(y))
    n_val = max(len(y) // 10, 1)
    val, rest = order[:n_val], order[n_val:]
    return (x[rest], y[rest]), (x[val], y[val])


def load(args):
    """``(train, validation, test, classes)`` as device arrays: digits as float32 in [0, 1]
    (all of it, also under ``--quick``), TFDS datasets as uint8 images (scaled in the step)."""
    if args.dataset == "digits":
        train = jp.data.image_dataset("digits", "train", seed=args.seed)
        test, classes = jp.data.image_dataset("digits", "test", seed=args.seed), 10
    else:
        images = load_images(args)
        train, test, classes = images.train, images.test, images.num_classes
    train, val = split_validation(train, args.seed)
    arr = lambda t: (jnp.asarray(t[0]), jnp.asarray(t[1]))
    return arr(train), arr(val), arr(test), classes


def describe(arch: str, net) -> str:
    """The model in one line (the fields that differ from their defaults)."""
    if arch == "scnn":
        return f"SCNN(features={net.features}, dense={net.dense}, out={net.out})"
    fields = [
        f"{f.name}={getattr(net, f.name)!r}"
        for f in dataclasses.fields(net)
        if f.name not in ("parent", "name") and getattr(net, f.name) != f.default
    ]
    return f"{type(net).__name__}({', '.join(fields)})"


def analysers(model, train, test, sample: int, k_margins: int, draws: int, head_name="out"):
    """Jitted per-seed analyses, compiled once per model and shared by all methods."""
    x, y = train
    xs, ys = x[:sample], y[:sample]
    acc = jax.jit(
        jax.vmap(lambda v, a, b: jnp.mean(model.apply(v, a).argmax(-1) == b), (0, None, None))
    )
    margins = jax.jit(lambda v: jp.analysis.softmax_margins(model, v, x, y)[:k_margins])
    sharp = jax.jit(
        lambda v, k: jp.analysis.sharpness(model, v, (xs, ys), SIGMAS, key=k, draws=max(draws, 1))
    )
    head = jax.jit(lambda v: jp.analysis.head_weight_product(model, v, xs[:256], head_name))

    def analyse(variables, key) -> dict:
        """Accuracies, smallest margins, sharpness and head-weight product of every seed."""
        seeds = jax.tree.leaves(variables)[0].shape[0]
        per = {"margins": [], "loss_increase": [], "accuracy_drop": [], "head_product": []}
        for i, k in enumerate(jax.random.split(key, seeds)):
            v = jax.tree.map(lambda a, i=i: a[i], variables)
            per["margins"].append(np.asarray(margins(v)))
            per["head_product"].append(float(head(v)))
            if draws > 0:
                s = sharp(v, k)
                per["loss_increase"].append(np.asarray(s["loss_increase"]))
                per["accuracy_drop"].append(np.asarray(s["accuracy_drop"]))
        return {
            "test_acc": 100 * acc(variables, *test),
            "train_acc": 100 * acc(variables, x, y),
            **per,
        }

    return analyse


def main(argv=None):
    parser = base_parser(NAME, __doc__)
    add_arch_dataset(
        parser,
        archs=list(ARCHS),
        datasets=jp.data.IMAGE_DATASETS,
        default_arch="scnn",
        default_dataset="digits",
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument(
        "--steps", type=int, default=None, help="max steps per round (paper: 100,000; digits 300)"
    )
    parser.add_argument(
        "--patience", type=int, default=None, help="epochs without improvement (40; digits 20)"
    )
    parser.add_argument(
        "--lr-patience",
        type=int,
        default=None,
        help="epochs without improvement before the rate is halved (paper: 20; 0: never; "
        "digits: never)",
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="side the images are resized to (224)"
    )
    parser.add_argument("--lr", type=float, default=RECIPE.lr, help="SGD learning rate (0.003)")
    parser.add_argument("--batch-size", type=int, default=RECIPE.batch, help="minibatch (256)")
    parser.add_argument("--margins", type=int, default=400, help="smallest margins kept (400)")
    parser.add_argument("--analysis-size", type=int, default=512, help="sharpness sample size")
    parser.add_argument(
        "--draws", type=int, default=8, help="noise draws per sigma (0: skip the sharpness)"
    )
    args = parser.parse_args(argv)
    methods = _parse_methods(parser, args.methods)
    quick = args.quick
    offline = args.dataset == "digits" or quick  # the small CPU settings
    seeds = args.seeds or (2 if quick else 3)
    steps = args.steps or (20 if quick else 300 if offline else MAX_STEPS)
    patience = args.patience or (5 if quick else 20 if offline else PATIENCE)
    lr_patience = args.lr_patience if args.lr_patience is not None else (
        0 if offline else LR_PATIENCE
    )  # fmt: skip
    size = args.image_size if args.image_size is not None else (None if offline else IMAGE_SIZE)
    if min(seeds, steps, patience, args.batch_size, args.margins, args.analysis_size) < 1:
        parser.error("--seeds, --steps, --patience, --batch-size, --margins, --analysis-size: >= 1")
    if args.draws < 0 or lr_patience < 0:
        parser.error(f"--draws, --lr-patience: expected >= 0, got {args.draws}, {lr_patience}")
    train, val, test, classes = load(args)
    net = ARCHS[args.arch].build(classes, quick)
    model = OnDevice(net, size or None)
    out = output_dir(args, NAME)
    config = {
        "dataset": args.dataset,
        "model": describe(args.arch, net),
        "seeds": seeds,
        "steps_per_round": steps,
        "rounds": len(net.lw_blocks()),
        "patience": patience,
        "lr": args.lr,
        "momentum": 0.9,
        "l2": 1e-5,
        "batch_size": args.batch_size,
        "sigmas": SIGMAS,
        "analysis_size": args.analysis_size,
        "draws": args.draws,
        "quick": quick,
        "seed": args.seed,
    }
    if args.arch != "scnn" or lr_patience or size:  # the committed scnn runs predate these
        config |= {"arch": args.arch, "lr_patience": lr_patience, "image_size": size}
    store = RunStore(out / "results.json", config, resume=args.resume)
    keys = jax.random.split(jax.random.key(args.seed + 2), seeds)
    analyse = analysers(
        model, train, test, args.analysis_size, args.margins, args.draws, HEADS[args.arch]
    )
    for method in methods:
        if method in store:
            continue
        t = time.perf_counter()
        res = jp.training.train_rounds(
            model,
            train,
            keys=keys,
            method=method,
            optimizer=optax.sgd(args.lr, momentum=0.9),
            steps_per_round=steps,
            rounds=config["rounds"],
            batch_size=args.batch_size,
            l2=1e-5,
            validation=val,
            patience=patience,
            lr_patience=lr_patience or None,
            loss="cross_entropy",
        )
        jax.block_until_ready(res.variables)
        train_seconds = time.perf_counter() - t
        record = {
            "method": method,
            "steps": res.history["steps"],
            "final_train_loss": res.loss,
            "train_seconds": train_seconds,
            **analyse(res.variables, jax.random.key(args.seed + 3)),
        }
        store.put(method, record)
        if not args.no_progress:
            print(
                f"{plots.LABELS[method]:5s} test {fmt_pm(record['test_acc'], 1)} train "
                f"{fmt_pm(record['train_acc'], 1)} "
                f"steps {np.asarray(res.history['steps']).sum(-1).tolist()} "
                f"({train_seconds:.1f}s)",
                flush=True,
            )
    done = [m for m in METHODS if m in store]
    plots.write_outputs(out, {m: store[m] for m in done}, config)
    return out


if __name__ == "__main__":
    main()
