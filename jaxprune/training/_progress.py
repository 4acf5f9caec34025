"""Progress of a long loop: a tqdm bar on a terminal, plain periodic log lines otherwise."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """``update(n, **info)`` after each chunk; ``close()`` at the end.

    On a terminal (``sys.stderr.isatty()``) it draws a tqdm bar. Otherwise (a redirected run, a
    CI log) it prints one line to stderr every ``interval`` seconds and one at the end, e.g.
    ``fit: epoch 40, 12/30 runs active, 3.2 s``.
    """

    def __init__(self, desc: str, total: int | None, enabled: bool, interval: float = 30.0):
        self.desc, self.total, self.done = desc, total, 0
        self.enabled, self.interval = enabled, interval
        self.start = self.last = time.perf_counter()
        self.info: dict = {}
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="epoch", desc=desc, leave=False, mininterval=2.0)

    def line(self) -> str:
        total = f"/{self.total}" if self.total else ""
        extra = "".join(f", {k} {v}" for k, v in self.info.items())
        seconds = time.perf_counter() - self.start
        return f"{self.desc}: epoch {self.done}{total}{extra}, {seconds:.1f} s"

    def update(self, n: int, **info) -> None:
        self.done += n
        self.info.update(info)
        if self.bar is not None:
            self.bar.update(n)
            if info:
                self.bar.set_postfix(info, refresh=False)
        elif self.enabled and time.perf_counter() - self.last >= self.interval:
            self.last = time.perf_counter()
            print(self.line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(self.line() + " (done)", file=sys.stderr, flush=True)
