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
    qkv: int | None = None

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        att = nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.qkv)
        x = x + att(h, h)
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


class GQABlock(nn.Module):
    """Grouped-query attention by hand (key/value heads repeated over the query heads that
    share them, as Llama-style code does), RMSNorm pre-norm, a SwiGLU MLP."""

    heads: int = 4
    kv_heads: int = 2
    mlp: int = 12

    @nn.compact
    def __call__(self, x):
        b, t, d = x.shape
        hd = d // self.heads
        h = nn.RMSNorm()(x)
        q = nn.Dense(self.heads * hd, use_bias=False, name="wq")(h).reshape(b, t, self.heads, hd)
        k = nn.Dense(self.kv_heads * hd, use_bias=False, name="wk")(h)
        v = nn.Dense(self.kv_heads * hd, use_bias=False, name="wv")(h)
        k = jnp.repeat(k.reshape(b, t, self.kv_heads, hd), self.heads // self.kv_heads, axis=2)
        v = jnp.repeat(v.reshape(b, t, self.kv_heads, hd), self.heads // self.kv_heads, axis=2)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * hd**-0.5
        att = jax.nn.softmax(scores, axis=-1)
        o = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, t, d)
        x = x + nn.Dense(d, use_bias=False, name="wo")(o)
        h = nn.RMSNorm()(x)
        gate = nn.Dense(self.mlp, use_bias=False, name="w1")(h)
        up = nn.Dense(self.mlp, use_bias=False, name="w3")(h)
        return x + nn.Dense(d, use_bias=False, name="w2")(nn.silu(gate) * up)


def make_gqa_block():
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    m = GQABlock()
    # a unit is a key/value head with the 2 query heads that share it; the SwiGLU product
    # ties channel i of the gate and the up projection
    return Case(m, m.init(jax.random.key(0), x), x, {"wq": 2, "w1": 12})


class DecoderLM(nn.Module):
    """A small decoder-only LM: token and position embeddings, flax's self-attention under a
    causal mask with dropout on the attention weights, a post-norm MLP with dropout, the tied
    unembedding."""

    vocab: int = 13
    width: int = 8
    heads: int = 2
    depth: int = 2

    @nn.compact
    def __call__(self, ids, train: bool = False):
        t = ids.shape[-1]
        tok = nn.Embed(self.vocab, self.width)
        x = tok(ids) + nn.Embed(16, self.width)(jnp.arange(t))
        mask = nn.make_causal_mask(ids)
        for _ in range(self.depth):
            att = nn.MultiHeadDotProductAttention(
                num_heads=self.heads, dropout_rate=0.1, deterministic=not train
            )
            h = att(x, mask=mask)  # self-attention
            x = nn.LayerNorm()(x + h)
            h = nn.Dense(2 * self.width)(x)
            h = nn.Dropout(0.1, deterministic=not train)(nn.relu(h))
            x = nn.LayerNorm()(x + nn.Dense(self.width)(h))
        return tok.attend(x)


def make_decoder_lm():
    ids = jnp.array([[1, 2, 3, 12, 5], [4, 5, 0, 7, 7]])
    m = DecoderLM()
    units = {
        "Embed_0": 8,  # the residual stream
        "MultiHeadDotProductAttention_0/query": 2,
        "Dense_0": 16,
        "MultiHeadDotProductAttention_1/query": 2,
        "Dense_2": 16,
    }
    return Case(m, m.init(jax.random.key(0), ids), ids, units)


class ViT(nn.Module):
    """A tiny ViT: patch-embedding conv, class token, learned position embedding, pre-norm
    encoder blocks, the class token's head."""

    width: int = 8
    heads: int = 2

    @nn.compact
    def __call__(self, img):
        x = nn.Conv(self.width, (4, 4), strides=(4, 4), padding="VALID")(img)
        b, gh, gw, c = x.shape
        x = x.reshape(b, gh * gw, c)
        cls = self.param("cls", nn.initializers.normal(0.02), (1, 1, c))
        x = jnp.concatenate([jnp.tile(cls, (b, 1, 1)), x], axis=1)
        x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], c))
        x = EncoderBlock(heads=self.heads)(x)
        return nn.Dense(3)(nn.LayerNorm()(x[:, 0]))


def make_vit():
    img = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    m = ViT()
    units = {
        "Conv_0": 8,
        "EncoderBlock_0/MultiHeadDotProductAttention_0/query": 2,
        "EncoderBlock_0/Dense_0": 16,
    }
    return Case(m, m.init(jax.random.key(0), img), img, units)


