"""FuseInit (paper 001, Algorithm 1, Tables I-V, Fig. 2): train deep -> fuse -> retrain, vs random.

Command::

    python -m experiments fuse_init [--quick] [--seeds 10] [--epochs 60]
        [--part conv_dense|conv_conv|dense_dense|all|table_I|...|table_V|tables]
        [--init-std 0.2236] [--out results]

The paper's Tables I-V with its networks (``jp.models.fusion_net``) and the successive fusions
of each table (I: 6 -> 5 -> 4 conv layers, II: 4 -> 3 -> 2 -> 1, III: 2 -> 1, IV: 4 -> 3, V: 3 ->
2 -> 1 dense layers), kernels drawn N(0, 0.05) as the paper's sec. III-C says (``--init-std``,
default sqrt(0.05)); 10 seeds as the paper::

    python -m experiments fuse_init --part tables --epochs 100

Data (``experiments/_fuse_tables.py``): Table I on TFDS ``cifar10``, Table II on TFDS
``fashion_mnist``; Tables III-V on generated stand-ins of the same shapes, as no TFDS dataset
holds them: HAR (128 x 9 windows, 6 classes; UCI HAR is not in TFDS), speech commands (98 x 40
log-mel frames, 12 classes; TFDS ``speech_commands`` is raw audio and jaxprune has no log-mel
front end), wireless positioning (not public in TFDS). Each table: the deepest row trained from
random init for ``--epochs``; each next row fused from the previous row's trained network and
retrained ``--epochs`` (FuseInit), and trained from random init for ``--epochs`` (Random); the
paper trains "until the validation accuracy settles" and shows a learning-rate drop at epoch 75
(Fig. 2), so ``--epochs 100`` is the paper-scale setting (Adam 3e-3, batch 64: ours, the paper
gives no optimizer). Cost at that scale (10 seeds vmapped): Table I is the largest, 3 rows x 2
trainings x 100 epochs x 781 steps of a 32-32-64-64-128-128 conv net at batch 64 x 10 seeds
(about 0.04 TFLOP a vmapped step): ~470k steps, under an accelerator hour at 20 TFLOP/s; the
fusions' moment estimates add minutes. An estimate from the FLOP count, not measured on an
accelerator. Table I's fusions are dominated by one ``eigh`` of the fused layer's input
covariance (``O(L0^3)``, inherent in the paper's least-squares solve): 8,192 inputs for 6 -> 5
(conv_5's 8x8x128 input), 4,096 for 5 -> 4. Measured on a shared 2-core CPU (load average
about 6) on 300 generated 32x32x3 images, 2026-12-06: 6 -> 5 in 161 s, 5 -> 4 in 13-35 s per
seed (``python benchmarks/fuse_conv.py --samples 300`` for the latter), so ``--part table_I
--quick`` (2 seeds) spends about 6 minutes fusing there, with its training on top.

The three offline parts (no download; their networks keep Flax's default LeCun-normal
kernels, as the committed results were made with; the tables' use the paper's N(0, 0.05)):

* ``conv_dense`` (Tables I/II style): a conv net on scikit-learn's bundled 8x8 digits; the last
  conv layer is fused with the dense head (Theorem 1), e.g. 8-16-16 -> 8-16.
* ``conv_conv`` (Tables III/IV style): the first two conv layers of a digits net are fused into
  one conv with ``k~ = 5`` (Theorem 2; the joint least-squares estimator for retraining, and the
  fusion MSE of the paper's uncorrelated-channel estimator reported beside it).
* ``dense_dense`` (Table V style, regression, mean absolute error): a 16-128-2 ReLU net on a
  generated positioning task (2-D position -> 32 noisy cosine "channel" features -> position);
  the 128-unit layer is fused with the output layer: 16-2.

For each part and seed: train the deep net for ``--epochs`` epochs (Adam, minibatch 64), fuse
with the training data, retrain the shallow net for ``--epochs`` epochs from the fused weights
(FuseInit) and, as the baseline, the same shallow architecture from random init (Random) for
``2 * --epochs`` epochs: the same total budget as FuseInit's two stages (the paper trains both
until the validation accuracy settles, so neither gets fewer epochs). Random after ``--epochs``
epochs (equal retraining, unequal total) is reported beside it. Validation accuracy (MAE) after
the last epoch, mean +- std over seeds, beside the paper's
numbers for the analogous rows (different datasets and sizes: the paper's are *not*
reproduced here, they are shown as the paper's). Fig. 2 analogue: validation accuracy per epoch.

Outputs: ``<out>/fuse_init/results.json`` (saved after every finished part; ``--resume`` keeps
the parts already there when the configuration is the same), ``table.md``, ``curves_<part>.png``.
Run time: ``--quick`` (2 seeds, 5 epochs, 512 training examples) about 55 s of CPU time (measured
2 min wall on a shared, loaded 2-core machine); the default (10 seeds, 60 epochs) measured 46
min wall on a heavily loaded shared 2-core machine (conv_dense 2,425 s, conv_conv 328 s,
dense_dense 19 s; niced, with a load average of 8-15).
On digits (one input channel) the uncorrelated-channel estimator equals the joint one.
"""

