"""ResNet-56 training throughput, fp32 and bf16, against the same network in PyTorch (issue 17).

    python -m benchmarks.resnet_train                 # batch 512, full ResNet-56, + Table 1
    python -m benchmarks.resnet_train --quick         # a tiny ResNet on a few images (CPU check)
    pip install -e .[bench]                           # the PyTorch peer (skipped when absent)

Meant for an accelerator, so it is not one of ``python -m benchmarks``' modules: at batch 512 a
CPU takes hours. ``--quick`` runs
anywhere and is what the test suite runs.

Writes ``benchmarks/results/resnet_train[_quick].json`` with, measured in this run:

* ``images_per_s``: training images per second in steady state of
  ``jp.training.train_epochs`` on ``jp.models.CifarResNet(depth=56, version=1)`` (He et al.'s
  post-activation ResNet-56, option-A shortcuts, BatchNorm carried as ``batch_stats``), SGD
  with momentum 0.9, cross-entropy, ``--batch`` images per step, ``--steps`` steps per epoch
  of synthetic CIFAR-shaped data held on the device; and of a plain PyTorch loop over the
  same network (``torch.backends.cudnn.benchmark`` on, the data on the device, one
  ``randperm`` per epoch).
  ``fp32``: everything in float32. ``bf16``: layers computed in bfloat16 with float32
  parameters and logits (flax ``dtype=jnp.bfloat16``; PyTorch ``torch.autocast``). JAX times
  come from the difference of two run lengths (compilation, start-up and data checks cancel),
  the variants interleaved ``--repeats`` times and the median taken; PyTorch's from timed
  steps after warm-up steps (``torch.cuda.synchronize`` around them on a GPU).
* ``jax_vs_torch``: JAX images/s over PyTorch's, per dtype (> 1: JAX faster).
* ``jax_plain_jit_fp32``: the same training as a Python loop over a hand-written ``jax.jit``
  step (the JAX peer); ``train_epochs_vs_plain_jit_fp32``: the library's images/s over it.
* ``compile_s``: the first JAX call's time less the steady time of the same work.
* Run on its own, JAX does not preallocate GPU memory (``XLA_PYTHON_CLIENT_PREALLOCATE``),
  so that the PyTorch peer in the same process has room.
* ``table1``: wall time of ``python -m experiments paint_collapse`` in a fresh process on this
  machine's default backend (skipped with ``--quick`` or ``--no-table1``).
"""

from __future__ import annotations

import os

if "jax" not in __import__("sys").modules:  # run on its own: leave GPU memory for PyTorch too
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprune as jp
from benchmarks._util import write
from jaxprune.models import CifarResNet


def _resnet(blocks: int, dtype=None) -> CifarResNet:
    """He et al.'s post-activation CIFAR ResNet with ``blocks`` blocks per stage (9: ResNet-56)."""
    return CifarResNet(depth=6 * blocks + 2, version=1, shortcut="A", dtype=dtype)


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    return x, y


def _jax_run(model, data, batch: int):
    """``run(epochs)``: ``train_epochs`` of ``model`` for ``epochs`` epochs, blocking."""
    tx = optax.sgd(0.1, momentum=0.9)
    kw = dict(loss="cross_entropy", optimizer=tx, batch_size=batch, partial="drop")
    data = jax.device_put(data)

    def run(epochs: int):
        out = jp.training.train_epochs(
            model, data, keys=jax.random.key(0), epochs=epochs, chunk_epochs=1,
            progress=False, **kw,
        )  # fmt: skip
        jax.block_until_ready(out.params)

    return run


def _plain_jit_run(model, data, batch: int):
    """``run(epochs)``: the same training as a Python loop over one ``jax.jit`` step written by
    hand (no library, default options, batches in order): the JAX peer of ``train_epochs``."""
    tx = optax.sgd(0.1, momentum=0.9)
    x, y = jax.device_put(data)
    v = model.init(jax.random.key(0), x[:1])
    n = len(x) // batch

    def loss(p, stats, xb, yb):
        out, new = model.apply(
            {"params": p, "batch_stats": stats}, xb, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(out, yb).mean(), new

    @jax.jit
    def step(carry, x, y, i):  # the data as arguments, not as constants of the program
        p, stats, s = carry
        xb = jax.lax.dynamic_slice_in_dim(x, i * batch, batch)
        yb = jax.lax.dynamic_slice_in_dim(y, i * batch, batch)
        (_, new), g = jax.value_and_grad(loss, has_aux=True)(p, stats, xb, yb)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), new["batch_stats"], s

    def run(epochs: int):
        carry = (v["params"], v["batch_stats"], tx.init(v["params"]))
        for t in range(epochs * n):
            carry = step(carry, x, y, t % n)
        jax.block_until_ready(carry)

    return run


