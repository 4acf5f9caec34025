"""Paper 003, Table 1: training connectivity (masks, sign flips) over fixed random weights.

Reproduces the *protocol* of Table 1 and Figs. 1-2, 6-7 of "Training highly effective
connectivities within neural networks with randomly initialized, fixed weights" (Ivan &
Florian): LeNet-300-100 and Conv2/Conv4/Conv6 (App. A, no biases), each trained five ways --
baseline (all weights trained), free / minimal pruning (Eqs. 3-4) and free / minimal flipping
(sec. 3) -- with Adam, batch 25 and the learning rates of Table A.2, several seeds vmapped.

Command (defaults: offline scikit-learn digits, 8x8 images, all four networks, the paper's
three initializers, 5 seeds):

    python -m experiments connectivity [--quick] [--dataset digits|mnist|cifar10]
        [--nets lenet conv2 conv4 conv6] [--inits glorot_normal he_normal signed_he_constant]
        [--p 0.5] [--epochs N]

The paper's Table 1 at its scale (MNIST for LeNet, CIFAR-10 for the Conv nets, every
initializer):

    python -m experiments connectivity --dataset mnist --nets lenet
    python -m experiments connectivity --dataset cifar10 --nets conv2 conv4 conv6

Initializers (sec. 2.2, ``jp.models.INITIALIZERS``): Glorot normal, He normal and Signed He
Constant (``--p``: its share of positive signs); every cell is run with each of ``--inits``
(Figs. 1-2 and 6-7 show all three; Table 1 gives one number per cell and does not say which
initializer it is, so table.md lists the paper's number beside each). Epochs: the paper's
text gives no epoch count (its figures' axes are not in the text either), so the default, 30,
is ours; ``--epochs`` changes it.

The paper used MNIST (LeNet) and CIFAR-10 (Conv nets), reachable with ``--dataset mnist`` /
``--dataset cifar10`` when TensorFlow Datasets is installed (``jaxprune[tfds]``); the offline
default is scikit-learn's 1,797 8x8 digits (1,438 train / 359 test), so the measured numbers
are *not* comparable in value with the paper's: table.md lists them side by side only to show
the ordering of methods. Table 1 reports the maximum over epochs of the seed-mean test accuracy
curve; so does this script.

Outputs in ``OUT/connectivity/``: results.json (every curve; ``runs["<init>/<net>/<method>"]``
is one cell with all its seeds, saved as soon as it finishes, so ``--resume`` after an interruption
recomputes only the missing cells, identically), table.md (this run's Table 1
beside the paper's, one table per initializer; every net with all its cells in results.json, so
``--resume --nets conv4 conv6`` or ``--resume --inits he_normal`` adds those to a file holding
the others: the config lists neither), ``<init>_<net>.png`` (accuracy with min-max band;
pruned/flipped fraction) and ``<init>_<net>_layers.png`` (per-layer fractions, the paper's
bottom-row curves).

Expected run time on a 2-core CPU: --quick (LeNet, Signed He Constant, 2 seeds, 2 epochs)
under a minute; the default on digits (3 initializers x 4 nets x 5 methods x 5 seeds x 30
epochs) about three hours, mostly Conv6 (one initializer measured about an hour).

Cost at the paper's scale (MNIST for LeNet: 2,400 steps an epoch; CIFAR-10 for the Conv nets:
2,000; batch 25, the 5 seeds vmapped into one step; 3 initializers x 5 methods x 30 epochs =
450 epoch-runs per net): XLA's FLOP count of one vmapped masked step (forward, backward, Adam;
``jit(vmap(step)).lower().compile().cost_analysis()``) is 0.19 GFLOP (LeNet), 32 (Conv2),
69 (Conv4) and 104 (Conv6). At an assumed sustained 20 TFLOP/s for convolutions this small on
one accelerator, with at least 1 ms a step (launch-bound), that is about 0.3 (LeNet), 0.4
(Conv2), 0.9 (Conv4) and 1.3 (Conv6) accelerator hours, about 3 for the whole table: an
estimate, no accelerator was available. Measured on CPU (2-core machine shared under a load of
~10, 2026-12-06): 0.24 s (LeNet) to 9.9 s (Conv6) a vmapped step, i.e. weeks of CPU time.
"""

from __future__ import annotations

from pathlib import Path

