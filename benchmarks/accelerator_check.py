"""A few minutes' slice of each paper's headline experiment, timed on one accelerator.

    python -m benchmarks.accelerator_check            # the real networks and batch sizes
    python -m benchmarks.accelerator_check --quick    # tiny stand-ins (a CPU check, run in CI)
    python -m benchmarks.accelerator_check --only 004_resnet56_short 002_vgg16

Each slice trains the network of a headline experiment with that paper's optimizer on
synthetic data of the real shapes (a class-conditional mean image plus Gaussian noise, so the
loss can fall; held on the device) through the library's ``jp.training.train_epochs``:
``--epochs`` short epochs of ``--steps`` steps, compiled and run once (the loss per epoch must
fall), then the same again from where it stopped, timed (the steady step time). Slices:

* ``004_resnet56_short`` / ``004_resnet56_noshort``: paper 004 Fig. 3's ResNet-56 v2 (option
  A) with and without shortcuts, 32x32x3, batch 256, SGD 0.1 momentum 0.9, weight decay 1e-4;
  then the post-training step of the linearization (ReLUs swapped for PReLUs,
  ``slope_sparsity`` in target mode) timed the same way.
* ``002_vgg16`` / ``002_mobilenet`` / ``002_resnet50``: paper 002 Table 6's ImageNet-size
  networks at 224x224x3, batch 256, SGD 0.003 momentum 0.9 (sec. 3).
* ``001_table1``: paper 001 Table I's conv-dense network (6 conv layers), CIFAR shapes,
  batch 128, Adam 1e-3.
* ``003_conv6``: paper 003's Conv6 with masks trained over fixed weights (``train_scores``),
  CIFAR shapes, batch 60, Adam 1e-3.

Writes ``benchmarks/results/accelerator_check[_quick].json``: per slice the step time (s),
images/s, compile-and-first-run time, the peak device memory
(``jax.local_devices()[0].memory_stats()["peak_bytes_in_use"]``, cumulative over the process,
``null`` where the backend keeps no statistics, e.g. CPU), the per-epoch losses of the first
run and whether they fell; plus the machine. The slices together are meant to stay under 8
minutes on one current GPU (each is a few dozen steps and one or two compiles; not yet
measured on one); ``--max-minutes`` (default 8) starts no further slice past that budget and
lists the ones skipped. The images/s are what the experiments' cost estimates should be
recomputed from.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import optax

import jaxprune as jp
from benchmarks._util import write


@dataclass(frozen=True)
class Slice:
    paper: str
    build: Callable[[bool], object]  # quick -> model
    shape: tuple[int, int, int]
    classes: int
    batch: int
    optimizer: Callable[[], optax.GradientTransformation]
    linearize: bool = False  # also time paper 004's post-training step
    scores: bool = False  # paper 003: train the mask scores only


def _sgd(lr: float, wd: float = 0.0):
    tx = optax.sgd(lr, momentum=0.9)
    return (lambda: optax.chain(optax.add_decayed_weights(wd), tx)) if wd else (lambda: tx)


def _resnet56(residual: bool):
    return lambda quick: jp.models.CifarResNet(
        depth=8 if quick else 56, version=2, shortcut="A", residual=residual
    )


SLICES: dict[str, Slice] = {
    "004_resnet56_short": Slice(
        "004 Fig. 3", _resnet56(True), (32, 32, 3), 10, 256, _sgd(0.1, 1e-4), linearize=True
    ),
    "004_resnet56_noshort": Slice(
        "004 Fig. 3", _resnet56(False), (32, 32, 3), 10, 256, _sgd(0.1, 1e-4), linearize=True
    ),
    "002_vgg16": Slice(
        "002 Table 6",
        lambda q: jp.models.VGG16(num_classes=10, **({"width": 1 / 16, "dense": 32} if q else {})),
        (224, 224, 3),
        10,
        256,
        _sgd(0.003),
    ),  # fmt: skip
    "002_mobilenet": Slice(
        "002 Table 6",
        lambda q: jp.models.MobileNet(num_classes=10, alpha=0.25 if q else 1.0),
        (224, 224, 3),
        10,
        256,
        _sgd(0.003),
    ),  # fmt: skip
    "002_resnet50": Slice(
        "002 Table 6",
        lambda q: jp.models.ResNet50(
            num_classes=10, **({"width": 8, "stage_sizes": (1, 1, 1, 1)} if q else {})
        ),
        (224, 224, 3),
        10,
        256,
        _sgd(0.003),
    ),  # fmt: skip
    "001_table1": Slice(
        "001 Table I",
        lambda q: jp.models.fusion_net("I", 6),
        (32, 32, 3),
        10,
        128,
        lambda: optax.adam(1e-3),
    ),  # fmt: skip
    "003_conv6": Slice(
        "003 Table 1",
        lambda q: jp.models.conv6(),
        (32, 32, 3),
        10,
        60,
        lambda: jp.transforms.train_scores(optax.adam(1e-3)),
        scores=True,
    ),  # fmt: skip
}


def synthetic(key, n: int, shape, classes: int):
    """``n`` images of ``shape``: a fixed random mean image per class plus unit noise."""
    k_mean, k_noise, k_label = jax.random.split(key, 3)
    y = jax.random.randint(k_label, (n,), 0, classes)
    means = jax.random.normal(k_mean, (classes, *shape))
    return means[y] + jax.random.normal(k_noise, (n, *shape)), y


def _peak_bytes():
    stats = jax.local_devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def _timed_fit(model, variables, tx, data, batch, epochs, key, trainable=None):
    """Compile-and-run, then the same length again from there, timed; both results."""
    kw = dict(
        loss="cross_entropy", optimizer=tx, epochs=epochs, batch_size=batch,
        partial="drop", progress=False, trainable=trainable,
    )  # fmt: skip
    start = time.perf_counter()
    first = jp.training.train_epochs(model, data, keys=key, variables=variables, **kw)
    jax.block_until_ready(first.params)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    again = jp.training.train_epochs(
        model, data, keys=jax.random.fold_in(key, 1), variables=first.variables,
        params=first.params, opt_state=first.opt_state, **kw,
    )  # fmt: skip
    jax.block_until_ready(again.params)
    return first, again, first_s, time.perf_counter() - start


def _record(first, first_s, steady_s, steps, batch):
    loss = [float(v) for v in np.asarray(first.history["loss"])]
    return {
        "step_s": steady_s / steps,
        "images_per_s": steps * batch / steady_s,
        "first_run_s": first_s,
        "epoch_loss": loss,
        "loss_fell": bool(loss[-1] < loss[0]),
    }


def run_slice(
    name: str, quick: bool, steps: int, epochs: int, seed: int = 0, batch: int | None = None
) -> dict:
    s = SLICES[name]
    batch = batch or (8 if quick else s.batch)
    shape = (32, 32, 3) if quick else s.shape
    key = jax.random.key(seed)
    data = synthetic(jax.random.fold_in(key, 0), batch * steps, shape, s.classes)
    model = s.build(quick)
    variables = jax.jit(model.init)(jax.random.fold_in(key, 1), data[0][:1])
    trainable = jp.models.is_score if s.scores else None
    first, again, first_s, steady_s = _timed_fit(
        model, variables, s.optimizer(), data, batch, epochs, jax.random.fold_in(key, 2),
        trainable,
    )  # fmt: skip
    out = {
        "paper": s.paper,
        "batch": batch,
        "input": list(shape),
        "params": int(sum(np.size(a) for a in jax.tree.leaves(variables["params"]))),
        "steps_timed": steps * epochs,
        **_record(first, first_s, steady_s, steps * epochs, batch),
    }
    if s.linearize:
        swapped = jp.rewrites.swap_relu_for_prelu(model, again.variables, data[0][:1])
        tx = jp.transforms.slope_sparsity(s.optimizer(), strength=0.05, target=0.9)
        post = _timed_fit(
            swapped.model, swapped.variables, tx, data, batch, epochs, jax.random.fold_in(key, 3)
        )
        out["post_training"] = _record(post[0], post[2], post[3], steps * epochs, batch)
    out["peak_bytes"] = _peak_bytes()
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.accelerator_check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny stand-ins, batch 8 (CPU)")
    parser.add_argument("--only", nargs="+", choices=sorted(SLICES), help="run these slices")
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (10; quick 2)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed run")
    parser.add_argument(
        "--batch", type=int, default=None, help="override every slice's batch (CPU estimates)"
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=8.0,
        help="start no further slice after this many minutes (the rest are listed as skipped)",
    )
    parser.add_argument("--out", type=Path, default=None, help="folder of the JSON")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    steps = args.steps or (2 if args.quick else 10)
    if steps < 1 or args.epochs < 2:
        parser.error("--steps must be >= 1 and --epochs >= 2 (the loss must be seen falling)")
    results, skipped, start = {}, [], time.perf_counter()
    for name in args.only or SLICES:
        t = time.perf_counter()
        if results and t - start > 60 * args.max_minutes:
            skipped.append(name)
            continue
        results[name] = run_slice(name, args.quick, steps, args.epochs, batch=args.batch)
        results[name]["wall_s"] = time.perf_counter() - t
        r = results[name]
        loss = f"loss {r['epoch_loss'][0]:.3f} -> {r['epoch_loss'][-1]:.3f}"
        speed = f"{r['step_s'] * 1e3:9.1f} ms/step {r['images_per_s']:9.0f} img/s"
        print(f"{name:24s} {speed} {loss}", flush=True)
    payload = {
        "command": " ".join(["python -m benchmarks.accelerator_check", *argv]),
        "device_kind": jax.local_devices()[0].device_kind,
        "steps_per_epoch": steps,
        "epochs": args.epochs,
        "total_s": time.perf_counter() - start,
        "slices": results,
        "skipped_for_time": skipped,
    }
    return write("accelerator_check" + ("_quick" if args.quick else ""), payload, args.out)


if __name__ == "__main__":
    main()
