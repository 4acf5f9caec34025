"""Paper 004's nonlinear advantage on its transformer (App. B.5, Fig. 24): test perplexity
against the epoch t at which linearization starts.

``python -m experiments linearize --arch transformer`` runs, per seed:

1. ``jp.models.Transformer`` (Fig. 25: d_model 512, d_ff 2048, 8 heads, 6 + 6 layers, dropout
   0.1) trained with Fig. 25's recipe: Adam (0.9, 0.98), lr 0.00082 reached by a linear warmup
   over 2900 optimizer steps, divided by 10 at epochs 160 and 180, 200 epochs, batch 30 with
   gradients accumulated over 10 batches (``optax.MultiSteps``), label smoothing 0.1
   (``optax.smooth_labels``), no weight decay; a snapshot at each epoch ``t`` of ``t_values``;
2. from each snapshot: the feed-forward ReLUs swapped for PReLUs (slope 0, outputs unchanged)
   and post-trained under :func:`jaxprune.transforms.slope_sparsity` in target mode with
   target 1.0 ("linearize all PReLU activations", App. B.5): the final test perplexity
   ``exp(mean token NLL)`` (no smoothing, padding excluded) and the linear share reached.

Both trainings are :func:`jaxprune.training.train_epochs` on the model's two inputs
(``data = ((src, tgt_in), tgt_out)``, the last partial batch dropped), the per-epoch test
perplexity a metric of the compiled epoch loop, the training split into segments ending at
the snapshot epochs.

Not given in the paper and chosen here: the post-training (30 epochs of the same Adam at the
constant lr 0.00082, no warmup; strength 0.05), the t grid.

Data. Multi30k is not among TFDS 4.9's datasets (``tfds.list_builders()`` has no
``multi30k``), so ``--dataset multi30k`` is not offered; the default ``--dataset translation``
is an offline generated stand-in: source sentences of random tokens, each target the source
with every token mapped through a fixed bijection to the target vocabulary and adjacent pairs
swapped (a word-order change), BOS/EOS/padding as the tutorial's; 29,000 training and 1,000
test pairs (Multi30k's train and test sizes), vocabularies of 1,000, lengths 8-24.

Cost of the full run on Multi30k (one seed): 200 + 9 x 30 = 470 epochs of 29,000 pairs = 13.6 M
sentence pairs. Measured: one training step of Fig. 25's transformer (PyTorch tutorial's
vocabularies 19,214 / 10,837) at batch 4, 32 source and 32 target tokens, fp32, train mode with
dropout, took 1.03 s (3.9 pairs/s) on this project's 2-core x86-64 CPU with other jobs sharing
the cores (2026-12-06; ``jax.jit`` of the gradient of the mean token cross-entropy and one
``optax.adam(b1=0.9, b2=0.98)`` update, compiled once, then the mean of 3 steps). The estimate
extrapolates linearly in pairs (the same cost per pair at batch 30 and Multi30k's shorter
sentences, an overestimate): about 980 CPU-hours (13.6 M / 3.9 per s), out of reach here. On
one GPU it is about 1.3 hours at an assumed 3,000 pairs/s (an assumption, not a measurement:
the estimate is that count of pairs divided by the rate the device reaches). No resume: a
killed run starts over.

Outputs in ``OUT/linearize/``: ``results.json`` (``seeds``: per seed the ReLU network's test
perplexity per epoch and one row per t), ``table.md``.

``--quick`` (what CI runs, offline): a 1-layer transformer of width 16, 128 / 64 pairs of
length 3-5 over 12 tokens, 2 epochs of training at lr 0.01, t in (0, 2), 4 epochs of
post-training at lr 0.1 (so that the few steps reach the target), batch 16, no accumulation,
2 warmup steps; about 20 s on the shared 2-core CPU.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxprune as jp
from experiments._common import fmt_pm, markdown_table, write_text
from experiments._recipes import Arch, Recipe, get_arch, register

ARCHS = ("transformer",)
DATASETS = ("translation",)
PAD, BOS, EOS = 0, 1, 2

# Paper 004, Fig. 25 (right): the transformer's training on Multi30k.
PAPER004_TRANSFORMER = Recipe(
    optimizer="adam", lr=0.00082, momentum=0.0, batch=30, epochs=200, milestones=(160, 180),
    source="paper 004, App. C.2, Fig. 25; Adam (0.9, 0.98), warmup 2900 steps, "
    "10-step gradient accumulation, label smoothing 0.1",
)  # fmt: skip
PAPER004_TRANSFORMER_POST = Recipe(
    optimizer="adam", lr=0.00082, momentum=0.0, batch=30, epochs=30,
    source="post-training: ours (the paper gives none for the transformer)",
)  # fmt: skip
WARMUP, ACCUMULATE, SMOOTHING = 2900, 10, 0.1


def _build(vocab: int, quick: bool):
    if quick:
        return jp.models.Transformer(
            vocab, vocab, d_model=16, d_ff=32, num_heads=2, num_layers=1, pad_id=PAD
        )
    return jp.models.Transformer(vocab, vocab, pad_id=PAD)


register(
    "transformer",
    Arch(
        _build,
        PAPER004_TRANSFORMER,
        PAPER004_TRANSFORMER_POST,
        "Transformer (Fig. 25)",
        "--quick: 1 layer, width 16",
    ),
)


def translation_task(n: int, seed: int, vocab: int, min_len: int, max_len: int):
    """The offline translation stand-in: ``(src, tgt_in, tgt_out)`` int32 arrays.

    ``src`` is ``tokens + [EOS]``, padded; the target sentence maps each source token through a
    fixed bijection of the vocabulary (the same for every seed) and swaps adjacent pairs;
    ``tgt_in = [BOS] + target``, ``tgt_out = target + [EOS]``, padded with ``PAD``.
    """
    rng = np.random.default_rng(seed)
    mapping = np.concatenate([[PAD, BOS, EOS], 3 + np.random.default_rng(0).permutation(vocab - 3)])
    width = max_len + 1
    src, tgt_in, tgt_out = (np.zeros((n, width), np.int32) for _ in range(3))
    for i in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        words = rng.integers(3, vocab, length)
        target = mapping[words]
        even = length - length % 2
        target[:even] = target[:even].reshape(-1, 2)[:, ::-1].reshape(-1)
        src[i, : length + 1] = np.append(words, EOS)
        tgt_in[i, : length + 1] = np.append(BOS, target)
        tgt_out[i, : length + 1] = np.append(target, EOS)
    return src, tgt_in, tgt_out


def config(args) -> dict:
    q = bool(args.quick)
    recipe, post = get_arch(args.arch).recipe, get_arch(args.arch).post
    if q:
        recipe = recipe.quick(epochs=2, batch=16).replace(lr=0.01)
        post = post.quick(epochs=4, batch=16).replace(lr=0.1)
    t_values = (0, 2) if q else (0, 2, 5, 10, 15, 20, 40, 100, 200)
    return {
        "arch": args.arch,
        "dataset": args.dataset,
        "quick": q,
        "recipe": recipe.describe(),
        "post_recipe": post.describe(),
        "epochs": recipe.epochs,
        "post_epochs": post.epochs,
        "batch": recipe.batch,
        "lr": recipe.lr,
        "post_lr": post.lr,
        "milestones": list(recipe.milestones),
        "warmup": 2 if q else WARMUP,
        "accumulate": 1 if q else ACCUMULATE,
        "t_values": list(t_values),
        "strength": 0.05,
        "target": 1.0,
        "n_train": 128 if q else 29_000,
        "n_test": 64 if q else 1_000,
        "vocab": 12 if q else 1_000,
        "lengths": [3, 5] if q else [8, 24],
        "seeds": args.seeds or 1,
        "seed": args.seed,
    }


def optimizer(cfg: dict, steps_per_epoch: int, post: bool) -> optax.GradientTransformation:
    """Adam (0.9, 0.98) under Fig. 25's schedule (post: constant lr), the slope penalty in
    post-training, gradients accumulated over ``cfg["accumulate"]`` batches."""
    updates = steps_per_epoch // cfg["accumulate"]
    if post:
        lr = optax.constant_schedule(cfg["post_lr"])
    else:
        bounds = {m * updates - cfg["warmup"]: 0.1 for m in cfg["milestones"]}
        lr = optax.join_schedules(
            [optax.linear_schedule(0.0, cfg["lr"], cfg["warmup"]),
             optax.piecewise_constant_schedule(cfg["lr"], bounds)],
            [cfg["warmup"]],
        )  # fmt: skip
    tx = optax.adam(lr, b1=0.9, b2=0.98)
    if post:
        tx = jp.transforms.slope_sparsity(tx, cfg["strength"], target=cfg["target"])
    return optax.MultiSteps(tx, every_k_schedule=cfg["accumulate"])


def token_losses(logits, labels, smoothing: float = 0.0):
    """Per-token cross-entropy (labels smoothed by ``smoothing``) and the non-padding mask."""
    onehot = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
    return optax.softmax_cross_entropy(logits, onehot), labels != PAD


def smoothed_loss(logits, labels):
    """Per-sentence training losses whose batch mean is the mean smoothed token cross-entropy
    over the batch's non-padding tokens: each sentence's token sum divided by the batch's mean
    count of tokens (the loss ``jp.training`` averages over the examples of a batch)."""
    nll, mask = token_losses(logits, labels, SMOOTHING)
    return jnp.sum(nll * mask, -1) / jnp.maximum(jnp.mean(jnp.sum(mask, -1)), 1)


@functools.cache
def _nll_fn(model):
    def nll(params, src, tgt_in, tgt_out):
        losses, mask = token_losses(model.apply({"params": params}, src, tgt_in), tgt_out)
        return jnp.sum(losses * mask), jnp.sum(mask)

    return jax.jit(nll)


def perplexity(model, params, data, batch: int = 500) -> float:
    """``exp`` of the mean token NLL over the non-padding target tokens (evaluation mode)."""
    total, count = 0.0, 0
    for i in range(0, len(data[0]), batch):
        s, c = _nll_fn(model)(params, *(a[i : i + batch] for a in data))
        total, count = total + float(s), count + int(c)
    return math.exp(total / count)


def train(model, params, tx, data, epochs, batch, key, opt_state=None, metrics=None):
    """``epochs`` epochs of shuffled minibatches (the last partial one dropped) on the inputs
    ``(src, tgt_in)`` with dropout: :func:`jaxprune.training.train_epochs`."""
    src, tgt_in, tgt_out = data
    return jp.training.train_epochs(
        model, ((src, tgt_in), tgt_out), keys=key, loss=smoothed_loss, optimizer=tx,
        epochs=epochs, batch_size=batch, partial="drop", params=params, opt_state=opt_state,
        metrics=metrics, progress=False,
    )  # fmt: skip


def run_seed(seed: int, cfg: dict) -> dict:
    start = time.perf_counter()
    lo, hi = cfg["lengths"]
    tr = tuple(jnp.asarray(a) for a in translation_task(cfg["n_train"], seed, cfg["vocab"], lo, hi))
    te = tuple(
        jnp.asarray(a) for a in translation_task(cfg["n_test"], seed + 10_000, cfg["vocab"], lo, hi)
    )
    model = get_arch(cfg["arch"]).build(cfg["vocab"], cfg["quick"])
    key = jax.random.key(seed)
    params = jax.jit(model.init)(jax.random.fold_in(key, 0), te[0][:1], te[1][:1])["params"]
    steps = cfg["n_train"] // cfg["batch"]
    snaps, curve = {0: params}, []

    def test_nll(v):  # in the compiled epoch loop: the test set's token NLL sum and count
        losses, mask = token_losses(model.apply(v, te[0], te[1]), te[2])
        return {"nll": jnp.sum(losses * mask), "tokens": jnp.sum(mask)}

    tx = optimizer(cfg, steps, post=False)
    # trained in segments ending at the snapshot epochs t (the optimizer state, and with it the
    # schedule's step count, carries over from one segment to the next)
    ends = sorted({t for t in cfg["t_values"] if 0 < t < cfg["epochs"]} | {cfg["epochs"]})
    done, opt_state = 0, None
    for i, end in enumerate(ends):
        r = train(
            model, params, tx, tr, end - done, cfg["batch"], jax.random.fold_in(key, 1 + 100 * i),
            opt_state, test_nll,
        )  # fmt: skip
        params, opt_state, done = r.params, r.opt_state, end
        h = r.history
        curve += [math.exp(float(a) / float(b)) for a, b in zip(h["nll"], h["tokens"], strict=True)]
        snaps[end] = params
    rows = []
    post_tx = optimizer(cfg, steps, post=True)
    for t in cfg["t_values"]:
        swapped = jp.rewrites.swap_relu_for_prelu(model, {"params": snaps[t]}, te[0][:1], te[1][:1])
        net = swapped.model
        r = train(
            net, swapped.variables["params"], post_tx, tr, cfg["post_epochs"], cfg["batch"],
            jax.random.fold_in(key, 2 + t),
        )  # fmt: skip
        p, inner = r.params, r.opt_state.inner_opt_state
        rows.append(
            {
                "t": t,
                "test_perplexity": perplexity(net, p, te),
                "linear_share": float(jp.analysis.inactive_fraction(inner)),
                "slopes": {k: np.asarray(v["slope"]).tolist() for k, v in p["prelu"].items()},
            }
        )
    return {
        "seed": seed,
        "relu_perplexity_curve": curve,
        "relu_perplexity": curve[-1],
        "advantage": rows,
        "seconds": time.perf_counter() - start,
    }


def main(args, out: Path) -> Path:
    import json

    cfg = config(args)
    runs = [run_seed(s, cfg) for s in range(cfg["seed"], cfg["seed"] + cfg["seeds"])]
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps({"config": cfg, "seeds": runs}, indent=1))
    write_text(out / "table.md", table(cfg, runs))
    return out


def table(cfg: dict, runs: list[dict]) -> str:
    col = lambda f: [f(r) for r in runs]  # noqa: E731
    rows = []
    for i, t in enumerate(cfg["t_values"]):
        g = lambda k, i=i: col(lambda r: r["advantage"][i][k])  # noqa: E731
        rows.append([t, fmt_pm(g("test_perplexity")), fmt_pm(g("linear_share"), 3)])
    lines = [
        f"# Nonlinear advantage (paper 004, Fig. 24): transformer on {cfg['dataset']}, "
        f"{len(runs)} seed(s)\n",
        f"Training: {cfg['recipe']}. Post-training: {cfg['post_recipe']}; slope penalty "
        f"{cfg['strength']}, target {cfg['target']} of the feed-forward units linear.",
        ("Quick run: the numbers only show the pipeline works.\n" if cfg["quick"] else "")
        + f"\nReLU network trained {cfg['epochs']} epochs: test perplexity "
        f"{fmt_pm(col(lambda r: r['relu_perplexity']))}\n",
        markdown_table(["linearized from epoch t", "test perplexity", "linear share"], rows),
        f"\nWall time: {sum(r['seconds'] for r in runs):.1f} s (all seeds)\n",
    ]
    return "\n".join(lines)
