"""``python -m benchmarks [--quick]``: run every benchmark; each writes its JSON, then one
combined ``benchmarks/results/all.json`` with the machine info and JAX version."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from benchmarks._util import write

BENCHMARKS = ["bench_fit", "bench_step"]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    combined = {}
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main(argv)
        suffix = "_quick" if "--quick" in argv else ""
        path = Path(__file__).parent / "results" / f"{name}{suffix}.json"
        combined[name] = json.loads(path.read_text())
    print(write("all" + ("_quick" if "--quick" in argv else ""), {"benchmarks": combined}))


if __name__ == "__main__":
    main()
