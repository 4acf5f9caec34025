"""Partial linearization of trained ReLU networks (paper 004) on an offline spiral task.

Command::

    python -m experiments linearize [--quick] [--seeds N] [--out DIR]

Paper 004's own headline experiment (Fig. 3 right, nonlinear advantage, and its APL/NAPL
table) on ResNet-56 Short/NoShort or PyramidNet-110 and CIFAR-10/100, with the paper's recipe::

    python -m experiments linearize --arch resnet56 --dataset cifar10 [--data-dir DIR]
    python -m experiments linearize --arch resnet56_noshort --dataset cifar10

(what it runs, its cost in accelerator hours and its ``--quick`` form:
``experiments/_linearize_cifar.py``). Its transformer experiment (Fig. 24, App. B.5: test
perplexity vs the epoch at which linearization starts, Fig. 25's network and recipe)::

    python -m experiments linearize --arch transformer [--dataset translation]

(``experiments/_linearize_translation.py``; Multi30k is not in TFDS, so it runs on an offline
generated translation stand-in). The default, described below, needs no download.

What it runs (all on a generated 3-arm spiral, 2-D inputs, 3 classes, held-out test split; the
paper's CIFAR/ImageNet runs are out of reach on CPU and no dataset can be downloaded):

1. **Post-training linearization for several lambda** (paper 004 Fig. 6): train a ReLU
   ``MLP``, swap its ReLUs for channel-wise PReLUs (outputs unchanged), post-train under the
   slope penalty of :func:`jaxprune.transforms.slope_sparsity`; report test accuracy, inactive
   fraction, APL, NAPL, ENW; then :func:`jaxprune.rewrites.fold_linear` the linear channels away
   and report parameters / depth (kernel layers) before and after, with the largest output change.
2. **Layer-wise inactive fraction over post-training** (paper 004 Fig. 4), one lambda: PNG
   heatmap.
3. **Mask transfer** (paper 004 sec. 4.1.1): the inactive mask of (1) moved to a fresh network
   (exact / shuffled per layer / shuffled globally), retrained from scratch.
4. **Nonlinear advantage** (paper 004 sec. 4.1.2, Fig. 3): linearize from epoch t (target mode,
   a goal fraction of inactive units) for several t with the same total epochs; accuracy vs t.
5. **Residual vs plain** (paper 004 "Short"/"NoShort"): a ``PReLUResMLP`` with and without
   shortcuts, trained as a ReLU net (slopes frozen at 0), then linearized; APL vs NAPL.

Outputs in ``OUT/linearize/``: ``results.json`` (one entry per seed, saved as soon as that seed
finishes; ``--resume`` keeps the seeds already there when the configuration is the same),
``table.md`` (this run's numbers; the paper's CIFAR numbers beside them, labelled, for context
only) and ``accuracy_vs_napl.png``, ``inactive_heatmap.png``, ``nonlinear_advantage.png``.

Expected run time: ``--quick`` about 40-60 s on 2 CPU cores; the full run (3 seeds, wider and
longer) about 6 minutes (measured 337 s wall on a loaded, shared 2-core CPU).
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprune as jp
from experiments import _linearize_cifar, _linearize_translation
from experiments._common import (
    RunStore,
    add_arch_dataset,
    base_parser,
    fmt_pm,
    markdown_table,
    output_dir,
    write_text,
)

NAME = "linearize"

# Paper 004, Fig. 3 (left, table): top-1 test accuracy of the base network and of the network
# partly linearized after training. The retrain-from-scratch columns (exact / layer-wise /
# global permutation) are garbled in our copy of the paper and are not reproduced here.
PAPER_FIG3 = [
    ("CIFAR-10", "ResNet56 Short", 92.7, 89.2),
    ("CIFAR-10", "ResNet56 NoShort", 84.8, 81.3),
    ("CIFAR-10", "PyramidNet110 Short", 94.7, 91.5),
    ("CIFAR-100", "ResNet56 Short", 69.9, 68.3),
    ("CIFAR-100", "ResNet56 NoShort", 56.7, 54.8),
]


def spirals(n_per_class: int, seed: int, noise: float = 0.05, turns: float = 1.0):
    """Three interleaved spiral arms in 2-D; returns ``(x float32[n, 2], y int32[n])``."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(3):
        r = rng.uniform(0.05, 1.0, n_per_class)
        theta = 2 * math.pi * (turns * r + c / 3)
        pts = np.stack([r * np.cos(theta), r * np.sin(theta)], 1)
        xs.append(pts + noise * rng.normal(size=pts.shape))
        ys.append(np.full(n_per_class, c))
    x, y = np.concatenate(xs), np.concatenate(ys)
    order = rng.permutation(len(x))
    return x[order].astype(np.float32), y[order].astype(np.int32)


