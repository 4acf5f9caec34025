"""Paper 000, Tables 1-2: collapsible linear layers on the painted square.

Command (full, 4 models x 30 seeds to early stop; a few minutes on a 2-core CPU):

    python -m experiments paint_collapse

Quick (CI): ``python -m experiments paint_collapse --quick`` (4 seeds, 32x32 image, at most
300 epochs; ~30 s).

Protocol (paper 000, sec. 3.2): each model is trained 30 times from random initializations on
the square with MSE, batch 128, Adam (Keras default lr 1e-3), and early stopping on the training
loss with patience 20 (restoring the best weights). The paper does not state its image size; we
use 64x64 pixels. A ReLU unit is *active* when removing it multiplies the loss by >= 1.5
(sec. 4.1 step 5a; sec. 3.2 states the rule inverted). A *minimal correct solution* has exactly
3 active units and its thresholded prediction (>= 0.5) equals the target on at least 99.5% of
the pixels (a soft sigmoid edge may flip a few corner pixels; the exact-match count is in
``results.json`` as ``wrong_pixels``).
Every run of models 2 and 3 is collapsed into model 1's shape and the collapsed network's loss
is checked against the uncollapsed one.

Run time: the paper reports seconds per Keras run. Here all seeds of a model train together in
one vmapped program, so we report the wall time of all seeds together, its per-run share, and
each run's epochs to early stop. The models train at the same time, each ``fit`` in a thread of
its own (``--jobs``, default: all of them; see ``experiments/_side_by_side.py``). On a 2-core
CPU the whole table took 38-40 s this way against 43-50 s one model after another, with
identical results; a model's wall time then includes waiting for the cores (``--jobs 1`` gives
each model the machine to itself).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

import jaxprune as jp
from experiments import _common as C
from experiments._side_by_side import add_jobs_argument, train_side_by_side

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAME = "paint_collapse"

MODELS = {
    1: jp.models.MLP(hidden=(3,)),
    2: jp.models.MLP(hidden=(3,), linear_after=((9,),)),
    3: jp.models.MLP(hidden=(3,), linear_after=((3, 3, 3),)),
    4: jp.models.MLP(hidden=(12,)),
}

MAX_WRONG = 0.005  # fraction of pixels a "correct" painting may get wrong

# The paper's Table 1 and Table 2, as printed (not measured here).
PAPER_TABLE1 = {
    1: ("9", "1.8 ± 0.81", "6", "(2.9 ± 0.1)e-3", "640 ± 80"),
    2: ("55", "2.8 ± 0.5", "26", "(2.7 ± 1.3)e-4", "190 ± 40"),
    3: ("49", "2.4 ± 0.7", "15", "(0.9 ± 1.8)e-4", "100 ± 30"),
    4: ("49", "6.1 ± 1.3", "1", "2.9e-3", "651"),
}
PAPER_TABLE2 = {
    3: ("1", "2.9e-3", "651"),
    4: ("3", "(7 ± 9)e-4", "470 ± 110"),
    5: ("4", "(1.4 ± 0.5)e-3", "550 ± 130"),
    6: ("11", "(1.3 ± 0.2)e-3", "460 ± 50"),
    7: ("7", "(6 ± 3)e-4", "460 ± 90"),
    8: ("4", "(2.8 ± 1.2)e-7", "630 ± 30"),
}


def _per_run(model, params, data):
    """Full-data loss, ablation ratios and thresholded-image errors for every run (vmapped)."""
    x, y = data

    def one(p):
        loss = jp.training.evaluate(model, p, data, "mse")
        ratios = jp.analysis.unit_ablation(model, p, data, "mse")["relu_0"]
        wrong = jnp.sum((model.apply({"params": p}, x) >= 0.5) != (y >= 0.5))
        return loss, ratios, wrong

    return jax.jit(jax.vmap(one))(params)


def _one_run_shapes(batched):
    """The leaves' shapes (and dtypes) without the seed axis: what ``count_params`` reads."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), batched)


