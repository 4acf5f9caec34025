"""``python -m benchmarks [--quick]``: run every benchmark, then write one combined
``benchmarks/results/all[_quick].json`` with the machine info and JAX version.

Each benchmark is a module with ``main()`` that parses its own command line and writes JSON;
this runner gives each its arguments (full or quick) and an output path.
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
from pathlib import Path

from benchmarks._util import write

RESULTS = Path(__file__).parent / "results"

# name -> (full arguments, quick arguments); "{out}" is replaced by the JSON path to write.
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "bench_fit": ([], ["--quick"]),
    "bench_step": ([], ["--quick"]),
    "bench_ablation": (["--out", "{dir}"], ["--quick", "--out", "{dir}"]),
    "bench_reinit": (["--out", "{dir}"], ["--quick", "--out", "{dir}"]),
    "bench_rounds": (["--out", "{dir}"], ["--quick", "--out", "{dir}"]),
    "bench_vs_torch": (["--out", "{dir}"], ["--quick", "--out", "{dir}"]),
    "cpu_convs": (["--out", "{dir}"], ["--quick", "--out", "{dir}"]),
    "connectivity_step": (["--out", "{out}"], ["--rounds", "3", "--out", "{out}"]),
    "fuse_dense": (
        ["--width", "1024", "--samples", "100000", "--out", "{out}"],
        ["--width", "256", "--samples", "20000", "--no-naive", "--out", "{out}"],
    ),
    "path_length": (["--out", "{out}"], ["--out", "{out}"]),
    "trace_graph": ([], ["--repeats", "1", "--out", "{dir}"]),
    "trace_transformer": (
        ["--repeats", "7", "--batch", "1", "--tokens", "64"],
        ["--quick", "--repeats", "1", "--out", "{dir}"],
    ),
    "prune_resnet": ([], ["--batch", "16", "--out", "prune_resnet_quick"]),
    "importance_scores": (["--out", "{dir}"], ["--quick", "--out", "{dir}"]),
}


def _run(name: str, args: list[str], tmp: Path, quick: bool) -> dict:
    out = tmp / f"{name}.json"
    argv = [a.replace("{out}", str(out)).replace("{dir}", str(tmp)) for a in args]
    module = importlib.import_module(f"benchmarks.{name}")
    saved, sys.argv = sys.argv, [name, *argv]
    try:
        module.main(argv) if module.main.__code__.co_argcount else module.main()
    finally:
        sys.argv = saved
    for candidate in (out, RESULTS / f"{name}{'_quick' if quick else ''}.json"):
        if candidate.exists():
            return json.loads(candidate.read_text())
    return {"error": "no JSON written"}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    quick = "--quick" in argv
    combined = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (full, short) in BENCHMARKS.items():
            print(f"== {name}", flush=True)
            combined[name] = _run(name, short if quick else full, Path(tmp), quick)
    print(write("all" + ("_quick" if quick else ""), {"benchmarks": combined}))


if __name__ == "__main__":
    main()