import jax
import matplotlib
import numpy as np
import optax

import jaxprune as jp
from experiments._common import RunStore, base_parser, markdown_table, output_dir, write_text
from experiments.connectivity_train import initial_params, params_for, train_curves

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAME = "connectivity"
METHODS = {  # name -> (kind, minimal)
    "baseline": (None, False),
    "free_pruning": ("mask", False),
    "minimal_pruning": ("mask", True),
    "free_flipping": ("flip", False),
    "minimal_flipping": ("flip", True),
}
NETS = {
    "lenet": jp.models.lenet_300_100,
    "conv2": jp.models.conv2,
    "conv4": jp.models.conv4,
    "conv6": jp.models.conv6,
}
# Table A.2 learning rates: (baseline, pruning, flipping).
LEARNING_RATES = {
    "lenet": (1e-3, 1e-3, 1e-3),
    "conv2": (2e-4, 3e-3, 5e-4),
    "conv4": (3e-4, 3e-3, 5e-4),
    "conv6": (3e-4, 3e-3, 5e-4),
}
PAPER_TABLE1 = {  # paper 003, Table 1 (%, best seed-mean accuracy; MNIST / CIFAR-10)
    "baseline": {"lenet": 97.96, "conv2": 69.41, "conv4": 76.04, "conv6": 79.68},
    "free_pruning": {"lenet": 98.05, "conv2": 68.71, "conv4": 74.68, "conv6": 78.22},
    "minimal_pruning": {"lenet": 96.83, "conv2": 66.08, "conv4": 70.06, "conv6": 72.38},
    "free_flipping": {"lenet": 98.14, "conv2": 68.94, "conv4": 75.54, "conv6": 79.93},
    "minimal_flipping": {"lenet": 97.22, "conv2": 65.46, "conv4": 69.02, "conv6": 72.34},
}
COLORS = {
    "baseline": "C0",
    "free_pruning": "C1",
    "minimal_pruning": "C2",
    "free_flipping": "C3",
    "minimal_flipping": "C4",
}


def optimizer(net: str, method: str) -> optax.GradientTransformation:
    """Adam with Table A.2's rate; masked methods train only the scores."""
    kind, minimal = METHODS[method]
    lr_base, lr_prune, lr_flip = LEARNING_RATES[net]
    if kind is None:
        return optax.adam(lr_base)
    inner = optax.adam(lr_prune if kind == "mask" else lr_flip)
    if minimal:
        inner = optax.chain(jp.transforms.add_minimal_penalty(kind), inner)
    return jp.transforms.train_scores(inner)


def load(dataset: str, net: str):
    """Train/test data; LeNet sees flattened images (its MaskedMLP flattens)."""
    if dataset == "digits":
        return jp.data.image_dataset("digits", "train"), jp.data.image_dataset("digits", "test")
    if dataset == "mnist" and net != "lenet" or dataset == "cifar10" and net == "lenet":
        print(f"note: the paper trains {net} on {'MNIST' if net == 'lenet' else 'CIFAR-10'}")
    return jp.data.image_dataset(dataset, "train"), jp.data.image_dataset(dataset, "test")


def _factoring_check(model, params, test, kind) -> float:
    """Fraction of test predictions unchanged by Eq. 6 factoring (seed 0)."""
    p = jax.tree.map(lambda a: a[0], params)
    signs, scale = jp.rewrites.factor_weights(p)
    x = np.asarray(test[0])
    a = np.argmax(model.apply({"params": p}, x), -1)
    b = np.argmax(model.apply({"params": signs}, x * scale), -1)
    return float(np.mean(a == b))