from __future__ import annotations

import functools
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprune as jp
from experiments import _fuse_tables as tables
from experiments._common import (
    RunStore,
    base_parser,
    fmt_pm,
    markdown_table,
    output_dir,
    write_text,
)
from jaxprune.models import CNN, ConvLayer, DenseLayer

PAPER_INIT_STD = 0.05**0.5  # paper 001, sec. III-C: "variance 0.05"

NAME = "fuse_init"

PAPER = {  # the paper's analogous rows (its datasets), for reference only
    "conv_dense": "Table II (Fashion-MNIST) 4-layer 2-4-8-16: 0.9107 ± 0.0024; "
    "3-layer 2-4-8: FuseInit 0.9120 ± 0.0025 vs Random 0.9104 ± 0.0017",
    "conv_conv": "Table IV (speech commands) 4-layer 32-32-64-64: 0.887 ± 0.005; "
    "3-layer 32-64-64: FuseInit 0.880 ± 0.006 vs Random 0.868 ± 0.003",
    "dense_dense": "Table V (wireless positioning, MAE) 3-layer 16-128-2: 7.426 ± 0.112; "
    "2-layer 16-2: FuseInit 7.221 ± 0.336 vs Random 7.277 ± 0.472",
}


def _digits():
    """scikit-learn's digits, the library's deterministic 1,438 / 359 split."""
    return jp.data.image_dataset("digits", "train"), jp.data.image_dataset("digits", "test")


PARTS = {
    "conv_dense": dict(
        data=_digits,
        deep=CNN((ConvLayer(8), ConvLayer(16, pool=2), ConvLayer(16), DenseLayer(10, "identity"))),
        layers=("conv_2", "dense_0"),
        shallow=CNN((ConvLayer(8), ConvLayer(16, pool=2), DenseLayer(10, "identity"))),
        task="classification",
    ),
    "conv_conv": dict(
        data=_digits,
        deep=CNN((ConvLayer(8), ConvLayer(16, pool=2), DenseLayer(10, "identity"))),
        layers=("conv_0", "conv_1"),
        shallow=CNN((ConvLayer(16, kernel=5, pool=2), DenseLayer(10, "identity"))),
        task="classification",
    ),
    "dense_dense": dict(
        data=tables.positioning,
        deep=CNN((DenseLayer(16), DenseLayer(128), DenseLayer(2, "identity"))),
        layers=("dense_1", "dense_2"),
        shallow=CNN((DenseLayer(16), DenseLayer(2, "identity"))),
        task="regression",
    ),
}


def _metric(task):
    if task == "classification":
        return lambda out, y: jnp.mean(jnp.argmax(out, -1) == y)
    return lambda out, y: jnp.mean(jnp.sum(jnp.abs(out - y), -1))  # MAE of the position


@functools.cache
def _adam(lr: float):
    return optax.adam(lr)  # one object per rate: the library caches compiled programs by it