def _collapse_all(model, params, x0):
    """``jp.collapse`` of every run's params in one compiled program: ``(model, params)``.

    The collapsed model depends only on the shapes, so the one built while tracing serves
    every run (eagerly, each of the fold's small ops would compile on its own first).
    """
    built = {}

    def one(p):
        result = jp.collapse(model, {"params": p}, x0)
        built["model"], variables = result.model, result.variables
        return variables["params"]

    small_params = jax.jit(jax.vmap(one))(params)
    return built["model"], small_params


@functools.cache
def _adam(lr: float):
    """One optimizer object per lr: fit caches its compiled programs by (model, optimizer)."""
    return optax.adam(lr)


def run_model(index: int, keys, data, args, progress: bool = True) -> dict:
    model = MODELS[index]
    tx = _adam(1e-3)
    t0 = time.perf_counter()
    runs = jp.training.fit(
        model,
        data,
        keys=keys,
        optimizer=tx,
        loss="mse",
        batch_size=128,
        patience=20,
        max_epochs=args.max_epochs,
        progress=progress,
    )
    jax.block_until_ready(runs.params)
    wall = time.perf_counter() - t0
    loss, ratios, wrong = _per_run(model, runs.params, data)
    active = np.asarray(ratios >= jp.analysis.ACTIVE_THRESHOLD)
    record = {
        "model": index,
        "architecture": repr(model),
        "params": jp.analysis.count_params(_one_run_shapes(runs.params)),
        "wall_seconds_all_runs": wall,
        "runs": [],
    }
    collapsed_loss = None
    if model.linear_after:
        small, small_params = _collapse_all(model, runs.params, jnp.asarray(data[0][:1]))
        collapsed_loss = np.asarray(
            jax.jit(jax.vmap(lambda p: jp.training.evaluate(small, p, data, "mse")))(small_params)
        )
        record["collapsed_architecture"] = str(
            jax.tree.map(lambda a: tuple(a.shape[1:]), small_params)
        )
        record["collapsed_params"] = jp.analysis.count_params(_one_run_shapes(small_params))
    # host copies: one transfer each, not an indexing op per run
    loss, ratios, wrong = np.asarray(loss), np.asarray(ratios), np.asarray(wrong)
    epochs, best, fit_loss = map(np.asarray, (runs.epochs, runs.best_epoch, runs.loss))
    for k in range(len(keys)):
        n_active = int(active[k].sum())
        run = {
            "seed": k,
            "epochs": int(epochs[k]),
            "best_epoch": int(best[k]),
            "train_epoch_loss": float(fit_loss[k]),
            "loss": float(loss[k]),
            "ablation_ratios": ratios[k].tolist(),
            "active_nodes": n_active,
            "wrong_pixels": int(wrong[k]),
            "minimal_correct": bool(n_active == 3 and int(wrong[k]) <= MAX_WRONG * len(data[0])),
        }
        if collapsed_loss is not None:
            run["collapsed_loss"] = float(collapsed_loss[k])
            run["collapse_rel_diff"] = abs(float(collapsed_loss[k]) - float(loss[k])) / max(
                float(loss[k]), 1e-30
            )
        record["runs"].append(run)
    record["params_by_seed"] = jax.tree.map(np.asarray, runs.params)
    return record