@functools.cache
def _epoch_fn(model, tx, batch: int):
    """The library's jitted epoch (shuffle, one train step per minibatch, last partial dropped)."""
    epoch = jp.training.make_epoch(model, "cross_entropy", tx, batch_size=batch, partial="drop")
    return jax.jit(lambda params, state, x, y, key: epoch(params, state, x, y, key=key)[:2])


@functools.cache
def _init_fn(model):
    return jax.jit(lambda key, x: model.init(key, x)["params"])


@functools.cache
def _apply_fn(model):
    return jax.jit(lambda p, x: model.apply({"params": p}, x))


@functools.cache
def _acc_fn(model):
    return jax.jit(lambda p, x, y: jnp.mean(jnp.argmax(model.apply({"params": p}, x), -1) == y))


def _cost(model, variables, x):
    """Parameters (slopes included) and kernel layers of a swapped or folded model."""
    n = sum(int(np.size(a)) for a in jax.tree.leaves(variables))
    return {"params": n, "depth": len(jp.trace(model, variables, x).layers)}


def _prelu_init(mlp, key, x):
    """A fresh ReLU MLP swapped to PReLUs (slope 0): the swapped model's params."""
    prelu = jp.rewrites.swap_relu_for_prelu(mlp, {"params": _init_fn(mlp)(key, x)}, x)
    return prelu.variables["params"]


def train(model, tx, params, data, epochs, key, state=None, batch=64, on_epoch=None):
    x, y = data
    state = tx.init(params) if state is None else state
    run = _epoch_fn(model, tx, batch)
    for e in range(epochs):
        params, state = run(params, state, x, y, jax.random.fold_in(key, e))
        if on_epoch is not None:
            on_epoch(e, params, state)
    return params, state


def _record_heat(heat, layers, epoch, params, state):
    heat.append([float(np.mean(np.asarray(state.inactive[k]))) for k in layers])


def freeze_slopes(tx):
    """``tx`` with PReLU slopes frozen (zero final updates): at slope 0 it is a ReLU net."""
    mask = lambda p: jax.tree_util.tree_map_with_path(
        lambda path, _: jax.tree_util.keystr(path).endswith("['slope']"), p
    )
    return optax.chain(tx, optax.masked(optax.set_to_zero(), mask))


# One optimizer object per setting: the jitted epochs are cached by (model, optimizer), so later
# seeds (and a resumed run in the same process) reuse the compiled programs.
@functools.cache
def _adam(lr: float):
    return optax.adam(lr)


@functools.cache
def _slope_tx(lr: float, strength: float, target: float | None = None):
    return jp.transforms.slope_sparsity(_adam(lr), strength=strength, target=target)


@functools.cache
def _relu_tx(lr: float):
    return freeze_slopes(_adam(lr))


def measure(model, params, state, test, in_features, graph_model=None):
    """Test accuracy and the path measures; activity comes from the slope state.

    A model made by ``swap_relu_for_prelu`` keeps its slopes at ``prelu/<unit>``: its path
    measures are taken on the traced original ``graph_model`` keyed by unit. A PReLU module
    (``PReLUResMLP``) is traced itself, keyed by PReLU layer (each activation on a residual
    stream has its own mask).
    """
    del in_features  # the graph is traced at the test inputs' shape
    if graph_model is None:
        graph = jp.trace(model, {"params": params}, test[0][:1])
    else:
        base = {k: v for k, v in params.items() if k != "prelu"}
        graph = jp.trace(graph_model, {"params": base}, test[0][:1])
    active = {k.removeprefix("prelu/"): ~np.asarray(v) for k, v in state.inactive.items()}
    return {
        "test_acc": float(_acc_fn(model)(params, *test)),
        "inactive_fraction": float(jp.analysis.inactive_fraction(state)),
        "apl": jp.analysis.average_path_length(graph, active),
        "napl": jp.analysis.normalized_average_path_length(graph, active),
        "enw": jp.analysis.effective_width(graph, active),
    }


