"""Shared plumbing for experiments: one command-line shape and one output layout.

Every experiment writes ``<out>/<name>/results.json`` (every run), ``table.md`` (this run's
numbers beside the paper's, labelled) and ``*.png`` figures, and prints where they are.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

import jaxprune as jp

__all__ = [
    "Images",
    "RunStore",
    "add_arch_dataset",
    "base_parser",
    "fmt_pm",
    "load_finished",
    "load_images",
    "markdown_table",
    "mean_std",
    "output_dir",
    "write_json",
    "write_text",
]


def base_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """Parser with the options every experiment shares: --quick, --seeds, --out, --seed."""
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments {name}",
        description=(doc or "").strip().split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="reduced size for CI and smoke tests (few seeds, capped epochs)",
    )
    parser.add_argument("--seeds", type=int, default=None, help="runs per configuration")
    parser.add_argument("--seed", type=int, default=0, help="base random seed")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results"),
        help="output root; results go to OUT/<experiment>/",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already finished in OUT/<experiment>/results.json (same config only)",
    )
    return parser


def add_arch_dataset(
    parser: argparse.ArgumentParser,
    *,
    archs: Sequence[str],
    datasets: Sequence[str],
    default_arch: str,
    default_dataset: str,
) -> argparse.ArgumentParser:
    """Adds ``--arch``, ``--dataset`` and ``--data-dir`` (the same three in every experiment).

    ``archs`` are names of :data:`experiments._recipes.ARCHS` (or the experiment's own offline
    models); ``datasets`` are :data:`jaxprune.data.IMAGE_DATASETS` names or the experiment's
    offline task. The defaults are the offline ones, so ``--quick`` and CI need no download.
    """
    parser.add_argument(
        "--arch",
        choices=list(archs),
        default=default_arch,
        help=f"architecture; its paper's recipe is the default (default: {default_arch})",
    )
    parser.add_argument(
        "--dataset",
        choices=list(datasets),
        default=default_dataset,
        help=f"dataset (TFDS name, or the offline task; default: {default_dataset})",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where TFDS keeps prepared datasets (TFDS's default when omitted)",
    )
    return parser


class Images(NamedTuple):
    """An image dataset in memory: uint8 ``(n, H, W, C)`` images, int32 labels."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    num_classes: int
    name: str


def load_images(
    args: argparse.Namespace,
    *,
    image_size: int | None = None,
    quick_train: int = 256,
    quick_test: int = 128,
) -> Images:
    """The train and test splits of ``args.dataset`` as uint8 arrays (scale them on device).

    Under ``args.quick`` only the first ``quick_train`` / ``quick_test`` records of each split
    are read (TFDS split slicing), so a quick run on real data stays small too.
    """
    name, data_dir = args.dataset, getattr(args, "data_dir", None)
    quick = getattr(args, "quick", False)
    splits = ("train", "test")
    if quick and name != "digits":
        splits = (f"train[:{quick_train}]", f"test[:{quick_test}]")
    kw = dict(dtype="uint8", image_size=image_size)
    if name != "digits":
        kw["data_dir"] = data_dir
    train = jp.data.image_dataset(name, splits[0], **kw)
    test = jp.data.image_dataset(name, splits[1], **kw)
    if quick:  # (mock TFDS data ignores split slices)
        train = (train[0][:quick_train], train[1][:quick_train])
        test = (test[0][:quick_test], test[1][:quick_test])
    classes = jp.data.image_classes(name, **({} if name == "digits" else {"data_dir": data_dir}))
    return Images(train, test, classes, name)


def output_dir(args: argparse.Namespace, name: str) -> Path:
    """Creates and returns ``args.out / name``."""
    path = Path(args.out) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(obj: Any):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def write_text(path: Path, text: str) -> Path:
    """Atomic write: a temp file in the same folder, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write_json(path: Path, obj: Any) -> Path:
    """Atomic JSON write (numpy/jax arrays become lists)."""
    return write_text(path, json.dumps(_jsonable(obj), indent=1) + "\n")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation; ``nan`` for no values."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


def fmt_pm(values: Sequence[float], digits: int = 2, sci: bool = False) -> str:
    """``mean ± std`` (or ``—`` when empty; a single value without ±)."""
    v = list(values)
    if not v:
        return "—"
    m, s = mean_std(v)
    f = (lambda z: f"{z:.{digits}e}") if sci else (lambda z: f"{z:.{digits}f}")
    return f(m) if len(v) == 1 else f"{f(m)} ± {f(s)}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = [
        "| " + " | ".join(map(str, header)) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _normalized(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, arrays lists)."""
    return json.loads(json.dumps(_jsonable(obj)))


def load_finished(path: Path, config: dict, key: str = "models") -> dict:
    """The ``key`` entries of a previous ``results.json`` written with the same ``config``.

    Raises:
        ValueError: if the file exists but was written with another configuration (so a resumed
            run never mixes settings), or is not valid JSON (a file edited by hand or cut short
            by something other than our atomic writes).
    """
    path = Path(path)
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"--resume: {path} is not valid JSON ({e}); move it away") from e
    if saved.get("config") != _normalized(config):
        raise ValueError(
            f"--resume: {path} was written with config {saved.get('config')}, "
            f"not {_normalized(config)}"
        )
    return saved.get(key, {})


class RunStore:
    """``results.json`` of one experiment: its config and every finished run, saved as they end.

    Each finished run (a cell of the experiment: one model, one method x setting, with all its
    vmapped seeds) is added with :meth:`put`, which rewrites the file atomically (temp file +
    rename), so a kill at any moment leaves the last complete file and loses at most the run in
    progress. With ``resume=True`` the runs already in a file written with the same ``config``
    are loaded and :meth:`__contains__` lets the experiment skip them; a different config raises
    ``ValueError``. Without ``resume`` an existing file is replaced on the first :meth:`put`.
    The file lists the runs in the order they were put, or with ``order`` (run ids) in that
    order, the others after them (runs that finish in any order, e.g. in threads, then give
    the same file).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> store = RunStore(d / "results.json", {"seeds": 2}, resume=False)
        >>> store.put("a", {"acc": [0.5, 0.75]})
        >>> "a" in RunStore(d / "results.json", {"seeds": 2}, resume=True)
        True
    """

    def __init__(self, path: Path, config: dict, *, resume: bool, key: str = "runs", order=None):
        self.path, self.config, self.key = Path(path), _normalized(config), key
        self.order = {str(r): i for i, r in enumerate(order or ())}
        self.runs: dict[str, Any] = load_finished(self.path, config, key) if resume else {}
        self.resumed = sorted(self.runs)

    def __contains__(self, run_id: str) -> bool:
        return str(run_id) in self.runs

    def __getitem__(self, run_id: str) -> Any:
        return self.runs[str(run_id)]

    def put(self, run_id: str, record: Any, **extra: Any) -> None:
        """Records a finished run and saves the file (``extra``: other top-level entries)."""
        self.runs[str(run_id)] = _normalized(record)
        if self.order:
            last = len(self.order)
            self.runs = dict(sorted(self.runs.items(), key=lambda kv: self.order.get(kv[0], last)))
        # the devices a vmapped fit's seeds were split over (they set its float rounding)
        devices = {"backend": jax.default_backend(), "devices": jax.device_count()}
        write_json(self.path, {"config": self.config, self.key: self.runs, **extra, **devices})
