"""Independent cells of an experiment (models, settings) trained at the same time, in threads.

Each cell of ``paint_collapse`` or ``paint_reinit`` is its own ``fit`` of a few tiny models.
Such a fit spends part of its time with the cores half idle: compiling (one core), in host
work between chunks, and in its last phase, when the few runs still training are too few to
fill every device. Several cells side by side fill those gaps: the compiled programs run
outside the Python interpreter, so threads overlap. A cell's numbers do not depend on what
runs beside it (the same programs on the same inputs): side by side and one after another give
the same results, bit for bit (tested on both experiments' quick runs; their full runs also
agreed). What changes is a cell's wall time, which then includes waiting for the cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["add_jobs_argument", "train_side_by_side"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of cells, got {text!r}")
    return value


def add_jobs_argument(parser: argparse.ArgumentParser, cells: str) -> None:
    """Adds ``--jobs N``: how many of the experiment's ``cells`` train at the same time."""
    parser.add_argument(
        "--jobs",
        type=_positive,
        default=None,
        help=f"{cells} trained at the same time, one thread each (default: all; 1: in turn)",
    )


def train_side_by_side(
    cells: Sequence,
    train: Callable[[Any, bool], Any],
    store,
    *,
    jobs: int | None,
    report: Callable[[Any, Any], None] | None = None,
) -> None:
    """``store.put(cell, train(cell, alone))`` for every cell, ``jobs`` cells at a time.

    Args:
      cells: the cells to train, longest first (a long cell started last would train alone).
      train: ``train(cell, alone) -> record``; ``alone`` is True when no other cell trains
        beside it (it may then draw its own progress bar).
      store: a :class:`~experiments._common.RunStore`; each record (a dict) is put as soon as
        its cell ends (in the calling thread), so a killed run keeps every finished cell, with
        ``"side_by_side"``: how many cells trained at the same time (its wall time includes
        waiting for the others when more than 1).
      jobs: cells at a time (None: all of them; 1: one after another, in ``cells`` order).
      report: optional ``report(cell, record)`` after each cell is stored.

    An exception in one cell cancels the cells not yet started and is raised once the running
    ones end.
    """
    n = max(1, min(jobs or len(cells), len(cells)))

    def put(cell, record):
        store.put(cell, {**record, "side_by_side": n})
        if report is not None:
            report(cell, store[cell])

    if n == 1:
        for cell in cells:
            put(cell, train(cell, True))
        return
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        futures = {pool.submit(train, cell, False): cell for cell in cells}
        try:
            for done in concurrent.futures.as_completed(futures):
                put(futures[done], done.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
