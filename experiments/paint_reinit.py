"""Paper 000, Table 3 and Fig. 8: in-training partial reinitialization on the six-pointed star.

Command (full: 3 settings x 30 seeds, 64x64 star; 62 s on a 2-core CPU with the settings side
by side, 84 s one after another (``--jobs 1``: 16, 26 and 32 s per setting), compilation
included):

    python -m experiments paint_reinit

Quick (CI): ``python -m experiments paint_reinit --quick`` (3 seeds, 32x32 image, the smallest
the side count is exact at, phases capped at 15 epochs; < 60 s, mostly compilation).

Re-render ``table.md`` and ``sides_histogram.png`` from a saved ``results.json`` without
training: ``python -m experiments paint_reinit --render-only`` (``--out`` as for the run).

Protocol (paper 000, sec. 4.1-4.2): one ReLU layer of 30, 15 or 10 units followed by three
linear layers of the same width and a sigmoid output (``MLP(hidden=(w,),
linear_after=((w, w, w),))``), trained with 0, 1 or 2 reinitialization rounds
(:func:`jaxprune.training.train_with_reinit`: steps 1-14, patience 20, sub-training patience 10,
ablation threshold 1.5, redundancy 0.99, revert 1.25), MSE, batch 128, Adam (Keras' default
lr 1e-3). All seeds of a setting run as one vmapped program. After the final training we paint
the star, threshold the prediction at 0.5 and count the sides of the painted shape
(:func:`jaxprune.analysis.polygon_sides`, sides on the image frame not counted). *Active* units
are the units whose ablation multiplies the final loss by >= 1.5. The paper does not give its
image size (we use 64x64) or how it counted sides.

*Sides per active unit* is a run's # sides / # active units. A run with no active unit has no
ratio (it paints a blank or, with units below the activity threshold, a few sides); the paper
does not say how it averaged those, so the table gives both: the mean over the runs with >= 1
active unit (with their number) and the mean over all runs with such a run counted as 0
(:func:`sides_per_active_unit`). They differ only when some run has no active unit (0/30).

Run time: the paper reports seconds per Keras run (90-115 s). We report the wall time of all
seeds of a setting together (compilation included) and its per-run share. The settings train
at the same time, one thread each (``--jobs``, default: all; ``experiments/_side_by_side.py``),
so their wall times overlap and include waiting for the cores; ``--jobs 1`` trains them in turn.

Outputs: ``results.json`` (every run, saved after each setting; ``--resume`` keeps the settings
already there when the configuration is the same), ``table.md`` (this run beside the paper's
Table 3), ``sides_histogram.png`` (Fig. 8), ``paintings.png`` (best and worst painting per
setting).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import matplotlib
import numpy as np
import optax

import jaxprune as jp
from experiments import _common as C
from experiments._side_by_side import add_jobs_argument, train_side_by_side

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAME = "paint_reinit"

SETTINGS = ((0, 30), (1, 15), (2, 10))  # (reinitializations, ReLU units)

# The paper's Table 3, as printed (not measured here): sides, active nodes, sides per active
# node, loss, run time (s).
PAPER_TABLE3 = {
    (0, 30): ("7 ± 4", "7 ± 4", "0.8 ± 0.5", "(8 ± 7)e-2", "90 ± 30"),
    (1, 15): ("11 ± 2", "10 ± 2", "1.1 ± 0.2", "(2.3 ± 1.5)e-2", "115 ± 10"),
    (2, 10): ("10 ± 2", "8 ± 1", "1.3 ± 0.2", "(2.7 ± 1.5)e-2", "114 ± 13"),
}


def make_model(width: int):
    return jp.models.MLP(hidden=(width,), linear_after=((width, width, width),))


@functools.cache
def _adam(lr: float):
    """One optimizer object per lr: the compiled programs are cached by (model, optimizer)."""
    return optax.adam(lr)


def run_setting(reinits: int, width: int, keys, data, size: int, args) -> dict:
    model = make_model(width)
    res = jp.training.train_with_reinit(
        model,
        data,
        keys=keys,
        optimizer=_adam(args.lr),
        loss="mse",
        reinits=reinits,
        batch_size=128,
        max_epochs=args.max_epochs,
    )
    x, _ = data
    preds = jax.vmap(lambda p: model.apply({"params": p}, x))(res.params)
    ratios = jax.vmap(lambda p: jp.analysis.unit_ablation(model, p, data, "mse"))(res.params)
    active = np.asarray(ratios["relu_0"] >= jp.analysis.ACTIVE_THRESHOLD)
    runs = []
    for k in range(len(keys)):
        sides = jp.analysis.polygon_sides(jp.analysis.painted_image(preds[k], size))
        n_active = int(active[k].sum())
        runs.append(
            {
                "seed": k,
                "sides": sides,
                "active_units": n_active,
                "kept_units": int(np.asarray(res.keep["relu_0"][k]).sum()),
                "sides_per_active_unit": sides / n_active if n_active else None,
                "loss": float(res.loss[k]),
                "epochs": int(res.epochs[k]),
                "reverted": np.asarray(res.history["reverted"][k]).tolist(),
                "reinitialized": np.asarray(res.history["reinitialized"][k]).tolist(),
                "baseline": np.asarray(res.history["baseline"][k]).tolist(),
                "sub_loss": np.asarray(res.history["sub_loss"][k]).tolist(),
            }
        )
    losses = [r["loss"] for r in runs]
    best, worst = int(np.argmin(losses)), int(np.argmax(losses))
    return {
        "reinits": reinits,
        "width": width,
        "wall_seconds_all_runs": res.seconds,
        "runs": runs,
        # the predicted images of the best and the worst run, for paintings.png
        "paintings": {
            "best": {"seed": best, "prediction": np.asarray(preds[best, :, 0])},
            "worst": {"seed": worst, "prediction": np.asarray(preds[worst, :, 0])},
        },
    }


def sides_per_active_unit(runs: list[dict]) -> tuple[list[float], list[float]]:
    """The two conventions for Table 3's "sides per active unit" of a setting's runs.

    Returns ``(active_only, zero_counted)``: ``sides / active units`` of the runs with at least
    one active unit (runs with none have no ratio and are left out), and of every run with a run
    without active units counted as 0 (whatever it paints with its sub-threshold units).

    >>> sides_per_active_unit([{"sides": 6, "active_units": 4}, {"sides": 0, "active_units": 0}])
    ([1.5], [1.5, 0.0])
    """
    ratios = [r["sides"] / r["active_units"] if r["active_units"] else None for r in runs]
    return [q for q in ratios if q is not None], [q or 0.0 for q in ratios]


HEADER = [
    "reinits / units",
    "# sides",
    "# active units",
    "sides per active unit: runs with >= 1 active unit (# runs)",
    "sides per active unit: 0 active counted as 0",
    "loss",
    "run time s: all seeds (per run)",
    "# star (12 sides)",
    "# blank",
]


def _side_by_side_note(records: list[dict]) -> str:
    n = max(rec.get("side_by_side", 1) for rec in records)
    if n == 1:
        return ""
    return (
        f"\nUp to {n} settings trained at the same time (one thread each): their run times "
        "overlap and include waiting for the cores.\n"
    )


def _table(records: list[dict]) -> str:
    rows = []
    for rec in records:
        runs, n = rec["runs"], len(rec["runs"])
        active_only, zero_counted = sides_per_active_unit(runs)
        rows.append(
            [
                f"{rec['reinits']} / {rec['width']}",
                C.fmt_pm([r["sides"] for r in runs], 1),
                C.fmt_pm([r["active_units"] for r in runs], 1),
                f"{C.fmt_pm(active_only, 2)} ({len(active_only)})",
                C.fmt_pm(zero_counted, 2),
                C.fmt_pm([r["loss"] for r in runs], 1, sci=True),
                f"{rec['wall_seconds_all_runs']:.1f} ({rec['wall_seconds_all_runs'] / n:.2f})",
                sum(r["sides"] == 12 for r in runs),
                sum(r["sides"] == 0 for r in runs),
            ]
        )
    # The paper prints one "sides per active node" column without saying how runs with no
    # active node count: it goes under both conventions here.
    paper = [
        [f"{r} / {w}", *PAPER_TABLE3[(r, w)][:3], PAPER_TABLE3[(r, w)][2]]
        + [PAPER_TABLE3[(r, w)][3], f"{PAPER_TABLE3[(r, w)][4]} per run", "—", "—"]
        for r, w in SETTINGS
    ]
    return (
        "Sides per active unit: a run's number of sides divided by its number of active units,\n"
        "averaged over the runs with at least one active unit (how many in brackets), and over\n"
        "all runs with a run without active units counted as 0.\n\n"
        "## This run (measured)\n\n"
        + C.markdown_table(HEADER, rows)
        + _side_by_side_note(records)
        + "\n## Paper 000, Table 3 (as printed in the paper, not measured here)\n\n"
        + "The paper's one column (0.8, 1.1, 1.3) is shown under both conventions.\n\n"
        + C.markdown_table(HEADER, paper)
    )


def render(out) -> None:
    """Rewrites ``table.md`` and ``sides_histogram.png`` of ``out`` from its ``results.json``
    (no training): ``python -m experiments paint_reinit --render-only --out OUT``. Also reads
    the older file layout that stored the settings as a list."""
    saved = json.loads((Path(out) / "results.json").read_text())
    settings = saved["settings"]
    records = list(settings.values()) if isinstance(settings, dict) else list(settings)
    records.sort(key=lambda r: (r["reinits"], -r["width"]))
    C.write_text(Path(out) / "table.md", f"# {NAME}: paper 000, Table 3\n\n" + _table(records))
    _histogram(records, Path(out) / "sides_histogram.png")


def _histogram(records: list[dict], path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    colors = ("tab:red", "tab:blue", "tab:green")
    top = max(max(r["sides"] for r in rec["runs"]) for rec in records)
    bins = np.arange(top + 2)
    width = 0.8 / len(records)
    for i, rec in enumerate(records):
        counts = np.bincount([r["sides"] for r in rec["runs"]], minlength=len(bins))[: len(bins)]
        ax.bar(
            bins + (i - 1) * width,
            counts,
            width,
            color=colors[i % 3],
            label=f"{rec['width']} units, {rec['reinits']} reinit",
        )
    ax.set_xlabel("# sides of the painted shape")
    ax.set_ylabel("# runs")
    ax.set_xticks(bins)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _paintings(records: list[dict], target, size: int, path) -> None:
    fig, axes = plt.subplots(2, len(records) + 1, figsize=(3 * (len(records) + 1), 6.2))
    for row in range(2):
        axes[row, 0].imshow(target.reshape(size, size), origin="lower", vmin=0, vmax=1)
        axes[row, 0].set_title("target (star)")
    for j, rec in enumerate(records, start=1):
        for row, which in enumerate(("best", "worst")):
            painting = rec["paintings"][which]
            run = rec["runs"][painting["seed"]]
            ax = axes[row, j]
            image = np.asarray(painting["prediction"]).reshape(size, size)
            ax.imshow(image, origin="lower", vmin=0, vmax=1)
            ax.set_title(
                f"{which} {rec['width']}u/{rec['reinits']}r: "
                f"{run['sides']} sides, {run['active_units']} act.\nloss {run['loss']:.1e}",
                fontsize=8,
            )
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = C.base_parser(NAME, __doc__)
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"image side in pixels, >= {jp.analysis.POLYGON_MIN_SIZE} (64; --quick: 32)",
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="epoch cap per training phase (default 100,000; --quick: 15)",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        default=[f"{r}/{w}" for r, w in SETTINGS],
        help="reinits/units pairs to run (default: 0/30 1/15 2/10, the paper's)",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite table.md and sides_histogram.png from OUT/paint_reinit/results.json",
    )
    add_jobs_argument(parser, "settings")
    args = parser.parse_args(argv)
    if args.render_only:
        out = C.output_dir(args, NAME)
        render(out)
        return out
    try:
        settings = [tuple(int(v) for v in s.split("/")) for s in args.settings]
        if any(len(s) != 2 or s[0] < 0 or s[1] < 1 for s in settings):
            raise ValueError
    except ValueError:
        parser.error(f"--settings: expected REINITS/UNITS pairs like 1/15, got {args.settings}")
    n_seeds = args.seeds or (3 if args.quick else 30)
    size = args.size or (32 if args.quick else 64)
    if size < jp.analysis.POLYGON_MIN_SIZE:
        parser.error(
            f"--size: the side count needs >= {jp.analysis.POLYGON_MIN_SIZE} px, got {size}"
        )
    args.max_epochs = args.max_epochs or (15 if args.quick else 100_000)
    out = C.output_dir(args, NAME)
    data = jp.data.paint("star", size=size)
    keys = jax.random.split(jax.random.key(args.seed), n_seeds)
    config = {
        "seeds": n_seeds,
        "size": size,
        "lr": args.lr,
        "max_epochs": args.max_epochs,
        "seed": args.seed,
        "quick": args.quick,
    }
    # one setting (all its seeds) is saved as soon as it ends; --resume skips those saved
    names = [f"{reinits}/{width}" for reinits, width in settings]
    store = C.RunStore(
        out / "results.json", config, resume=args.resume, key="settings", order=names
    )

    def train(name, alone):
        reinits, width = (int(v) for v in name.split("/"))
        return run_setting(reinits, width, keys, data, size, args)

    def report(name, record):
        if not args.no_progress:
            wall = record["wall_seconds_all_runs"]
            print(f"{record['width']} units / {record['reinits']} reinits: {wall:.1f} s")

    todo = [name for name in names if name not in store]
    train_side_by_side(todo, train, store, jobs=args.jobs, report=report)
    render(out)
    records = sorted(store.runs.values(), key=lambda r: (r["reinits"], -r["width"]))
    _paintings(records, data[1], size, out / "paintings.png")
    return out


if __name__ == "__main__":
    print(main())