def make_nnx_block():
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.norm = nnx.LayerNorm(8, rngs=rngs)
            self.att = nnx.MultiHeadAttention(num_heads=4, in_features=8, decode=False, rngs=rngs)
            self.fc1 = nnx.Linear(8, 12, rngs=rngs)
            self.fc2 = nnx.Linear(12, 8, rngs=rngs)

        def __call__(self, x):
            x = x + self.att(self.norm(x))
            return x + self.fc2(nnx.gelu(self.fc1(x)))

    m = Block(nnx.Rngs(0))
    m.eval()
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    return Case(m, None, x, {"att/query": 4, "fc1": 12})


def make_equinox_block():
    import equinox as eqx

    class Block(eqx.Module):
        att: eqx.nn.MultiheadAttention
        fc1: eqx.nn.Linear
        fc2: eqx.nn.Linear

        def __init__(self, key):
            k1, k2, k3 = jax.random.split(key, 3)
            self.att = eqx.nn.MultiheadAttention(2, 8, key=k1)
            self.fc1 = eqx.nn.Linear(8, 12, key=k2)
            self.fc2 = eqx.nn.Linear(12, 8, key=k3)

        def __call__(self, x):  # one sequence (tokens, features), as equinox layers take
            x = x + self.att(x, x, x)
            return x + jax.vmap(lambda t: self.fc2(jax.nn.relu(self.fc1(t))))(x)

    x = jax.random.normal(jax.random.key(1), (5, 8))
    return Case(Block(jax.random.key(0)), None, x, {"att/query_proj": 2, "fc1": 12})


def _rope(x):
    """Rotary position embedding over head_dim (pairs ``d`` and ``d + head_dim/2``)."""
    t, hd = x.shape[1], x.shape[-1]
    freq = 1.0 / 10000 ** (jnp.arange(hd // 2) / (hd // 2))
    ang = jnp.arange(t)[:, None] * freq[None]
    cos, sin = jnp.cos(ang)[None, :, None], jnp.sin(ang)[None, :, None]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


class RoPEAttention(nn.Module):
    """Llama-style attention: DenseGeneral to (heads, head_dim), rotary embeddings on q and
    k, flax's dot_product_attention, DenseGeneral out of (heads, head_dim)."""

    heads: int = 4
    head_dim: int = 4

    @nn.compact
    def __call__(self, x):
        proj = lambda name: nn.DenseGeneral((self.heads, self.head_dim), name=name)  # noqa: E731
        q, k, v = _rope(proj("q")(x)), _rope(proj("k")(x)), proj("v")(x)
        o = nn.dot_product_attention(q, k, v)
        return x + nn.DenseGeneral(x.shape[-1], axis=(-2, -1), name="o")(o)


def make_rope_attention():
    x = jax.random.normal(jax.random.key(1), (2, 5, 8))
    m = RoPEAttention()
    return Case(m, m.init(jax.random.key(0), x), x, {"q": 4})


class RandomTransformer(nn.Module):
    """A configurable decoder stack for property tests: query heads, key/value heads (GQA when
    fewer), gated (SwiGLU) or plain (gelu) MLP, pre- or post-norm, depth."""

    heads: int = 2
    kv_heads: int = 2
    head_dim: int = 2
    gated: bool = False
    pre_norm: bool = True
    depth: int = 1
    mlp: int = 6

    @nn.compact
    def __call__(self, x):
        b, t, d = x.shape
        hd, r = self.head_dim, self.heads // self.kv_heads
        for _ in range(self.depth):
            h = nn.LayerNorm()(x) if self.pre_norm else x
            q = nn.Dense(self.heads * hd)(h).reshape(b, t, self.heads, hd)
            k = nn.Dense(self.kv_heads * hd)(h).reshape(b, t, self.kv_heads, hd)
            v = nn.Dense(self.kv_heads * hd)(h).reshape(b, t, self.kv_heads, hd)
            k, v = jnp.repeat(k, r, axis=2), jnp.repeat(v, r, axis=2)
            att = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / hd**0.5, axis=-1)
            o = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, t, self.heads * hd)
            x = x + nn.Dense(d)(o)
            x = x if self.pre_norm else nn.LayerNorm()(x)
            h = nn.LayerNorm()(x) if self.pre_norm else x
            if self.gated:
                h = nn.silu(nn.Dense(self.mlp)(h)) * nn.Dense(self.mlp)(h)
            else:
                h = nn.gelu(nn.Dense(self.mlp)(h))
            x = x + nn.Dense(d)(h)
            x = x if self.pre_norm else nn.LayerNorm()(x)
        return x


TRANSFORMERS = {
    "rope_attention": make_rope_attention,
    "nnx_block": make_nnx_block,
    "equinox_block": make_equinox_block,
    "decoder_lm": make_decoder_lm,
    "vit": make_vit,
    "gqa_block": make_gqa_block,
    "embed_mlp": make_embed_mlp,
    "encoder_block": make_encoder_block,
    "einsum_attention": make_einsum_attention,
}