def _train(model, task, params, keys, data, val, epochs, batch, lr):
    """``(params[seeds], val metric per epoch [seeds, epochs])`` from the library's trainer."""
    metric_fn = _metric(task)
    xv, yv = val
    run = jp.training.train_epochs(
        model,
        data,
        keys=keys,
        loss="cross_entropy" if task == "classification" else "mse",
        optimizer=_adam(lr),
        epochs=epochs,
        batch_size=batch,
        partial="drop",
        params=params,
        metrics=lambda v: {"val": metric_fn(model.apply(v, xv), yv)},
        progress=False,
    )
    return run.params, run.history["val"]


def _init(model, keys, x):
    return jax.jit(jax.vmap(lambda k: model.init(k, x[:1])["params"]))(keys)


def _as_shallow(deep, shallow, fused_vars):
    """The fused variables renamed to ``shallow``'s layers (the same layers in forward order).

    ``jp.fuse`` keeps the user's names (the fused layer is stored under the first fused
    layer's name); the experiment retrains the same function written as a plain ``CNN``, whose
    random init is the baseline.
    """
    params = fused_vars["params"]
    order = [n for n in deep.layer_names() if n in params]
    out = dict(zip(shallow.layer_names(), (params[n] for n in order), strict=True))
    want = jax.eval_shape(lambda: shallow.init(jax.random.key(0), _EXAMPLE[shallow]))["params"]
    got = jax.tree.map(lambda a: a.shape, out)
    if jax.tree.map(lambda a: a.shape, want) != got:
        raise ValueError(f"fused parameters {got} do not fit {shallow}")
    return out


_EXAMPLE: dict = {}


