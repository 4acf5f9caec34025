"""Table and figures of ``reinit_scnn``: accuracies beside the paper's, margins, sharpness."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments._common import fmt_pm, markdown_table, mean_std, write_text  # noqa: E402

LABELS = {"bl": "BL", "welsr": "WELSR", "dsd": "DSD", "wels": "WELS", "fc": "FC", "lw": "LW"}
# Paper 002, Table 6 (no augmentation, no dropout), test accuracy [%] of each architecture
# on FMNIST and CIFAR-10 (224x224 images), beside this run's numbers as a reference.
PAPER_TABLE6 = {
    "scnn": {
        "FMNIST": {"bl": 91.8, "welsr": 91.7, "dsd": 91.7, "wels": 91.7, "fc": 91.8, "lw": 92.1},
        "CIFAR10": {"bl": 72.2, "welsr": 75.1, "dsd": 74.5, "wels": 75.9, "fc": 74.8, "lw": 75.9},
    },
    "vgg16": {
        "FMNIST": {"bl": 92.4, "welsr": 92.6, "dsd": 92.4, "wels": 92.6, "fc": 92.7, "lw": 92.5},
        "CIFAR10": {"bl": 76.8, "welsr": 79.3, "dsd": 78.6, "wels": 80.8, "fc": 77.4, "lw": 81.4},
    },
    "mobilenet": {
        "FMNIST": {"bl": 92.2, "welsr": 91.7, "dsd": 91.8, "wels": 91.9, "fc": 91.9, "lw": 92.6},
        "CIFAR10": {"bl": 77.7, "welsr": 77.7, "dsd": 78.7, "wels": 79.8, "fc": 79.3, "lw": 83.6},
    },
    "resnet50": {
        "FMNIST": {"bl": 89.9, "welsr": 89.7, "dsd": 89.9, "wels": 90.0, "fc": 90.1, "lw": 90.2},
        "CIFAR10": {"bl": 68.8, "welsr": 70.4, "dsd": 71.2, "wels": 71.0, "fc": 69.2, "lw": 70.2},
    },
}


def _head_ratio(records: dict, method: str) -> str:
    if "bl" not in records:
        return "—"
    base = np.mean(records["bl"]["head_product"])
    return fmt_pm(np.asarray(records[method]["head_product"]) / base, 2)


def table(records: dict, config: dict) -> str:
    """``table.md``: this run's numbers per method, the paper's Table 6 rows of the arch beside."""
    arch = config.get("arch", "scnn")
    paper = PAPER_TABLE6[arch]
    sigmas = list(config["sigmas"])
    j = sigmas.index(0.01) if 0.01 in sigmas else len(sigmas) - 1
    rows = []
    for m, r in records.items():
        steps = np.asarray(r["steps"]).sum(-1)
        rows.append(
            [
                LABELS[m],
                fmt_pm(r["test_acc"], 1),
                fmt_pm(r["train_acc"], 1),
                fmt_pm(steps, 0),
                fmt_pm([mg[0] for mg in r["margins"]], 3),
                fmt_pm([li[j] for li in r["loss_increase"]], 3),  # "—" without sharpness
                _head_ratio(records, m),
                *(f"{paper[d][m]:.1f}" for d in paper),
            ]
        )
    header = [
        "method",
        "test acc [%]",
        "train acc [%]",
        "steps (all rounds)",
        "smallest margin",
        f"loss increase, sigma={sigmas[j]}",
        "head product / BL",
        *(f"paper Table 6: {arch} {d}" for d in paper),
    ]
    return (
        f"# Paper 002, {arch} with reinitialization methods ({config['dataset']})\n\n"
        f"This run: {config['dataset']}, {config['seeds']} seeds, {config['rounds']} rounds of "
        f"at most {config['steps_per_round']} steps with early stopping (patience "
        f"{config['patience']} epochs), mean ± std over seeds; model `{config['model']}`. "
        f"The last two columns are copied from the paper's Table 6 ({arch}, no augmentation, "
        "no dropout, FMNIST and CIFAR-10 at 224x224; *different datasets* unless this run's "
        "is one of them, and then a different budget): a reference, not this run's numbers. "
        "Margins: smallest softmax margin on the training set (Fig. 6); loss increase: "
        "training loss under N(0, sigma^2) parameter noise minus the trained loss (Fig. 5); "
        "head product: ||input to head|| x ||head||_F over BL's mean (App. D).\n\n"
        + markdown_table(header, rows)
    )


def _figure_margins(records: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, (m, r) in enumerate(records.items()):
        mg = np.asarray(r["margins"])
        ax.plot(mg.mean(0), color=f"C{i}", label=LABELS[m])
        if len(mg) > 1:
            lo, hi = mg.min(0), mg.max(0)
            ax.fill_between(np.arange(mg.shape[1]), lo, hi, color=f"C{i}", alpha=0.12)
    ax.set_xlabel("rank among the training examples (smallest first)")
    ax.set_ylabel("softmax margin")
    ax.set_title("smallest training margins (cf. paper Fig. 6); band: min-max over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _figure_sharpness(records: dict, sigmas, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (m, r) in enumerate(records.items()):
        for ax, key in zip(axes, ("loss_increase", "accuracy_drop"), strict=True):
            v = np.asarray(r[key])
            stats = [mean_std(v[:, j]) for j in range(v.shape[1])]
            ax.errorbar(
                sigmas,
                [s[0] for s in stats],
                yerr=[s[1] for s in stats],
                marker="o",
                color=f"C{i}",
                label=LABELS[m],
                capsize=2,
            )
    axes[0].set_ylabel("training loss increase")
    axes[1].set_ylabel("training accuracy drop")
    for ax in axes:
        ax.set_xlabel("noise sigma")
        ax.legend(fontsize=8)
    fig.suptitle("sharpness under N(0, sigma^2) parameter noise (cf. paper Fig. 5)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(out: Path, records: dict, config: dict) -> None:
    """Writes ``table.md``, ``margins.png`` and (with sharpness data) ``sharpness.png``."""
    write_text(out / "table.md", table(records, config))
    if records:
        _figure_margins(records, out / "margins.png")
        if all(r["loss_increase"] for r in records.values()):
            _figure_sharpness(records, list(config["sigmas"]), out / "sharpness.png")
