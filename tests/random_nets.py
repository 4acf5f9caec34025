"""Randomly generated user-style linen models (a hypothesis strategy), shared by the graph and
rewrite invariant tests: depth, widths, dense or conv layers, relu/tanh/identity, BatchNorm,
residual adds (identity or 1x1 projection) and channel concatenation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from hypothesis import strategies as st

ACTS = {"relu": nn.relu, "tanh": nn.tanh, "identity": lambda h: h}


class RandomNet(nn.Module):
    conv: bool
    blocks: tuple  # (width, act, batchnorm, join) with join in {"", "add", "proj", "concat"}

    @nn.compact
    def __call__(self, x):
        layer = (lambda w: nn.Conv(w, (3, 3))) if self.conv else nn.Dense
        h = x
        for width, act, bn, join in self.blocks:
            y = layer(width)(h)
            if bn:
                y = nn.BatchNorm(use_running_average=True)(y)
            y = ACTS[act](y)
            if join == "add" and h.shape[-1] == width:
                y = y + h
            elif join == "proj":
                y = y + nn.Dense(width)(h) if not self.conv else y + nn.Conv(width, (1, 1))(h)
            elif join == "concat":
                y = jnp.concatenate([y, nn.relu(layer(2)(h))], axis=-1)
            h = y
        if self.conv:
            h = h.reshape((h.shape[0], -1))
        return nn.Dense(3)(h)


block = st.tuples(
    st.integers(1, 5),
    st.sampled_from(sorted(ACTS)),
    st.booleans(),
    st.sampled_from(["", "add", "proj", "concat"]),
)


def build(conv, blocks, seed):
    """``(model, variables, x)`` with BatchNorm statistics moved off their initial values."""
    model = RandomNet(conv, tuple(blocks))
    shape = (2, 4, 4, 2) if conv else (3, 4)
    x = jax.random.normal(jax.random.key(seed), shape)
    variables = model.init(jax.random.key(seed + 1), x)
    if "batch_stats" in variables:
        variables = {
            **variables,
            "batch_stats": jax.tree.map(lambda a: a + 0.5, variables["batch_stats"]),
        }
    return model, variables, x
