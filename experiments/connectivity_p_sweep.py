"""Paper 003, sec. 2.4 and Fig. 4: free pruning over sign-imbalanced Signed He Constant weights.

Reproduces the *protocol* of Fig. 4 of "Training highly effective connectivities within neural
networks with randomly initialized, fixed weights" (Ivan & Florian): the fixed weights are
``±sqrt(2 / fan_in)`` with a positive sign with probability ``p`` (sec. 2.4), only the masks
are trained (free pruning, Eq. 3; Adam, batch 25, Table A.2's rates), several seeds vmapped,
and the best seed-mean test accuracy and the final pruned fraction are reported against ``p``.
Fig. 4 shows LeNet (MNIST, logarithmic ``p`` axis) and Conv2/4/6 (CIFAR-10, linear axis); the
paper gives its numbers only in the text (sec. 2.4), which table.md quotes beside ours.

``p = 0`` is a closed-form check: every weight is negative and the digits' pixels are
non-negative, so every first-layer ReLU is 0, the logits are all 0, nothing can be learned (all
gradients vanish, nothing is pruned) and the accuracy is the test share of class 0 (argmax of
equal logits).

Command (defaults: offline scikit-learn digits, the four networks of Fig. 4, 5 seeds):

    python -m experiments connectivity_p_sweep [--quick] [--resume]
        [--nets lenet conv2 conv4 conv6] [--ps 0 0.001 0.01 0.1 0.3 0.5 0.7 0.9 1]
        [--methods free_pruning free_flipping] [--dataset digits|mnist|cifar10] [--epochs N]
        [--train-limit N]

Fig. 4 at the paper's scale (LeNet on MNIST, Conv2/4/6 on CIFAR-10):

    python -m experiments connectivity_p_sweep --dataset mnist --nets lenet
    python -m experiments connectivity_p_sweep --dataset cifar10 --nets conv2 conv4 conv6

Outputs in ``OUT/connectivity_p_sweep/``: results.json (every curve; ``runs`` keyed
``<net>/<method>/p=<p>``, saved as each finishes, so ``--resume`` recomputes only missing
cells), table.md (accuracy and pruned fraction per ``p`` beside the paper's statements),
``accuracy_vs_p.png`` (accuracy and pruned/flipped fraction against ``p``, one column per net).

Expected run time on a 2-core CPU: --quick (LeNet, p in {0, 0.1, 0.5, 1}, 2 seeds, 2 epochs)
about a minute; LeNet and Conv2 (9 values of p x 5 seeds x 30 epochs on digits) measured 21
minutes wall on a loaded, shared 2-core machine (1,064 s in the cells: a LeNet cell 12-19 s, a
Conv2 cell 56-158 s); the default adds Conv4 and Conv6, about 3x Conv2's time each. At the
paper's scale the cost per cell is :mod:`experiments.connectivity`'s per (net, method) cell:
9 cells per net and method.
"""

from __future__ import annotations

import jax
import matplotlib
import numpy as np