def run_seed(seed: int, cfg: dict) -> dict:
    """Every part of the experiment for one seed (one cell of ``results.json``)."""
    start = time.perf_counter()
    lr = cfg["lr"]
    key = jax.random.key(seed)
    x, y = spirals(cfg["n_per_class"], seed)
    n_train = int(0.8 * len(x))
    train_data = (jnp.asarray(x[:n_train]), jnp.asarray(y[:n_train]))
    test = (jnp.asarray(x[n_train:]), jnp.asarray(y[n_train:]))
    run = {"seed": seed}
    # (1) ReLU training, swap, post-training linearization per lambda
    mlp = jp.models.MLP(hidden=cfg["hidden"], out=3, out_activation="identity")
    p0 = _init_fn(mlp)(jax.random.fold_in(key, 1), train_data[0][:1])
    p_relu, _ = train(mlp, _adam(lr), p0, train_data, cfg["epochs"], jax.random.fold_in(key, 2))
    result = jp.rewrites.swap_relu_for_prelu(mlp, {"params": p_relu}, train_data[0][:1])
    net, v_prelu = result.model, result.variables
    p_prelu = v_prelu["params"]
    swap_diff = float(
        jnp.max(jnp.abs(_apply_fn(mlp)(p_relu, test[0]) - _apply_fn(net)(p_prelu, test[0])))
    )
    run["relu_test_acc"] = float(_acc_fn(mlp)(p_relu, *test))
    run["swap_max_abs_diff"] = swap_diff
    run["lambdas"] = []
    heat = []
    masks = {}
    for lam in cfg["lambdas"]:
        tx = _slope_tx(lr, lam)
        record = None
        if lam == cfg["heat_lambda"]:
            record = functools.partial(
                _record_heat, heat, list(jp.analysis.slope_layers_of(p_prelu))
            )
        p_lin, st = train(
            net,
            tx,
            p_prelu,
            train_data,
            cfg["post_epochs"],
            jax.random.fold_in(key, 3),
            on_epoch=record,
        )
        row = {"lambda": lam, **measure(net, p_lin, st, test, 2, mlp)}
        result = jp.rewrites.fold_linear(net, {"params": p_lin}, test[0][:1])
        small, q = result.model, result.variables
        ref = _apply_fn(net)(p_lin, test[0])
        row["fold_max_abs_diff"] = float(
            jnp.max(jnp.abs(_apply_fn(small)(q["params"], test[0]) - ref))
        )
        row["cost_before"] = _cost(net, {"params": p_lin}, test[0][:1])
        row["cost_folded"] = _cost(small, q, test[0][:1])
        run["lambdas"].append(row)
        masks[lam] = st.inactive
    run["heatmap"] = heat
    # (3) mask transfer from the heat-map lambda's network, retrained from scratch
    source = masks[cfg["heat_lambda"]]
    run["transfer"] = {}
    # strength 0 and freeze_new=False: the transferred units stay frozen at slope 1, the others
    # are ordinary (unregularized) PReLUs as in the paper, even if a slope crosses 0.99
    for mode in ("exact", "layer", "global"):  # transfer_mask's modes
        mask = jp.rewrites.transfer_mask(source, mode, jax.random.fold_in(key, 4))
        transfer_tx = jp.transforms.slope_sparsity(
            _adam(lr), strength=0.0, inactive=mask, freeze_new=False
        )
        fresh = _prelu_init(mlp, jax.random.fold_in(key, 5), train_data[0][:1])
        fresh = jp.rewrites.set_linear_slopes(fresh, mask)
        p_t, st = train(
            net,
            transfer_tx,
            fresh,
            train_data,
            cfg["epochs"] + cfg["post_epochs"],
            jax.random.fold_in(key, 6),
        )
        run["transfer"][mode] = measure(net, p_t, st, test, 2, mlp)
    # (4) nonlinear advantage: linearize from epoch t, same total budget, target mode
    total = cfg["epochs"] + cfg["post_epochs"]
    relu_tx = _relu_tx(lr)
    target_tx = _slope_tx(lr, cfg["heat_lambda"], cfg["target"])
    run["advantage"] = []
    for t in cfg["t_values"]:
        p = _prelu_init(mlp, jax.random.fold_in(key, 7), train_data[0][:1])
        p, _ = train(net, relu_tx, p, train_data, t, jax.random.fold_in(key, 8))
        p, st = train(net, target_tx, p, train_data, total - t, jax.random.fold_in(key, 9))
        run["advantage"].append({"t": t, **measure(net, p, st, test, 2, mlp)})
    # (5) residual vs plain
    run["residual"] = {}
    for shortcut in (True, False):
        res = jp.models.PReLUResMLP(
            width=cfg["res_width"], blocks=cfg["res_blocks"], out=3, shortcut=shortcut
        )
        p = _init_fn(res)(jax.random.fold_in(key, 10), train_data[0][:1])
        p, _ = train(res, relu_tx, p, train_data, cfg["epochs"], jax.random.fold_in(key, 11))
        base = float(_acc_fn(res)(p, *test))
        tx = _slope_tx(lr, cfg["heat_lambda"])
        p, st = train(res, tx, p, train_data, cfg["post_epochs"], jax.random.fold_in(key, 12))
        run["residual"]["short" if shortcut else "noshort"] = {
            "base_test_acc": base,
            **measure(res, p, st, test, 2),
        }
    run["seconds"] = time.perf_counter() - start
    return run