def _table1(records: dict, n_seeds: int, wall_total: float) -> str:
    jobs = max(rec.get("side_by_side", 1) for rec in records.values())
    rows = []
    for i, rec in records.items():
        runs = rec["runs"]
        three = [r for r in runs if r["active_nodes"] == 3]
        n_params = str(rec["params"])
        if "collapsed_params" in rec:
            n_params += f" → {rec['collapsed_params']}"
        p = PAPER_TABLE1[int(i)]
        wall = rec["wall_seconds_all_runs"]
        rows.append(
            [
                i,
                n_params,
                p[0],
                C.fmt_pm([r["active_nodes"] for r in runs]),
                p[1],
                sum(r["minimal_correct"] for r in runs),
                p[2],
                C.fmt_pm([r["loss"] for r in three], 1, sci=True),
                p[3],
                C.fmt_pm([r["epochs"] for r in three], 0),
                f"{wall:.1f} / {wall / len(runs):.2f}",
                p[4],
            ]
        )
    header = [
        "model",
        "# params (→ collapsed)",
        "paper",
        "# active nodes",
        "paper",
        "# minimal correct",
        "paper",
        "loss (3 active)",
        "paper",
        "epochs (3 active)",
        "wall s: all runs / per run",
        "paper s per run",
    ]
    text = (
        f"## Table 1 — effect of collapsible linear layers ({n_seeds} seeds per model)\n\n"
        + C.markdown_table(header, rows)
        + "\nColumns labelled *paper* are the paper's printed numbers (Keras, one run at a "
        "time), not measured here. *Active*: removing the unit multiplies the loss by >= 1.5. "
        "*Minimal correct solution*: exactly 3 active units and the thresholded prediction "
        "(>= 0.5) equal to the target on >= 99.5% of the pixels. "
        "The paper counts 9 parameters for model 1 "
        "(weights only); with biases it has 13. Collapsed models 2 and 3 have model 1's 13 "
        f"parameters. Total wall time for all models: {wall_total:.1f} s (compilation included"
        + (
            f"; up to {jobs} models trained at the same time, so their wall times overlap"
            if jobs > 1
            else ""
        )
        + ").\n"
    )
    return text


THRESHOLDS = (1.3, 1.4, 1.45, 1.5, 1.55, 1.6, 1.7)


def _threshold_table(records: dict) -> str:
    """Mean ± std active units per model at thresholds around the paper's 1.5, read from each
    run's stored ablation ratios: how much the "# active nodes" column rests on the threshold."""
    rows = []
    for i, rec in records.items():
        ratios = np.array([r["ablation_ratios"] for r in rec["runs"]])
        near = int(((ratios >= 1.49) & (ratios < 1.51)).sum())
        counts = [(ratios >= t).sum(axis=1).tolist() for t in THRESHOLDS]
        rows.append([i, *(C.fmt_pm(c) for c in counts), f"{near} of {ratios.size}"])
    header = ["model", *(f">= {t}" for t in THRESHOLDS), "ratios in [1.49, 1.51)"]
    return (
        "## Active units against the ablation threshold\n\n"
        + C.markdown_table(header, rows)
        + "\nThe paper's threshold is 1.5 (the Table 1 column); the others re-read the same "
        "runs' ablation ratios. A model whose count moves between neighbouring thresholds has "
        "units whose loss ratio sits on the threshold.\n"
    )


def _table2(rec: dict) -> str:
    by = {}
    for r in rec["runs"]:
        by.setdefault(r["active_nodes"], []).append(r)
    rows = []
    for n in sorted(set(by) | set(PAPER_TABLE2)):
        runs = by.get(n, [])
        p = PAPER_TABLE2.get(n, ("—", "—", "—"))
        rows.append(
            [
                n,
                len(runs),
                p[0],
                C.fmt_pm([r["loss"] for r in runs], 1, sci=True),
                p[1],
                C.fmt_pm([r["epochs"] for r in runs], 0),
                p[2],
            ]
        )
    header = ["# active nodes", "# runs", "paper", "loss", "paper", "epochs", "paper run time s"]
    return "## Table 2 — model 4 by number of active nodes\n\n" + C.markdown_table(header, rows)


def _lines(ax, kernel, bias, active):
    t = np.linspace(-0.5, 0.5, 2)
    for (a, b), c, on in zip(kernel.T, bias, active, strict=True):
        if not on:
            continue
        if abs(b) > abs(a):
            ax.plot(t, -(a * t + c) / b, "r-", lw=1.5)
        else:
            ax.plot(-(b * t + c) / a, t, "r-", lw=1.5)
    ax.set_xlim(-0.5, 0.5)
    ax.set_ylim(-0.5, 0.5)


