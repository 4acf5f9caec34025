"""Transformers written the way users write them (flax's attention modules, einsum attention
by hand, embeddings, causal masks, tied unembeddings); none uses jaxprune classes.

Each ``make_<name>()`` returns a :class:`zoo.Case` with the unit groups listed by hand
(``{unit name: width}``: heads for attention, hidden units for MLPs).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from zoo import Case


class EmbedMLP(nn.Module):
    """Token ids in: an embedding, a residual MLP, the tied unembedding (``Embed.attend``)."""

    vocab: int = 11
    width: int = 6

    @nn.compact
    def __call__(self, ids):
        embed = nn.Embed(self.vocab, self.width)
        h = embed(ids)
        r = nn.relu(nn.Dense(8)(h))
        h = h + nn.Dense(self.width)(r)
        return embed.attend(h)


def make_embed_mlp():
    ids = jnp.array([[1, 2, 3, 10], [4, 5, 0, 7]])
    m = EmbedMLP()
    # the residual stream (embedding, both skips' ends, the unembedding's rows) is a group
    return Case(m, m.init(jax.random.key(0), ids), ids, {"Embed_0": 6, "Dense_0": 8})


class EncoderBlock(nn.Module):
    """A pre-norm encoder block: LayerNorm, flax's self-attention, residual, LayerNorm, MLP."""

    heads: int = 4
    mlp: int = 16

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, h)
        h = nn.LayerNorm()(x)
        h = nn.gelu(nn.Dense(self.mlp)(h))
        return x + nn.Dense(x.shape[-1])(h)


def make_encoder_block():
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    m = EncoderBlock()
    units = {"MultiHeadDotProductAttention_0/query": 4, "Dense_0": 16}
    return Case(m, m.init(jax.random.key(0), x), x, units)


class EinsumAttention(nn.Module):
    """Attention by hand, as papers' code writes it: one fused qkv Dense, reshape into heads,
    einsum, a causal mask, softmax, einsum, merge heads, output Dense; post-norm."""

    heads: int = 2

    @nn.compact
    def __call__(self, x):
        b, t, d = x.shape
        hd = d // self.heads
        q = nn.Dense(d, name="q")(x).reshape(b, t, self.heads, hd)
        k = nn.Dense(d, name="k")(x).reshape(b, t, self.heads, hd)
        v = nn.Dense(d, name="v")(x).reshape(b, t, self.heads, hd)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(hd)
        causal = jnp.tril(jnp.ones((t, t), bool))
        scores = jnp.where(causal, scores, -1e9)
        att = jax.nn.softmax(scores, axis=-1)
        o = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, t, d)
        return nn.LayerNorm()(x + nn.Dense(d, name="o")(o))


def make_einsum_attention():
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    m = EinsumAttention()
    return Case(m, m.init(jax.random.key(0), x), x, {"q": 2})


TRANSFORMERS = {
    "embed_mlp": make_embed_mlp,
    "encoder_block": make_encoder_block,
    "einsum_attention": make_einsum_attention,
}