def main(argv: list[str] | None = None) -> Path:
    parser = base_parser(NAME, __doc__)
    add_arch_dataset(
        parser,
        archs=("mlp", *_linearize_cifar.ARCHS, *_linearize_translation.ARCHS),
        datasets=("spirals", *_linearize_cifar.DATASETS, *_linearize_translation.DATASETS),
        default_arch="mlp",
        default_dataset="spirals",
    )
    args = parser.parse_args(argv)
    transformer = args.arch in _linearize_translation.ARCHS
    if transformer and args.dataset == "spirals":
        args.dataset = "translation"
    if (args.arch == "mlp") != (args.dataset == "spirals") or transformer != (
        args.dataset in _linearize_translation.DATASETS
    ):
        parser.error(
            f"--arch {args.arch} --dataset {args.dataset}: the MLP runs on the spirals, "
            f"the CIFAR networks on {'/'.join(_linearize_cifar.DATASETS)}, the transformer on "
            f"the offline translation stand-in (TFDS has no multi30k)"
        )
    out = output_dir(args, NAME)
    if transformer:
        return _linearize_translation.main(args, out)
    if args.arch != "mlp":
        return _linearize_cifar.main(args, out)
    quick = args.quick
    n_seeds = args.seeds or (1 if quick else 3)
    cfg = dict(
        n_per_class=200 if quick else 1000,
        hidden=(12,) * 3 if quick else (48,) * 6,
        epochs=30 if quick else 150,
        post_epochs=20 if quick else 100,
        lambdas=(0.03, 0.3) if quick else (0.01, 0.03, 0.1, 0.3, 1.0),
        heat_lambda=0.3 if quick else 0.1,
        t_values=(0, 15) if quick else (0, 5, 15, 40, 80),
        target=0.7,
        res_width=8 if quick else 32,
        res_blocks=2 if quick else 4,
        lr=1e-2,
    )
    config = {**cfg, "seeds": n_seeds, "seed": args.seed, "quick": quick}
    # one seed's run is saved as soon as it ends; --resume skips the seeds already saved
    store = RunStore(out / "results.json", config, resume=args.resume, key="seeds")
    for seed in range(args.seed, args.seed + n_seeds):
        if seed not in store:
            store.put(seed, run_seed(seed, cfg))
    runs = [store[seed] for seed in range(args.seed, args.seed + n_seeds)]
    results = {"config": store.config, "seeds": runs, "seconds": sum(r["seconds"] for r in runs)}
    write_text(out / "table.md", _table(results))
    _figures(results, out)
    return out


def _collect(results, fn):
    return [fn(r) for r in results["seeds"]]