def _figure(records: dict, data, size: int, path):
    x, y = data
    fig, axes = plt.subplots(1, 1 + len(records), figsize=(3 * (1 + len(records)), 3.2))
    axes[0].imshow(y.reshape(size, size), origin="lower", extent=(-0.5, 0.5, -0.5, 0.5))
    axes[0].set_title("target")
    for ax, (i, rec) in zip(axes[1:], records.items(), strict=True):
        runs = rec["runs"]
        best = min(
            range(len(runs)), key=lambda k: (not runs[k]["minimal_correct"], runs[k]["loss"])
        )
        model = MODELS[int(i)]
        p = {
            layer: {k: np.asarray(v)[best] for k, v in leaves.items()}
            for layer, leaves in rec["params_by_seed"].items()
        }
        # the uncollapsed model: collapsing folds the layers after relu_0 and leaves relu_0's
        # kernel and bias (the lines drawn) and the painting as they are
        pred = np.asarray(jax.jit(model.apply)({"params": p}, x)).reshape(size, size)
        ax.imshow(pred, origin="lower", extent=(-0.5, 0.5, -0.5, 0.5), vmin=0, vmax=1)
        active = np.asarray(runs[best]["ablation_ratios"]) >= jp.analysis.ACTIVE_THRESHOLD
        _lines(ax, np.asarray(p["relu_0"]["kernel"]), np.asarray(p["relu_0"]["bias"]), active)
        ax.set_title(
            f"model {i}: {int(active.sum())} active, loss {runs[best]['loss']:.1e}", fontsize=9
        )
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = C.base_parser(NAME, __doc__)
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (64)")
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="epoch cap per run (paper: 500,000; --quick: 300)",
    )
    parser.add_argument(
        "--models", type=int, nargs="+", default=[1, 2, 3, 4], choices=sorted(MODELS)
    )
    add_jobs_argument(parser, "models")
    args = parser.parse_args(argv)
    n_seeds = args.seeds or (4 if args.quick else 30)
    args.size = args.size or (32 if args.quick else 64)
    args.max_epochs = args.max_epochs or (300 if args.quick else 500_000)
    out = C.output_dir(args, NAME)
    data = jp.data.paint("square", size=args.size)
    keys = jax.random.split(jax.random.key(args.seed), n_seeds)
    config = {
        "seeds": n_seeds,
        "size": args.size,
        "max_epochs": args.max_epochs,
        "seed": args.seed,
        "quick": args.quick,
    }
    store = C.RunStore(
        out / "results.json", config, resume=args.resume, key="models", order=sorted(MODELS)
    )
    t0 = time.perf_counter()
    # model 4 (12 hidden units; its runs train ~6000 epochs each, the longest fit) first
    todo = sorted((i for i in args.models if i not in store), key=lambda i: -MODELS[i].hidden[0])

    def report(i, record):
        if not args.no_progress:
            print(f"{NAME}: model {i} trained ({record['wall_seconds_all_runs']:.1f} s)")

    train_side_by_side(
        todo,
        lambda i, alone: run_model(i, keys, data, args, alone and not args.no_progress),
        store,
        jobs=args.jobs,
        report=report,
    )
    wall = time.perf_counter() - t0
    records = {k: store[k] for k in sorted(store.runs)}
    text = f"# {NAME}: paper 000, Tables 1-2\n\n" + _table1(records, n_seeds, wall)
    text += "\n" + _threshold_table(records)
    if "4" in records:
        text += "\n" + _table2(records["4"])
    C.write_text(out / "table.md", text)
    _figure(records, data, args.size, out / "paintings.png")
    return out


if __name__ == "__main__":
    print(main())