def _plot(net, results, path: Path):
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    for method, r in results.items():
        acc = 100 * np.asarray(r["accuracy"])
        ep = np.arange(1, acc.shape[1] + 1)
        top.plot(ep, acc.mean(0), color=COLORS[method], label=method)
        top.fill_between(ep, acc.min(0), acc.max(0), color=COLORS[method], alpha=0.2)
        if r["changed"] is not None:
            ch = 100 * np.asarray(r["changed"])
            bottom.plot(ep, ch.mean(0), color=COLORS[method], label=method)
            bottom.fill_between(ep, ch.min(0), ch.max(0), color=COLORS[method], alpha=0.2)
    top.set_ylabel("test accuracy (%)")
    top.legend(fontsize=7)
    top.set_title(f"{net}: mean of seeds, band = min..max")
    bottom.set_ylabel("pruned / flipped (%)")
    bottom.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_layers(net, results, path: Path):
    masked = [m for m in results if results[m]["layers"]]
    if not masked:  # --methods baseline: no masks, no per-layer fractions to draw
        return
    fig, axes = plt.subplots(1, len(masked), figsize=(3.2 * len(masked), 3), squeeze=False)
    for ax, method in zip(axes[0], masked, strict=True):
        for layer, v in results[method]["layers"].items():
            v = 100 * np.asarray(v)
            ax.plot(np.arange(1, v.shape[1] + 1), v.mean(0), label=layer)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel("pruned / flipped (%)")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle(f"{net}: per-layer fractions (mean of seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> Path:
    parser = base_parser(NAME, __doc__)
    parser.add_argument("--dataset", default="digits", choices=jp.data.IMAGE_DATASETS)
    parser.add_argument("--nets", nargs="+", default=None, choices=list(NETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument(
        "--inits",
        nargs="+",
        default=None,
        choices=jp.models.INITIALIZERS,
        help="weight initializers, one table each (default: all three; --quick: signed he)",
    )
    parser.add_argument("--p", type=float, default=0.5, help="Signed He Constant P(w > 0)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument(
        "--train-limit", type=int, default=None, help="use only the first N training examples"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    nets = args.nets or (["lenet"] if quick else list(NETS))
    inits = args.inits or (["signed_he_constant"] if quick else list(jp.models.INITIALIZERS))
    seeds = args.seeds or (2 if quick else 5)
    epochs = args.epochs or (2 if quick else 30)
    out = output_dir(args, NAME)
    # Without the nets and initializers: a cell depends only on its own net and initializer, so
    # ``--resume --nets conv4 conv6`` adds those nets beside the ones already in results.json.
    config = dict(
        dataset=args.dataset,
        train_limit=args.train_limit,
        methods=args.methods,
        p=args.p,
        seeds=seeds,
        epochs=epochs,
        batch_size=args.batch_size,
        quick=quick,
        learning_rates=LEARNING_RATES,
    )
    store = RunStore(out / "results.json", config, resume=args.resume, key="runs")
    if store.resumed:
        print(f"resuming: {len(store.resumed)} finished cells kept ({', '.join(store.resumed)})")
    for init in inits:
        for net in nets:
            todo = [m for m in args.methods if run_id(net, m, init) not in store]
            if todo:
                _train_net(args, net, init, todo, seeds, epochs, store)
            cells = {m: store[run_id(net, m, init)] for m in args.methods}
            _plot(f"{net} ({init})", cells, out / f"{init}_{net}.png")
            _plot_layers(f"{net} ({init})", cells, out / f"{init}_{net}_layers.png")
            # every (initializer, net) finished so far, this run's and the resumed ones
            results = {
                i: {
                    n: {m: store[run_id(n, m, i)] for m in args.methods}
                    for n in NETS
                    if all(run_id(n, m, i) in store for m in args.methods)
                }
                for i in jp.models.INITIALIZERS
            }
            results = {i: r for i, r in results.items() if r}
            pending = [f"{i}/{n}" for i in inits for n in nets if n not in results.get(i, {})]
            write_text(out / "table.md", _table(config, results, pending))
    return out


def run_id(net: str, method: str, init: str = "signed_he_constant") -> str:
    """Key of one cell (initializer x network x method, all seeds) in results.json's ``runs``."""
    return f"{init}/{net}/{method}"


def _train_net(
    args, net: str, init: str, methods: list[str], seeds: int, epochs: int, store
) -> None:
    """Trains the ``methods`` of one network (seeds vmapped) and stores each cell as it ends.

    The initial weights and the shuffling keys depend only on ``--seed`` and ``net``, so a cell
    recomputed after ``--resume`` equals the one computed in a full run.
    """
    train, test = load(args.dataset, net)
    if args.train_limit:
        train = (train[0][: args.train_limit], train[1][: args.train_limit])
    n_classes = int(train[1].max()) + 1

    def build(kind):
        return NETS[net](kind=kind, weight_init=init, p=args.p, out=n_classes)

    k_init, k_shuffle = jax.random.split(jax.random.key(args.seed))
    p0 = initial_params(build("mask"), train[0], jax.random.split(k_init, seeds))
    keys = jax.random.split(k_shuffle, seeds)
    for method in methods:
        kind, _ = METHODS[method]
        model = build(kind)
        c = train_curves(
            model,
            optimizer(net, method),
            train,
            test,
            params_for(p0, kind),
            keys,
            epochs=epochs,
            batch_size=args.batch_size,
            kind=kind,
        )
        same = jax.tree.map(
            lambda a, b: bool((a == b).all()),
            {k: v["weights"] for k, v in c.params.items()},
            {k: v["weights"] for k, v in c.initial.items()},
        )
        r = {
            "accuracy": c.accuracy,
            "changed": c.changed,
            "layers": c.layers,
            "best_mean_accuracy": float(c.accuracy.mean(0).max()),
            "final_changed": None if kind is None else float(c.changed[:, -1].mean()),
            "weights_unchanged": None if kind is None else all(jax.tree.leaves(same)),
            "seconds": c.seconds,
        }
        if kind is not None and init == "signed_he_constant":
            r["factored_agreement"] = _factoring_check(model, c.params, test, kind)
            r["bits"] = jp.analysis.size_in_bits(jax.tree.map(lambda a: a[0], c.params), kind)
        store.put(run_id(net, method, init), r)
        print(
            f"{init:18s} {net:6s} {method:17s} best acc {100 * r['best_mean_accuracy']:6.2f}%  "
            f"changed {r['final_changed']}  ({c.seconds:.1f}s)",
            flush=True,
        )


def _table(config, results, pending) -> str:
    """One Table 1 per initializer: ``results[init][net][method]``."""
    text = (
        "# Paper 003, Table 1: connectivity training over fixed random weights\n\n"
        f"Measured here on **{config['dataset']}** (p={config['p']} for Signed He Constant, "
        f"{config['seeds']} seeds, {config['epochs']} epochs, batch {config['batch_size']}"
        f"{', --quick' if config['quick'] else ''}): best seed-mean test accuracy over epochs "
        "and the final pruned (pruning) or flipped (flipping) fraction of all weights, one "
        "table per initializer.\n"
        "The *paper* columns are copied from the paper's Table 1 (MNIST for LeNet, CIFAR-10 for "
        "the Conv nets, its own epoch count; the paper does not say which initializer Table 1 "
        "used, so its numbers stand beside each table); they were **not** measured here and "
        "are not comparable in value when the dataset differs.\n\n"
    )
    if pending:
        text += f"*Partial table: {', '.join(pending)} not run yet.*\n\n"
    for init, by_net in results.items():
        text += f"## {init}\n\n" + _init_table(config, by_net)
    checks = [
        (net, m, r)
        for by_net in results.values()
        for net in by_net
        for m, r in by_net[net].items()
        if "bits" in r
    ]
    if checks:
        text += (
            "\nEq. 6 factoring (Signed He Constant, seed 0): fraction of test predictions "
            "unchanged, and storage of the dense vs the factored network (1 bit per sign, 2 per "
            "masked weight):\n\n"
        )
        text += markdown_table(
            [
                "net",
                "method",
                "argmax agreement",
                "dense bits",
                "factored bits",
                "weights unchanged",
            ],
            [
                [
                    net,
                    m,
                    f"{r['factored_agreement']:.4f}",
                    r["bits"]["dense_bits"],
                    r["bits"]["factored_bits"],
                    r["weights_unchanged"],
                ]
                for net, m, r in checks
            ],
        )
    return text


def _init_table(config, results) -> str:
    nets = list(results)
    header = ["method"]
    for net in nets:
        header += [
            f"{net} measured acc %",
            f"{net} measured pruned/flipped %",
            f"{net} paper acc % (Table 1)",
        ]
    rows = []
    for method in config["methods"]:
        row = [method]
        for net in nets:
            r = results[net][method]
            ch = r["final_changed"]
            row += [
                f"{100 * r['best_mean_accuracy']:.2f}",
                "—" if ch is None else f"{100 * ch:.1f}",
                f"{PAPER_TABLE1[method][net]:.2f}",
            ]
        rows.append(row)
    return markdown_table(header, rows) + "\n"


if __name__ == "__main__":
    main()