def _table(results) -> str:
    cfg = results["config"]
    lines = [
        f"# Partial linearization (paper 004) on 3-arm spirals, {cfg['seeds']} seed(s)\n",
        "## This run: post-training linearization (Fig. 6 analogue)\n",
    ]
    rows = []
    for i, lam in enumerate(cfg["lambdas"]):
        g = lambda k, i=i: _collect(results, lambda r: r["lambdas"][i][k])
        cost = lambda which, f, i=i: _collect(results, lambda r: r["lambdas"][i][which][f])
        rows.append(
            [
                lam,
                fmt_pm(g("test_acc"), 3),
                fmt_pm(g("inactive_fraction"), 3),
                fmt_pm(g("apl")),
                fmt_pm(g("napl")),
                fmt_pm(g("enw"), 1),
                fmt_pm(cost("cost_before", "params"), 0),
                fmt_pm(cost("cost_folded", "params"), 0),
                fmt_pm(cost("cost_folded", "depth"), 1),
                fmt_pm(g("fold_max_abs_diff"), 1, sci=True),
            ]
        )
    lines.append(
        f"ReLU baseline test accuracy: "
        f"{fmt_pm(_collect(results, lambda r: r['relu_test_acc']), 3)}; "
        f"swap max |diff|: "
        f"{fmt_pm(_collect(results, lambda r: r['swap_max_abs_diff']), 1, sci=True)}\n"
    )
    lines.append(
        markdown_table(
            [
                "lambda",
                "test acc",
                "inactive",
                "APL",
                "NAPL",
                "ENW",
                "params",
                "params folded",
                "depth folded",
                "fold max |diff|",
            ],
            rows,
        )
    )
    lines.append("\n## This run: mask transfer, retrained from scratch (sec. 4.1.1 analogue)\n")
    lines.append(
        markdown_table(
            ["mode", "test acc", "inactive"],
            [
                [
                    m,
                    fmt_pm(_collect(results, lambda r, m=m: r["transfer"][m]["test_acc"]), 3),
                    fmt_pm(
                        _collect(results, lambda r, m=m: r["transfer"][m]["inactive_fraction"]), 3
                    ),
                ]
                for m in ("exact", "layer", "global")
            ],
        )
    )
    lines.append(
        f"\n## This run: linearize from epoch t, target {cfg['target']} (Fig. 3 right analogue)\n"
    )
    lines.append(
        markdown_table(
            ["t", "test acc", "inactive", "NAPL"],
            [
                [
                    t,
                    fmt_pm(_collect(results, lambda r, i=i: r["advantage"][i]["test_acc"]), 3),
                    fmt_pm(
                        _collect(results, lambda r, i=i: r["advantage"][i]["inactive_fraction"]), 3
                    ),
                    fmt_pm(_collect(results, lambda r, i=i: r["advantage"][i]["napl"])),
                ]
                for i, t in enumerate(cfg["t_values"])
            ],
        )
    )
    lines.append("\n## This run: residual MLP with and without shortcuts\n")
    lines.append(
        markdown_table(
            ["variant", "base acc", "linearized acc", "inactive", "APL", "NAPL"],
            [
                [v]
                + [
                    fmt_pm(_collect(results, lambda r, v=v, k=k: r["residual"][v][k]), d)
                    for k, d in (
                        ("base_test_acc", 3),
                        ("test_acc", 3),
                        ("inactive_fraction", 3),
                        ("apl", 2),
                        ("napl", 2),
                    )
                ]
                for v in ("short", "noshort")
            ],
        )
    )
    lines.append(
        "\n## Paper 004, Fig. 3 (left): CIFAR top-1 % — the paper's numbers, NOT measured "
        "here, different task and architecture\n"
    )
    lines.append(
        markdown_table(
            ["dataset", "architecture", "paper: base", "paper: linearized"],
            [list(r) for r in PAPER_FIG3],
        )
    )
    lines.append(f"\nWall time: {results['seconds']:.1f} s (all seeds)\n")
    return "\n".join(lines)


def _figures(results, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["config"]
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in results["seeds"]:
        napl = [row["napl"] for row in r["lambdas"]]
        acc = [row["test_acc"] for row in r["lambdas"]]
        size = [20 + 200 * row["inactive_fraction"] for row in r["lambdas"]]
        sc = ax.scatter(napl, acc, s=size, c=np.log10(cfg["lambdas"]), cmap="viridis")
    fig.colorbar(sc, label="log10 lambda")
    ax.set(xlabel="NAPL", ylabel="test accuracy", title="accuracy vs NAPL (disk: inactive share)")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_napl.png", dpi=100)
    plt.close(fig)

    heat = np.asarray(results["seeds"][0]["heatmap"])
    fig, ax = plt.subplots(figsize=(5, 3))
    im = ax.imshow(heat.T, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="magma")
    fig.colorbar(im, label="inactive fraction")
    ax.set(
        xlabel="post-training epoch",
        ylabel="layer",
        title=f"inactive PReLUs per layer, lambda={cfg['heat_lambda']}",
    )
    fig.tight_layout()
    fig.savefig(out / "inactive_heatmap.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ts = cfg["t_values"]
    accs = np.array([[row["test_acc"] for row in r["advantage"]] for r in results["seeds"]])
    ax.errorbar(ts, accs.mean(0), yerr=accs.std(0), marker="o")
    ax.set(
        xlabel="epoch t when linearization starts",
        ylabel="final test accuracy",
        title=f"nonlinear advantage (target {cfg['target']} inactive)",
    )
    fig.tight_layout()
    fig.savefig(out / "nonlinear_advantage.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