import jaxprune as jp
from experiments._common import RunStore, base_parser, markdown_table, output_dir, write_text
from experiments.connectivity import METHODS, NETS, load, optimizer
from experiments.connectivity_train import initial_params, train_curves

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAME = "connectivity_p_sweep"
PS = (0.0, 0.001, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
QUICK_PS = (0.0, 0.1, 0.5, 1.0)
SWEEP_METHODS = ("free_pruning", "free_flipping")
PAPER_TEXT = {  # paper 003, sec. 2.4 (LeNet on MNIST, free pruning); Fig. 4 itself is a plot
    0.01: "accuracy about 10 points below p = 0.5",
    0.1: "accuracy about 1 point below p = 0.5",
    0.3: "performance maintained (0.3 <= p <= 0.7)",
    0.5: "performance maintained (0.3 <= p <= 0.7)",
    0.7: "performance maintained (0.3 <= p <= 0.7)",
    1.0: "about 95% accuracy, about 65% of weights pruned",
}


def run_id(net: str, method: str, p: float) -> str:
    """Key of one cell (network x method x p, all seeds) in results.json's ``runs``."""
    return f"{net}/{method}/p={p:g}"


def _limited(data, n):
    (x, y), test = data
    return ((x[:n], y[:n]), test) if n else ((x, y), test)


def _cell(args, net, method, p, data, seeds, epochs) -> dict:
    train, test = data
    kind, _ = METHODS[method]
    n_classes = int(train[1].max()) + 1
    model = NETS[net](kind=kind, weight_init="signed_he_constant", p=p, out=n_classes)
    k_init, k_shuffle = jax.random.split(jax.random.key(args.seed))
    p0 = initial_params(model, train[0], jax.random.split(k_init, seeds))
    weights = jax.tree.leaves({k: v["weights"] for k, v in p0.items()})
    positive = sum(int((w > 0).sum()) for w in weights) / sum(w.size for w in weights)
    c = train_curves(
        model,
        optimizer(net, method),
        train,
        test,
        p0,
        jax.random.split(k_shuffle, seeds),
        epochs=epochs,
        batch_size=args.batch_size,
        kind=kind,
    )
    mean = c.accuracy.mean(0)
    best = int(mean.argmax())
    return {
        "p": p,
        "positive_fraction": positive,  # measured share of positive initial weights
        "accuracy": c.accuracy,
        "changed": c.changed,
        "best_mean_accuracy": float(mean[best]),
        "best_epoch": best + 1,
        "best_min_max": [float(c.accuracy[:, best].min()), float(c.accuracy[:, best].max())],
        "final_changed": float(c.changed[:, -1].mean()),
        "class0_share": float(np.mean(np.asarray(test[1]) == 0)),
        "seconds": c.seconds,
    }


def main(argv: list[str] | None = None):
    parser = base_parser(NAME, __doc__)
    parser.add_argument("--dataset", default="digits", choices=jp.data.IMAGE_DATASETS)
    parser.add_argument("--nets", nargs="+", default=None, choices=list(NETS))
    parser.add_argument("--methods", nargs="+", default=["free_pruning"], choices=SWEEP_METHODS)
    parser.add_argument("--ps", nargs="+", type=float, default=None, help="values of p")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument(
        "--train-limit", type=int, default=None, help="use only the first N training examples"
    )
    args = parser.parse_args(argv)
    ps = sorted(set(args.ps or (QUICK_PS if args.quick else PS)))
    bad = [p for p in ps if not 0.0 <= p <= 1.0]
    if bad:
        parser.error(f"--ps: expected probabilities in [0, 1], got {bad}")
    nets = args.nets or (["lenet"] if args.quick else list(NETS))
    seeds = args.seeds or (2 if args.quick else 5)
    epochs = args.epochs or (2 if args.quick else 30)
    out = output_dir(args, NAME)
    config = dict(
        dataset=args.dataset,
        nets=nets,
        methods=args.methods,
        ps=ps,
        seeds=seeds,
        epochs=epochs,
        batch_size=args.batch_size,
        train_limit=args.train_limit,
        seed=args.seed,
        quick=args.quick,
    )
    store = RunStore(out / "results.json", config, resume=args.resume, key="runs")
    for net in nets:
        data = None
        for method in args.methods:
            for p in ps:
                if run_id(net, method, p) in store:
                    continue
                data = data or _limited(load(args.dataset, net), args.train_limit)
                r = _cell(args, net, method, p, data, seeds, epochs)
                store.put(run_id(net, method, p), r)
                print(
                    f"{net:6s} {method:13s} p={p:<6g} "
                    f"best acc {100 * r['best_mean_accuracy']:6.2f}%  "
                    f"changed {100 * r['final_changed']:5.1f}%  ({r['seconds']:.1f}s)",
                    flush=True,
                )
    _plot(config, store, out / "accuracy_vs_p.png")
    write_text(out / "table.md", _table(config, store))
    return out


def _plot(config, store, path) -> None:
    nets, ps = config["nets"], config["ps"]
    fig, axes = plt.subplots(2, len(nets), figsize=(4.2 * len(nets), 5.5), squeeze=False)
    for col, net in enumerate(nets):
        top, bottom = axes[0][col], axes[1][col]
        for j, method in enumerate(config["methods"]):
            rs = [store[run_id(net, method, p)] for p in ps]
            acc = 100 * np.array([r["best_mean_accuracy"] for r in rs])
            lo, hi = (100 * np.array([r["best_min_max"][i] for r in rs]) for i in (0, 1))
            top.errorbar(ps, acc, yerr=[acc - lo, hi - acc], marker="o", color=f"C{j + 1}")
            top.plot([], [], color=f"C{j + 1}", label=method)
            bottom.plot(ps, [100 * r["final_changed"] for r in rs], "o-", color=f"C{j + 1}")
        if net == "lenet" and min(ps) < 0.1:  # the paper's left panels: logarithmic p
            for ax in (top, bottom):
                ax.set_xscale("symlog", linthresh=1e-3)
        top.set_title(f"{net} (bars: min..max of seeds)", fontsize=9)
        top.set_ylabel("best test accuracy (%)")
        bottom.set_ylabel("pruned / flipped (%)")
        bottom.set_xlabel("p = P(weight > 0)")
        top.legend(fontsize=7)
    fig.suptitle(f"Paper 003 Fig. 4 protocol on {config['dataset']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _table(config, store) -> str:
    text = (
        "# Paper 003, sec. 2.4 / Fig. 4: sign-imbalanced Signed He Constant weights\n\n"
        f"Measured here on **{config['dataset']}** ({config['seeds']} seeds, "
        f"{config['epochs']} epochs, batch {config['batch_size']}"
        f"{', --quick' if config['quick'] else ''}): best seed-mean test accuracy over epochs "
        "(min..max of the seeds at that epoch), final pruned (or flipped) fraction, and the "
        "measured share of positive initial weights. The last column quotes the *paper's* "
        "text about LeNet on MNIST (sec. 2.4); it was **not** measured here, and Fig. 4's "
        "curves are not given as numbers. At p = 0 the expected accuracy is the test share of "
        "class 0 (all logits 0).\n"
    )
    for net in config["nets"]:
        for method in config["methods"]:
            rows = []
            for p in config["ps"]:
                r = store[run_id(net, method, p)]
                lo, hi = r["best_min_max"]
                rows.append(
                    [
                        f"{p:g}",
                        f"{r['positive_fraction']:.4f}",
                        f"{100 * r['best_mean_accuracy']:.2f} ({100 * lo:.2f}..{100 * hi:.2f})",
                        f"{100 * r['final_changed']:.1f}",
                        PAPER_TEXT.get(p, "")
                        if net == "lenet" and method == "free_pruning"
                        else "",
                    ]
                )
            text += f"\n## {net}, {method}\n\n"
            text += markdown_table(
                ["p", "positive share", "measured acc %", "measured changed %", "paper (sec. 2.4)"],
                rows,
            )
    return text


if __name__ == "__main__":
    main()
