"""Paper 004's headline experiment on its own networks: Fig. 3 (right) and the APL/NAPL table.

``python -m experiments linearize --arch resnet56 --dataset cifar10`` (and
``--arch resnet56_noshort``, ``--arch pyramidnet110``, ``--dataset cifar100``) runs, per seed:

1. the ReLU network trained with the paper's recipe (:data:`experiments._recipes.ARCHS`; for
   ResNet-56: SGD momentum 0.9, lr 0.1 divided by 10 at epochs 100 and 150, weight decay 1e-4,
   batch 256, 200 epochs, random flips; App. C.2, Fig. 26), its test accuracy after every
   epoch, and a snapshot at each epoch ``t`` of ``t_values``;
2. from each snapshot: the ReLUs swapped for PReLUs (slope 0, outputs unchanged), then the
   post-training of Figs. 3-4 (Fig. 27's recipe shortened to 30 epochs, milestones 10/20) under
   :func:`jaxprune.transforms.slope_sparsity` in target mode, which stops linearizing once
   ``target`` of the units are linear; the final test accuracy, inactive fraction, APL and NAPL
   (sec. 3.1) of each. ``t = 0`` linearizes an untrained network; ``t = epochs`` is the
   "linearized after training" column of Fig. 3 (left). The fully trained ReLU network is the
   reference "trained from scratch, not linearized". Its APL/NAPL (all units active) heads the
   table.

Not given in the paper and chosen here: ``strength`` 0.05 and ``target`` 0.9 (a goal "high
enough to impact performance"); the t grid. Images are scaled to [0, 1] and standardized per
channel with the training split's mean and std.

Cost of the full run (one seed, one architecture, CIFAR-10): 200 + 9 x 30 = 470 epochs of 50,000
images = 23.5 M training images. Measured CPU rates of this network's training step on this
project's 2-core x86-64 CPU: 72.6 images/s at batch 128 (ResNet-56 v1, fp32,
``benchmarks/results/resnet_train_cpu.json``, 2026-12-03), and 11-16 images/s for ResNet-56 v2
Short / NoShort at batch 16 with other jobs sharing the cores (``python -m
benchmarks.accelerator_check --only 004_resnet56_short 004_resnet56_noshort --batch 16 --steps 2
--epochs 2``, 2026-12-06; the post-training step with the slope penalty costs the same). At the
best of these the run takes about 90 CPU-hours, out of reach here. On one GPU it is about 1.3
hours at an assumed 5,000 images/s (an assumption, not a measurement: the accelerator check
measures the real images/s on the device it runs on, and the estimate is that count of images
divided by it). Three architectures x CIFAR-10 and CIFAR-100 x 1 seed: about 8 GPU-hours at
that rate.

``--quick`` (what CI runs, on ``tfds.testing.mock_data``): depth-8 networks (one block a stage),
the first 256 / 128 records of each split, 2 + 2 epochs, t in (0, 2), batch 32, slope
penalty 5 (so that the few steps reach the target). It takes 45-90 s per architecture on the
shared 2-core CPU, nearly all of it compiling the ReLU and the PReLU training programs.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxprune as jp
from experiments._common import RunStore, fmt_pm, load_images, markdown_table, write_text
from experiments._recipes import augmentation, get_arch

ARCHS = ("resnet56", "resnet56_noshort", "pyramidnet110")
DATASETS = ("cifar10", "cifar100")

# Paper 004, Fig. 3 (left): top-1 % of the base network and of the network partly linearized
# after training (the paper's numbers, for context).
PAPER_FIG3 = {
    ("cifar10", "resnet56"): (92.7, 89.2),
    ("cifar10", "resnet56_noshort"): (84.8, 81.3),
    ("cifar10", "pyramidnet110"): (94.7, 91.5),
    ("cifar100", "resnet56"): (69.9, 68.3),
    ("cifar100", "resnet56_noshort"): (56.7, 54.8),
}


def config(args) -> dict:
    """The run's configuration (what ``results.json`` is tied to)."""
    arch = get_arch(args.arch)
    recipe, post = arch.recipe, arch.post
    if args.quick:
        recipe, post = recipe.quick(epochs=2, batch=32), post.quick(epochs=2, batch=32)
    t_values = (0, 2) if args.quick else (0, 2, 5, 10, 15, 30, 60, 100, 200)
    return {
        "arch": args.arch,
        "dataset": args.dataset,
        "paper_name": arch.paper,
        "quick_note": arch.quick_note if args.quick else "",
        "recipe": recipe.describe(),
        "post_recipe": post.describe(),
        "epochs": recipe.epochs,
        "post_epochs": post.epochs,
        "t_values": [t for t in t_values if t <= recipe.epochs],
        "strength": 5.0 if args.quick else 0.05,
        "target": 0.9,
        "seeds": args.seeds or 1,
        "seed": args.seed,
        "quick": bool(args.quick),
    }