def run_part(name, seeds, epochs, seed, batch=64, lr=3e-3, n_train=None):
    spec = PARTS[name]
    (x, y), (xv, yv) = spec["data"]()
    x, y = x[:n_train], y[:n_train]
    x, y, xv, yv = map(jnp.asarray, (x, y, xv, yv))
    deep, shallow = spec["deep"], spec["shallow"]
    _EXAMPLE[shallow] = x[:1]
    # rbg keys: XLA:CPU compiles threefry slowly (seconds per program), rbg in a fraction
    keys = jax.random.split(jax.random.key(seed, impl="rbg"), 4 * seeds).reshape(4, seeds)
    train = lambda m, p, k: _train(m, spec["task"], p, k, (x, y), (xv, yv), epochs, batch, lr)

    t0 = time.time()
    deep_params, deep_hist = train(deep, _init(deep, keys[0], x), keys[1])
    fused, mses, mses_unc, n_warn = [], [], [], 0
    for s in range(seeds):
        p = jax.tree.map(lambda a, s=s: a[s], deep_params)
        batches = [x[i : i + 256] for i in range(0, len(x), 256)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", jp.rewrites.FusionWarning)
            result = jp.fuse(deep, {"params": p}, spec["layers"], data=batches)
            q = result.variables
            mse = result.report.mse[spec["layers"]]
            q = _as_shallow(deep, shallow, q)
            if name == "conv_conv":
                unc = jp.fuse(
                    deep, {"params": p}, spec["layers"], data=batches, estimator="uncorrelated"
                )
                mse_u = unc.report.mse[spec["layers"]]
                mses_unc.append(float(mse_u))
        n_warn += len(caught)
        fused.append(q)
        mses.append(float(mse))
    fused = jax.tree.map(lambda *a: jnp.stack(a), *fused)
    _, fuse_hist = train(shallow, fused, keys[2])
    # Random gets FuseInit's total budget: deep stage + retraining, 2 x epochs
    p_rand = _init(shallow, keys[3], x)
    _, rand_hist = _train(
        shallow, spec["task"], p_rand, keys[2], (x, y), (xv, yv), 2 * epochs, batch, lr
    )
    return {
        "deep": [str(s_) for s_ in deep.layers],
        "shallow": [str(s_) for s_ in shallow.layers],
        "layers": list(spec["layers"]),
        "task": spec["task"],
        "metric": "accuracy" if spec["task"] == "classification" else "MAE",
        "deep_final": np.asarray(deep_hist[:, -1]).tolist(),
        "fuseinit_final": np.asarray(fuse_hist[:, -1]).tolist(),
        "random_final": np.asarray(rand_hist[:, -1]).tolist(),  # 2 x epochs: equal total
        "random_final_half": np.asarray(rand_hist[:, epochs - 1]).tolist(),  # epochs
        "fuseinit_curve": np.asarray(fuse_hist).tolist(),
        "random_curve": np.asarray(rand_hist).tolist(),
        "fusion_mse": mses,
        "fusion_mse_uncorrelated": mses_unc,
        "fusion_warnings": n_warn,
        "seconds": time.time() - t0,
    }


def run_table(table, seeds, epochs, seed, init_std, quick, batch=64, lr=3e-3):
    """One of Tables I-V: the successive fusions, FuseInit and Random for every row."""
    (x, y), (xv, yv) = tables.load(table, quick)
    x, y, xv, yv = map(jnp.asarray, (x, y, xv, yv))
    task = "regression" if table == "V" else "classification"
    rows = tables.rows(table)
    keys = jax.random.split(jax.random.key(seed, impl="rbg"), 3 * len(rows) * seeds)
    keys = keys.reshape(3 * len(rows), seeds)
    train = lambda m, p, k: _train(m, task, p, k, (x, y), (xv, yv), epochs, batch, lr)
    t0 = time.time()
    out, params = [], None
    for i, layers in enumerate(rows):
        net = tables.network(table, layers, init_std)
        k_init, k_rand, k_fused = keys[3 * i], keys[3 * i + 1], keys[3 * i + 2]
        rand_params, rand_hist = train(net, _init(net, k_init, x), k_rand)
        row = {
            "layers": layers,
            "random_final": np.asarray(rand_hist[:, -1]).tolist(),
            "random_curve": np.asarray(rand_hist).tolist(),
        }
        if i == 0:
            params = rand_params  # the deepest row is trained once, from random init
        else:
            fused, mses, n_warn = tables.fuse_into_next(table, rows[i - 1], params, x, init_std)
            params, hist = train(net, fused, k_fused)
            row |= {
                "fuseinit_final": np.asarray(hist[:, -1]).tolist(),
                "fuseinit_curve": np.asarray(hist).tolist(),
                "fusion_mse": mses,
                "fusion_warnings": n_warn,
            }
        out.append(row)
    return {
        "table": table,
        "data": tables.DATA[table],
        "metric": "accuracy" if task == "classification" else "MAE",
        "init_std": init_std,
        "rows": out,
        "seconds": time.time() - t0,
    }


def _tables_text(store, names) -> str:
    rows = []
    for name in names:
        res = store[name]
        t = res["table"]
        for row in res["rows"]:
            paper_f, paper_r = tables.PAPER[t][row["layers"]]
            rows.append(
                [
                    f"{t} ({res['metric']})",
                    f"{row['layers']}-layer",
                    fmt_pm(row["fuseinit_final"], 4) if "fuseinit_final" in row else "—",
                    fmt_pm(row["random_final"], 4),
                    fmt_pm(row["fusion_mse"], 3, sci=True) if "fusion_mse" in row else "—",
                    paper_f or "—",
                    paper_r,
                    res["data"],
                ]
            )
    header = [
        "table",
        "row",
        "FuseInit (measured)",
        "Random (measured)",
        "fusion MSE",
        "paper FuseInit",
        "paper Random",
        "data",
    ]
    return (
        "\n## Tables I-V: the paper's networks and successive fusions\n\n"
        "Each row after the first is fused from the previous row's trained network and "
        "retrained (FuseInit), and trained from random init (Random), each for the same epochs; "
        "the first row is the deepest network trained from random init. Kernels start "
        "N(0, init_std^2). The *paper* columns are copied from its Tables I-V (their data, "
        "their budget), not measured here.\n\n" + markdown_table(header, rows)
    )


def _width(layers) -> str:
    return "-".join(str(s.split("features=")[1].split(",")[0].rstrip(")")) for s in layers)


def _plot(path, name, res):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("fuseinit_curve", "FuseInit"), ("random_curve", "Random")):
        h = np.asarray(res[key])
        m, s = h.mean(0), h.std(0)
        # total epochs: FuseInit's retraining starts after the deep stage
        start = len(res["random_curve"][0]) - h.shape[1]
        ep = np.arange(1, h.shape[1] + 1) + start
        ax.plot(ep, m, label=label)
        ax.fill_between(ep, m - s, m + s, alpha=0.25)
    ax.set_xlabel("epoch (total, deep stage included)")
    ax.set_ylabel(f"validation {res['metric']}")
    ax.set_title(f"{name}: {_width(res['shallow'])} (fused from {_width(res['deep'])})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = base_parser(NAME, __doc__)
    parser.add_argument("--epochs", type=int, default=None, help="epochs per training stage")
    table_parts = [f"table_{t}" for t in tables.TABLES]
    parser.add_argument("--part", choices=[*PARTS, "all", *table_parts, "tables"], default="all")
    parser.add_argument(
        "--init-std",
        type=float,
        default=PAPER_INIT_STD,
        help="std of the tables' kernel initializer (the paper's: sqrt(0.05))",
    )
    args = parser.parse_args(argv)
    if not args.init_std > 0:
        parser.error(f"--init-std: expected > 0, got {args.init_std}")
    seeds = args.seeds or (2 if args.quick else 10)
    epochs = args.epochs or (5 if args.quick else 60)
    n_train = 512 if args.quick else None
    out = output_dir(args, NAME)
    parts = {"all": list(PARTS), "tables": table_parts}.get(args.part, [args.part])
    config = {
        "seeds": seeds,
        "epochs": epochs,
        "quick": args.quick,
        "seed": args.seed,
        "n_train": n_train,
    }
    # one finished part is saved as soon as it ends; --resume skips the parts already saved
    if any(p in table_parts for p in parts):
        config["init_std"] = args.init_std
    store = RunStore(out / "results.json", config, resume=args.resume, key="parts")
    summary = {"seeds": seeds, "epochs": epochs, "quick": args.quick}
    for name in parts:
        if name in store:
            continue
        if name in table_parts:
            res = run_table(name[6:], seeds, epochs, args.seed, args.init_std, args.quick)
        else:
            res = run_part(name, seeds, epochs, args.seed, n_train=n_train)
        store.put(name, res, **summary)
    rows = []
    for name in (p for p in PARTS if p in store):
        res = store[name]
        _plot(out / f"curves_{name}.png", name, res)
        digits = 3
        mse = fmt_pm(res["fusion_mse"], 3, sci=True)
        if res["fusion_mse_uncorrelated"]:
            unc = fmt_pm(res["fusion_mse_uncorrelated"], 3, sci=True)
            mse += f" (uncorrelated-channel estimator: {unc})"
        rows.append(
            [
                name,
                f"deep {_width(res['deep'])}",
                fmt_pm(res["deep_final"], digits),
                "—",
                "—",
                "",
                "",
            ]
        )
        rows.append(
            [
                name,
                f"fused {_width(res['shallow'])}",
                fmt_pm(res["fuseinit_final"], digits),
                fmt_pm(res["random_final"], digits),
                fmt_pm(res["random_final_half"], digits),
                mse,
                PAPER[name],
            ]
        )
    header = [
        "part",
        "network",
        f"FuseInit ({epochs} deep + {epochs} retrain)",
        f"Random ({2 * epochs}, equal total)",
        f"Random ({epochs})",
        "fusion MSE (Cor. 1)",
        "the paper's analogous row (its dataset, not measured here)",
    ]
    text = (
        f"# FuseInit vs random init ({seeds} seeds, {epochs} epochs per stage"
        f"{', --quick' if args.quick else ''})\n\n"
        f"FuseInit: {epochs} epochs of the deep net, fusion, {epochs} epochs of the fused "
        f"net. Random: the fused architecture from random init, {2 * epochs} epochs (the same "
        f"total budget; the 'deep' row's accuracy is FuseInit's after its first stage) and, for "
        f"reference, after {epochs} epochs. "
        "Metric: validation accuracy (classification, digits) or mean absolute error "
        "(dense_dense, generated positioning data; smaller is better). Fusion MSE: per "
        "example, summed over the fused layer's outputs (and positions). Digits have one input "
        "channel, so Theorem 2's uncorrelated-channel estimator equals the joint one there.\n\n"
        + markdown_table(header, rows)
    )
    done_tables = [p for p in table_parts if p in store]
    if done_tables:
        text += _tables_text(store, done_tables)
    write_text(out / "table.md", text)
    return out


if __name__ == "__main__":
    main()
