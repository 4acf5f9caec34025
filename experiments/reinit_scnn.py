"""Paper 002, sec. 3-4: the simple CNN (App. B.1) with BL and the reinitialization methods.

Command::

    python -m experiments reinit_scnn                      # digits, 6 methods x 3 seeds
    python -m experiments reinit_scnn --dataset cifar10    # TFDS (when installed)
    python -m experiments reinit_scnn --quick              # CI: small scnn, 2 seeds, 4 x 20 steps

Setup (sec. 3 and App. B.1): scnn = four conv blocks (32-32-64-64 filters, 3x3, layer norm,
ReLU, 2x2 max-pool after blocks 2 and 4), dense 512 with layer norm and ReLU, the head; no
dropout and no augmentation (the setting of the paper's Table 6). SGD with learning rate 0.003
and momentum 0.9, batch 256, L2 penalty 1e-5 on the kernels; 10% of the training split is held
out for per-round early stopping (one evaluation per epoch, ``--patience`` evaluations). K = 4
blocks and N = 1, so every method runs 4 rounds of at most ``--steps`` steps and BL one run of
at most 4 x ``--steps``. WELSR, DSD and WELS redraw 20% of each tensor per round; FC redraws
dense, its layer norm and the head. All seeds of one method run as one vmapped program.

Differences from the paper, by necessity of a 2-core CPU: the default dataset is scikit-learn's
offline digits (8x8 grey images, 1,438 train / 359 test; the paper resizes its 12 TFDS datasets
to 224x224), at most ``--steps`` (default 300) steps per round instead of 100k, and no
learning-rate halving on plateaus. Kernels are He normal, as the paper says (sec. 3).
``--dataset mnist|cifar10`` loads TFDS at the native resolution. The paper reports no digits or
MNIST numbers; its scnn rows of Table 6 (FMNIST, CIFAR-10, no augmentation, no dropout) are
shown beside ours, labelled, as a reference on different data.

Analyses (sec. 4, App. D) on the training set, per method and seed: the smallest ``--margins``
softmax margins (Fig. 6), the increase of the training loss and drop of training accuracy under
Gaussian parameter noise N(0, sigma^2) for several sigma (Fig. 5; on a fixed sample of
``--analysis-size`` training images, 8 draws per sigma), and ||input to head|| x ||head||_F
relative to BL (App. D). Run time (digits, full, 2-core CPU): about 200 s of training per
method, compilation included (BL: 3 vmapped seeds x up to 1,200 steps); --quick about a minute.
Before the library's loops put convolutions into XLA:CPU's fast layout
(:func:`jaxprune.training.cpu_rewrite`), BL alone at ``--steps 30`` took 491 s.

Writes ``results.json`` (one entry per method, saved as each finishes; ``--resume`` keeps them),
``table.md``, ``margins.png`` and ``sharpness.png``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprune as jp
from experiments import _scnn_plots as plots
from experiments._common import RunStore, base_parser, fmt_pm, output_dir

NAME = "reinit_scnn"
METHODS = ("bl", "welsr", "dsd", "wels", "fc", "lw")
SIGMAS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04)


def _parse_methods(parser, text):
    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        parser.error(f"--methods: unknown {unknown}; expected a subset of {METHODS}")
    return methods


def load(dataset: str, seed: int):
    """``(train, validation, test)`` as jnp arrays; 10% of the train split is validation."""
    x, y = jp.data.image_dataset(dataset, "train", seed=seed)
    xt, yt = jp.data.image_dataset(dataset, "test", seed=seed)
    order = np.random.default_rng(seed + 1).permutation(len(y))
    n_val = max(len(y) // 10, 1)
    val, train = order[:n_val], order[n_val:]
    arr = lambda a: jnp.asarray(a)
    return (arr(x[train]), arr(y[train])), (arr(x[val]), arr(y[val])), (arr(xt), arr(yt))


def analysers(model, train, test, sample: int, k_margins: int, draws: int):
    """Jitted per-seed analyses, compiled once per model and shared by all methods."""
    x, y = train
    xs, ys = x[:sample], y[:sample]
    acc = jax.jit(
        jax.vmap(lambda v, a, b: jnp.mean(model.apply(v, a).argmax(-1) == b), (0, None, None))
    )
    margins = jax.jit(lambda v: jp.analysis.softmax_margins(model, v, x, y)[:k_margins])
    sharp = jax.jit(
        lambda v, k: jp.analysis.sharpness(model, v, (xs, ys), SIGMAS, k, draws=max(draws, 1))
    )
    head = jax.jit(lambda v: jp.analysis.head_weight_product(model, v, xs[:256]))

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
    parser.add_argument("--dataset", default="digits", choices=jp.data.IMAGE_DATASETS)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--steps", type=int, default=None, help="max steps per round (300)")
    parser.add_argument("--patience", type=int, default=None, help="epochs without improvement")
    parser.add_argument("--lr", type=float, default=0.003, help="SGD learning rate (paper: 0.003)")
    parser.add_argument("--batch-size", type=int, default=256, help="minibatch size (paper: 256)")
    parser.add_argument("--margins", type=int, default=400, help="smallest margins kept (400)")
    parser.add_argument("--analysis-size", type=int, default=512, help="sharpness sample size")
    parser.add_argument(
        "--draws", type=int, default=8, help="noise draws per sigma (0: skip the sharpness)"
    )
    args = parser.parse_args(argv)
    methods = _parse_methods(parser, args.methods)
    quick = args.quick
    seeds = args.seeds or (2 if quick else 3)
    steps = args.steps or (20 if quick else 300)
    patience = args.patience or (5 if quick else 20)
    if min(seeds, steps, patience, args.batch_size, args.margins, args.analysis_size) < 1:
        parser.error("--seeds, --steps, --patience, --batch-size, --margins, --analysis-size: >= 1")
    if args.draws < 0:
        parser.error(f"--draws: expected >= 0, got {args.draws}")
    if quick:
        model = jp.models.SCNN(features=(4, 4, 8, 8), dense=16, out=10)
    else:
        model = jp.models.SCNN(out=10)
    train, val, test = load(args.dataset, args.seed)
    out = output_dir(args, NAME)
    config = {
        "dataset": args.dataset,
        "model": f"SCNN(features={model.features}, dense={model.dense}, out={model.out})",
        "seeds": seeds,
        "steps_per_round": steps,
        "rounds": len(model.lw_blocks()),
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
    store = RunStore(out / "results.json", config, resume=args.resume)
    keys = jax.random.split(jax.random.key(args.seed + 2), seeds)
    analyse = analysers(model, train, test, args.analysis_size, args.margins, args.draws)
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