@functools.cache
def _prepare_fn(name: str, mean: tuple, std: tuple, train: bool):
    """``fn(key, uint8 images) -> standardized float32 images``, jitted, on device."""
    aug = augmentation(name, train=train)
    m, s = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    return jax.jit(lambda key, x: (aug(key, x).astype(jnp.float32) / 255.0 - m) / s)


@functools.cache
def _logits_fn(model):
    return jax.jit(lambda v, x: model.apply(v, x))


def accuracy(model, variables, images, labels, batch: int = 1000) -> float:
    """Test accuracy in evaluation mode (BatchNorm's running statistics), in chunks."""
    hits = 0
    for i in range(0, len(labels), batch):
        logits = _logits_fn(model)(variables, images[i : i + batch])
        hits += int(jnp.sum(jnp.argmax(logits, -1) == labels[i : i + batch]))
    return hits / len(labels)


def train(model, variables, tx, data, epochs, key, recipe, prepare, opt_state=None, on_epoch=None):
    """``epochs`` epochs of the library's training (BatchNorm carried), one call an epoch with
    a fresh on-device augmentation of the training images. Returns ``(variables, opt_state)``."""
    x_u8, y = data
    params = variables["params"]
    for e in range(epochs):
        k_aug, k_run = jax.random.split(jax.random.fold_in(key, e))
        result = jp.training.train_epochs(
            model,
            (prepare(k_aug, x_u8), y),
            keys=k_run,
            loss="cross_entropy",
            optimizer=tx,
            epochs=1,
            variables=variables,
            params=params,
            opt_state=opt_state,
            batch_size=recipe.batch,
            partial="drop",
            progress=False,
        )
        variables, params, opt_state = result.variables, result.params, result.opt_state
        if on_epoch is not None:
            on_epoch(e + 1, variables)
    return variables, opt_state


@functools.cache
def _optimizer(recipe, steps: int, strength: float | None = None, target: float | None = None):
    """One optimizer object per setting: the library's compiled epochs are cached by it."""
    tx = recipe.optimizer_for(steps)
    if strength is None:
        return tx
    return jp.transforms.slope_sparsity(tx, strength=strength, target=target)


def path_measures(graph, inactive=None) -> dict:
    """APL and NAPL of the traced ReLU network with the swapped model's inactive units linear."""
    active = None
    if inactive is not None:
        active = {k.removeprefix("prelu/"): ~np.asarray(v) for k, v in inactive.items()}
    return {
        "apl": float(jp.analysis.average_path_length(graph, active)),
        "napl": float(jp.analysis.normalized_average_path_length(graph, active)),
    }


def run_seed(seed: int, cfg: dict, images, quick: bool) -> dict:
    """Every part of the experiment for one seed."""
    start = time.perf_counter()
    arch = get_arch(cfg["arch"])
    recipe, post = arch.recipe, arch.post
    if quick:
        recipe, post = recipe.quick(epochs=2, batch=32), post.quick(epochs=2, batch=32)
    x_tr, y_tr = jnp.asarray(images.train[0]), jnp.asarray(images.train[1])
    x_te, y_te = images.test
    mean = tuple(np.asarray(images.train[0], np.float64).mean((0, 1, 2)) / 255.0)
    std = tuple(np.asarray(images.train[0], np.float64).std((0, 1, 2)) / 255.0 + 1e-8)
    prepare = _prepare_fn(recipe.augment, mean, std, True)
    x_te = _prepare_fn("none", mean, std, False)(jax.random.key(0), jnp.asarray(x_te))
    y_te = jnp.asarray(y_te)
    steps = len(y_tr) // recipe.batch
    if steps < 1:
        raise ValueError(f"--dataset: {len(y_tr)} training images, fewer than one batch")

    model = arch.build(images.num_classes, quick)
    key = jax.random.key(seed)
    variables = jax.jit(model.init)(jax.random.fold_in(key, 0), x_te[:1])
    graph = jp.trace(model, variables, x_te[:1])
    run = {"seed": seed, "all_active": path_measures(graph)}
    snapshots, curve = {}, []
    if 0 in cfg["t_values"]:
        snapshots[0] = variables

    def on_epoch(e, v):
        curve.append(accuracy(model, v, x_te, y_te))
        if e in cfg["t_values"]:
            snapshots[e] = v

    variables, _ = train(
        model, variables, _optimizer(recipe, steps), (x_tr, y_tr), recipe.epochs,
        jax.random.fold_in(key, 1), recipe, prepare, on_epoch=on_epoch,
    )  # fmt: skip
    run["relu_test_acc_curve"] = curve
    run["relu_test_acc"] = curve[-1]
    run["advantage"] = []
    post_prepare = _prepare_fn(post.augment, mean, std, True)
    for t in cfg["t_values"]:
        swapped = jp.rewrites.swap_relu_for_prelu(model, snapshots[t], x_te[:1])
        net, v = swapped.model, swapped.variables
        tx = _optimizer(post, steps, cfg["strength"], cfg["target"])
        v, st = train(
            net, v, tx, (x_tr, y_tr), post.epochs, jax.random.fold_in(key, 2 + t), post,
            post_prepare,
        )  # fmt: skip
        run["advantage"].append(
            {
                "t": t,
                "test_acc": accuracy(net, v, x_te, y_te),
                "inactive_fraction": float(jp.analysis.inactive_fraction(st)),
                "active_units": {
                    k.removeprefix("prelu/"): [int(np.sum(~np.asarray(m))), int(np.size(m))]
                    for k, m in st.inactive.items()
                },
                **path_measures(graph, st.inactive),
            }
        )
    run["seconds"] = time.perf_counter() - start
    return run


