"""Paper 001's Tables I-V for ``fuse_init --part table_<N>``: the papers' networks, their data
(or a generated stand-in of the same shapes where TFDS has none), the successive fusions.

Each table trains its deepest row from random init, then fuses one pair (``fusion_layers``)
into the next row's network, retrains it (FuseInit), fuses again, ...; every row after the
first is also trained from random init (Random). The rows' networks are
:func:`jaxprune.models.fusion_net`'s; their kernels start ``N(0, init_std^2)``, the paper's
variance 0.05 by default (sec. III-C).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

import jaxprune as jp

TABLES = ("I", "II", "III", "IV", "V")

# The paper's rows (validation accuracy, Table V mean absolute error): (FuseInit, Random).
PAPER = {
    "I": {6: (None, "0.8825 ± 0.0040"), 5: ("0.8826 ± 0.0041", "0.8691 ± 0.0056"),
          4: ("0.8535 ± 0.0046", "0.8417 ± 0.0060")},
    "II": {4: (None, "0.9107 ± 0.0024"), 3: ("0.9120 ± 0.0025", "0.9104 ± 0.0017"),
           2: ("0.9010 ± 0.0019", "0.8971 ± 0.0024"), 1: ("0.8803 ± 0.0030", "0.8756 ± 0.0043")},
    "III": {2: (None, "0.962 ± 0.002"), 1: ("0.958 ± 0.005", "0.958 ± 0.002")},
    "IV": {4: (None, "0.887 ± 0.005"), 3: ("0.880 ± 0.006", "0.868 ± 0.003")},
    "V": {3: (None, "7.426 ± 0.112"), 2: ("7.221 ± 0.336", "7.277 ± 0.472"),
          1: ("12.273 ± 0.001", "12.262 ± 0.0053")},
}  # fmt: skip

# Where each table's data comes from: a TFDS name, or why a generated stand-in is used.
DATA = {
    "I": "TFDS cifar10 (50,000 / 10,000 images, 32x32x3)",
    "II": "TFDS fashion_mnist (60,000 / 10,000 images, 28x28x1)",
    "III": "generated stand-in, (128, 9) windows, 6 classes, 7,352 / 2,947 (UCI HAR's shapes "
    "and sizes; UCI HAR is not in TFDS)",
    "IV": "generated stand-in, 98 frames x 40 features, 12 classes, 8,000 / 2,000 (TFDS "
    "speech_commands holds raw audio; the 98x40 log-mel front end the table's network reads is "
    "not part of jaxprune)",
    "V": "generated stand-in, 32 features -> 2-D position, 2,400 / 600 (the paper's wireless "
    "positioning data is not public in TFDS)",
}


def _images(name: str, quick: bool):
    splits = ("train[:512]", "test[:256]") if quick else ("train", "test")
    return tuple(jp.data.image_dataset(name, s) for s in splits)


def _har(n_train: int = 7352, n_test: int = 2947):
    """Sinusoids whose frequency and phase pattern over the 9 channels depend on the class."""
    rng = np.random.default_rng(1)
    n = n_train + n_test
    y = rng.integers(0, 6, n).astype(np.int32)
    t = np.arange(128, dtype=np.float32) / 128
    freq = (2 + 1.5 * y)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, (6, 9)).astype(np.float32)[y][:, None, :]
    x = np.sin(2 * np.pi * freq * t[None, :, None] + phase).astype(np.float32)
    x += 0.8 * rng.normal(size=x.shape).astype(np.float32)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def _speech(n_train: int = 8000, n_test: int = 2000):
    """A class-dependent bump in (frame, feature) on noise: a spectrogram-shaped toy."""
    rng = np.random.default_rng(2)
    n = n_train + n_test
    y = rng.integers(0, 12, n).astype(np.int32)
    f0 = (3 + 3 * y + rng.normal(0, 1.0, n))[:, None, None]
    t0 = rng.uniform(20, 78, n)[:, None, None]
    frames, feats = np.arange(98)[None, :, None], np.arange(40)[None, None, :]
    x = np.exp(-((feats - f0) ** 2) / 8 - ((frames - t0) ** 2) / 200).astype(np.float32)
    x += 0.5 * rng.normal(size=(n, 98, 40)).astype(np.float32)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def positioning(n: int = 3000):
    """Noisy cosine features of a 2-D position -> the position (also fuse_init's dense_dense)."""
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 10, size=(n, 2)).astype(np.float32)
    w = rng.normal(size=(2, 32)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=32).astype(np.float32)
    feats = np.cos(pos @ w * 0.6 + phase) + 0.1 * rng.normal(size=(n, 32)).astype(np.float32)
    n_tr = int(0.8 * n)
    return (feats[:n_tr], pos[:n_tr]), (feats[n_tr:], pos[n_tr:])


def load(table: str, quick: bool):
    """``((x, y), (x_val, y_val))`` of a table (under ``quick``: 512 / 256 examples)."""
    if table in ("I", "II"):
        return _images("cifar10" if table == "I" else "fashion_mnist", quick)
    data = {"III": _har, "IV": _speech, "V": positioning}[table]()
    if quick:
        (x, y), (xv, yv) = data
        data = (x[:512], y[:512]), (xv[:256], yv[:256])
    return data


def rows(table: str) -> tuple[int, ...]:
    """The table's rows (layers), deepest first: ``fusion_net``'s successive fusions."""
    return tuple(PAPER[table])


def network(table: str, layers: int, init_std: float):
    return jp.models.fusion_net(table, layers).clone(init_std=init_std)


def _forward_names(net) -> list[str]:
    convs = [f"conv_{i}" for i in range(len(net.conv))]
    return [*convs, *(f"dense_{j}" for j in range(len(net.dense))), "out"]


def fuse_into_next(table: str, layers: int, params, x, init_std: float):
    """Fuses row ``layers``' pair per seed into row ``layers - 1``'s parameter names.

    Returns ``(params of the next row with a leading seed axis, [fusion MSE per seed],
    number of FusionWarnings)``. :func:`jaxprune.fuse` keeps the user's names (the fused layer
    under the first fused layer's); the next row's network names its layers in forward order,
    so the fused layers are renamed in that order and their shapes checked.
    """
    net = network(table, layers, init_std)
    nxt = network(table, rows(table)[rows(table).index(layers) + 1], init_std)
    pair = jp.models.fusion_layers(table, layers)
    batches = [x[i : i + 256] for i in range(0, len(x), 256)]
    want = jax.eval_shape(lambda: nxt.init(jax.random.key(0), x[:1]))["params"]
    seeds = jax.tree.leaves(params)[0].shape[0]
    fused, mses, n_warn = [], [], 0
    for s in range(seeds):
        p = jax.tree.map(lambda a, s=s: a[s], params)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", jp.rewrites.FusionWarning)
            result = jp.fuse(net, {"params": p}, pair, data=batches)
        n_warn += len(caught)
        q = result.variables["params"]
        order = [n for n in _forward_names(net) if n in q]
        renamed = dict(zip(_forward_names(nxt), (q[n] for n in order), strict=True))
        if jax.tree.map(jnp.shape, renamed) != jax.tree.map(lambda a: a.shape, want):
            raise ValueError(f"Table {table}: the fused row {layers} does not fit row {nxt}")
        fused.append(renamed)
        mses.append(float(result.report.mse[pair]))
    return jax.tree.map(lambda *a: jnp.stack(a), *fused), mses, n_warn
