"""``python -m experiments <name> [options]``: one command line for every experiment."""

from __future__ import annotations

import importlib
import os
import sys


def use_every_core() -> None:
    """On CPU, one XLA host device per core, so ``fit`` shards the seeds over all of them.

    XLA:CPU runs one program on one core for layers this small; with a device per core the
    vmapped seeds of a fit run in parallel (Table 1 of paper 000: 58 -> 43 s on 2 cores). Left
    alone when ``XLA_FLAGS`` already names a device count, or when JAX has started a backend
    (the flag is read then). Float rounding of a vmapped fit depends on how the seeds are
    split, so the committed results name the device count they were made with.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags or "jax" in sys.modules:
        return
    count = f"--xla_force_host_platform_device_count={os.cpu_count() or 1}"
    os.environ["XLA_FLAGS"] = f"{flags} {count}".strip()


# name -> (module, one-line description); each module has main(argv) -> output folder.
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "paint_collapse": (
        "experiments.paint_collapse",
        "paper 000 Tables 1-2: collapsible linear layers on the painted square",
    ),
    "linearize": (
        "experiments.linearize",
        "paper 004: PReLU linearization, APL/NAPL, mask transfer, nonlinear advantage",
    ),
    "connectivity": (
        "experiments.connectivity",
        "paper 003 Table 1: masks and sign flips trained over fixed random weights",
    ),
    "connectivity_p_sweep": (
        "experiments.connectivity_p_sweep",
        "paper 003 sec. 2.4, Fig. 4: free pruning over sign-imbalanced weights (p sweep)",
    ),
    "fuse_init": (
        "experiments.fuse_init",
        "paper 001 Tables I-V, Fig. 2: FuseInit (fuse, retrain) vs random init",
    ),
    "paint_reinit": (
        "experiments.paint_reinit",
        "paper 000 Table 3, Fig. 8: in-training partial reinitialization on the star",
    ),
    "reinit_synthetic": (
        "experiments.reinit_synthetic",
        "paper 002 Table 1: BL/WELSR/DSD/WELS/FC/LW on the synthetic task",
    ),
    "reinit_l2": (
        "experiments.reinit_l2",
        "paper 002 App. A Table 4: L2 penalty x baseline/rescaling/LW, 100 seeds",
    ),
    "reinit_scnn": (
        "experiments.reinit_scnn",
        "paper 002 sec. 3-4: scnn with BL and the reinit methods, margins and sharpness",
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in EXPERIMENTS:
        print("usage: python -m experiments <name> [--quick] [--seeds N] [--out DIR] [...]\n")
        print("experiments:")
        for name, (_, desc) in EXPERIMENTS.items():
            print(f"  {name:24s} {desc}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown experiment {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    use_every_core()
    module = importlib.import_module(EXPERIMENTS[argv[0]][0])
    out = module.main(argv[1:])
    print(f"outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