def _torch_resnet56(blocks: int):
    """The same ResNet-56 (post-activation, option-A shortcuts) as a PyTorch module."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.stride, self.pad = stride, cout - cin

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            if self.stride > 1 or self.pad:  # option A: new channels half before, half after
                x = x[:, :, :: self.stride, :: self.stride]
                x = nn.functional.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
            return torch.relu(y + x)

    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for stage, cout in enumerate((16, 32, 64)):
        for b in range(blocks):
            layers.append(Block(cin, cout, 2 if stage > 0 and b == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def _torch_images_per_s(data, blocks: int, batch: int, steps: int, bf16: bool) -> float | None:
    """Images per second of a plain PyTorch training loop, or None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    net = _torch_resnet56(blocks).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.tensor(data[0]).permute(0, 3, 1, 2).contiguous().to(device)  # NCHW
    y = torch.tensor(data[1]).long().to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    n = len(x) // batch * batch

    def go(k: int):
        done = 0
        while done < k:
            perm = torch.randperm(len(x), device=device)[:n]
            for i in range(0, n, batch):
                if done == k:
                    break
                idx = perm[i : i + batch]
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                    loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
                loss.backward()
                opt.step()
                done += 1

    go(max(2, steps // 4))  # warm-up (cuDNN's algorithm search, allocator)
    sync()
    t0 = time.perf_counter()
    go(steps)
    sync()
    return steps * batch / (time.perf_counter() - t0)


def _seconds(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def measure(blocks: int, batch: int, steps: int, epochs: tuple[int, int], repeats: int) -> dict:
    data = _data(batch * steps)
    short, long = epochs
    variants = {
        "jax_fp32": _jax_run(_resnet(blocks), data, batch),
        "jax_bf16": _jax_run(_resnet(blocks, jnp.bfloat16), data, batch),
        "jax_plain_jit_fp32": _plain_jit_run(_resnet(blocks), data, batch),
    }
    first = {}
    for name, run in variants.items():
        first[name] = _seconds(run, short)
        run(long)
    diffs = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            diffs[name].append((_seconds(run, long) - _seconds(run, short)) / (long - short))
    per_epoch = {name: float(np.median(d)) for name, d in diffs.items()}
    images = {name: batch * steps / s for name, s in per_epoch.items()}
    out = {
        "model": f"jp.models.CifarResNet(depth={6 * blocks + 2}, version=1) (3 stages x {blocks} "
        "basic blocks, option A, BatchNorm), "
        "SGD(0.1, momentum 0.9), cross-entropy, synthetic 32x32x3 images",
        "batch": batch,
        "steps_per_epoch": steps,
        "epochs_short_long": [short, long],
        "repeats": repeats,
        "device_kind": jax.devices()[0].device_kind,
        "seconds_per_epoch_all_repeats": diffs,
        "compile_s": {name: first[name] - per_epoch[name] * short for name in variants},
    }
    for dtype in ("fp32", "bf16"):
        t = _torch_images_per_s(data, blocks, batch, steps * (long - short), dtype == "bf16")
        if t is None:
            out["torch"] = "skipped: PyTorch is not installed (pip install -e .[bench])"
            break
        images[f"torch_{dtype}"] = t
    else:
        import torch

        out["torch"] = {"version": torch.__version__, "cuda": torch.cuda.is_available()}
        out["jax_vs_torch"] = {
            d: images[f"jax_{d}"] / images[f"torch_{d}"] for d in ("fp32", "bf16")
        }
    out["train_epochs_vs_plain_jit_fp32"] = images["jax_fp32"] / images["jax_plain_jit_fp32"]
    out["images_per_s"] = images
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 block per stage, 16 images")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8, help="steps per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-table1", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        payload = measure(blocks=1, batch=8, steps=2, epochs=(1, 2), repeats=1)
    else:
        payload = measure(blocks=9, batch=args.batch, steps=args.steps, epochs=(2, 6),
                          repeats=args.repeats)  # fmt: skip
        if not args.no_table1:
            from benchmarks.bench_vs_torch import table1

            payload["table1"] = table1()
    path = write("resnet_train" + ("_quick" if args.quick else ""), payload, args.out)
    print(path.read_text())
    return path


if __name__ == "__main__":
    main()