def main(args, out: Path) -> Path:
    cfg = config(args)
    images = load_images(args)
    store = RunStore(out / "results.json", cfg, resume=args.resume, key="seeds")
    for seed in range(args.seed, args.seed + cfg["seeds"]):
        if seed not in store:
            store.put(seed, run_seed(seed, cfg, images, args.quick))
    runs = [store[seed] for seed in range(args.seed, args.seed + cfg["seeds"])]
    write_text(out / "table.md", table(store.config, runs))
    figure(store.config, runs, out)
    return out


def table(cfg: dict, runs: list[dict]) -> str:
    col = lambda f: [f(r) for r in runs]  # noqa: E731
    lines = [
        f"# Nonlinear advantage (paper 004, Fig. 3 right): {cfg['paper_name']} on "
        f"{cfg['dataset']}, {len(runs)} seed(s)\n",
        f"Training: {cfg['recipe']}. Post-training: {cfg['post_recipe']}; slope penalty "
        f"{cfg['strength']}, target {cfg['target']} of the units linear.",
    ]
    if cfg["quick_note"]:
        lines.append(f"Quick run ({cfg['quick_note']}): the numbers only show the pipeline works.")
    lines.append(
        f"\nReLU network trained {cfg['epochs']} epochs (not linearized): test accuracy "
        f"{fmt_pm(col(lambda r: r['relu_test_acc']), 3)}; all units active: APL "
        f"{fmt_pm(col(lambda r: r['all_active']['apl']))}, NAPL "
        f"{fmt_pm(col(lambda r: r['all_active']['napl']))}\n"
    )
    rows = []
    for i, t in enumerate(cfg["t_values"]):
        g = lambda k, i=i: col(lambda r: r["advantage"][i][k])  # noqa: E731
        rows.append(
            [t, fmt_pm(g("test_acc"), 3), fmt_pm(g("inactive_fraction"), 3)]
            + [fmt_pm(g("apl")), fmt_pm(g("napl"))]
        )
    lines.append(
        markdown_table(["linearized from epoch t", "test acc", "inactive", "APL", "NAPL"], rows)
    )
    paper = PAPER_FIG3.get((cfg["dataset"], cfg["arch"]))
    if paper:
        lines.append(
            f"\nPaper 004, Fig. 3 (left), NOT measured here: base {paper[0]} %, linearized after "
            f"training {paper[1]} % (top-1)."
        )
    lines.append(f"\nWall time: {sum(r['seconds'] for r in runs):.1f} s (all seeds)\n")
    return "\n".join(lines)


def figure(cfg: dict, runs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    accs = np.array([[row["test_acc"] for row in r["advantage"]] for r in runs])
    ax.errorbar(cfg["t_values"], accs.mean(0), yerr=accs.std(0), marker="o", label="linearized")
    base = np.mean([r["relu_test_acc"] for r in runs])
    ax.axhline(base, color="gray", ls="--", label="ReLU, not linearized")
    ax.set(
        xlabel="epoch t when linearization starts",
        ylabel="final test accuracy",
        title=f"{cfg['paper_name']}, {cfg['dataset']} (target {cfg['target']})",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "nonlinear_advantage.png", dpi=100)
    plt.close(fig)
