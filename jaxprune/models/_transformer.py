"""Paper 004's transformer (App. C.2, Fig. 25): Vaswani et al.'s encoder-decoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Transformer", "sinusoidal_positions"]


def sinusoidal_positions(length: int, d_model: int) -> np.ndarray:
    """Vaswani et al.'s sinusoidal position encoding, ``(length, d_model)`` float32.

    ``PE[t, 2i] = sin(t / 10000^(2i/d))``, ``PE[t, 2i+1] = cos(t / 10000^(2i/d))``.

    Args:
      length: number of positions.
      d_model: width (even).

    Returns:
      The table (a NumPy constant: no parameter).

    Raises:
      ValueError: ``d_model`` odd or a size below 1.

    >>> import jaxprune as jp
    >>> pe = jp.models.sinusoidal_positions(4, 6)
    >>> pe.shape, float(pe[0, 1]), round(float(pe[1, 0]), 6)  # cos(0), sin(1)
    ((4, 6), 1.0, 0.841471)

    References:
      Vaswani et al. 2017, "Attention is all you need", sec. 3.5.
    """
    if length < 1 or d_model < 2 or d_model % 2:
        raise ValueError(
            f"length, d_model: expected length >= 1 and an even d_model >= 2, got "
            f"{length}, {d_model}"
        )
    t = np.arange(length, dtype=np.float64)[:, None]
    div = np.exp(np.arange(0, d_model, 2, dtype=np.float64) * (-np.log(10000.0) / d_model))
    pe = np.zeros((length, d_model), np.float64)
    pe[:, 0::2] = np.sin(t * div)
    pe[:, 1::2] = np.cos(t * div)
    return pe.astype(np.float32)


class _FFN(nn.Module):
    """``linear2(dropout(relu(linear1(x))))``, PyTorch's TransformerEncoderLayer feed-forward."""

    d_model: int
    d_ff: int
    dropout: float
    activation: Callable
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train):
        h = self.activation(nn.Dense(self.d_ff, dtype=self.dtype, name="linear1")(x))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return nn.Dense(self.d_model, dtype=self.dtype, name="linear2")(h)


class _Attention(nn.Module):
    """flax's ``MultiHeadDotProductAttention`` with PyTorch's attention dropout."""

    num_heads: int
    dropout: float
    dtype: Any = None

    @nn.compact
    def __call__(self, q, kv, mask, train):
        return nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dropout_rate=self.dropout,
            deterministic=not train,
            dtype=self.dtype,
            name="attn",
        )(q, kv, mask=mask)


class _EncoderLayer(nn.Module):
    d_model: int
    d_ff: int
    num_heads: int
    dropout: float
    activation: Callable
    dtype: Any = None

    @nn.compact
    def __call__(self, x, mask, train):
        drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)  # noqa: E731
        ln = lambda name: nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name=name)  # noqa: E731
        a = _Attention(self.num_heads, self.dropout, self.dtype, name="self_attn")
        x = ln("norm1")(x + drop(a(x, x, mask, train)))
        f = _FFN(self.d_model, self.d_ff, self.dropout, self.activation, self.dtype, name="ffn")
        return ln("norm2")(x + drop(f(x, train)))


class _DecoderLayer(nn.Module):
    d_model: int
    d_ff: int
    num_heads: int
    dropout: float
    activation: Callable
    dtype: Any = None

    @nn.compact
    def __call__(self, y, memory, self_mask, cross_mask, train):
        drop = lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)  # noqa: E731
        ln = lambda name: nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name=name)  # noqa: E731
        a = _Attention(self.num_heads, self.dropout, self.dtype, name="self_attn")
        y = ln("norm1")(y + drop(a(y, y, self_mask, train)))
        c = _Attention(self.num_heads, self.dropout, self.dtype, name="cross_attn")
        y = ln("norm2")(y + drop(c(y, memory, cross_mask, train)))
        f = _FFN(self.d_model, self.d_ff, self.dropout, self.activation, self.dtype, name="ffn")
        return ln("norm3")(y + drop(f(y, train)))


class Transformer(nn.Module):
    """Vaswani et al.'s encoder-decoder as PyTorch's ``nn.Transformer`` builds it, with the
    token embeddings, sinusoidal positions and output projection of PyTorch's Multi30k
    translation tutorial (``Seq2SeqTransformer``).

    Post-norm layers (``x = LayerNorm(x + Dropout(sublayer(x)))``, ``epsilon=1e-5``), a ReLU
    feed-forward ``linear2(Dropout(ReLU(linear1(x))))``, dropout on the attention weights, a
    final LayerNorm after each stack (``nn.Transformer``'s ``encoder_norm`` and
    ``decoder_norm``). Embeddings are scaled by ``sqrt(d_model)`` and added to the sinusoidal
    positions, then dropped out. The decoder's self-attention is causal; its cross-attention
    takes queries from the decoder and keys/values from the encoder's output (the memory).
    Token id ``pad_id`` is padding: masked out as a key in every attention (PyTorch's
    ``*_key_padding_mask``). Vocabularies: separate source and target embeddings and an
    untied output projection ``generator`` (the tutorial's, for de->en with two
    vocabularies); ``tgt_vocab=None`` shares one vocabulary size, still with separate tables.

    Parameter paths: ``src_embed``, ``tgt_embed``, ``encoder_{i}`` and ``decoder_{i}``
    (``self_attn/attn``, ``cross_attn/attn`` with flax's ``query``/``key``/``value``/``out``,
    ``ffn/linear1``, ``ffn/linear2``, ``norm1..3``), ``encoder_norm``, ``decoder_norm``,
    ``generator``. Each feed-forward's ReLU is a unit group of ``d_ff`` channels, the one
    paper 004 linearizes ("linearize all PReLU activations").

    Attributes:
      src_vocab: source vocabulary size.
      tgt_vocab: target vocabulary size (None: ``src_vocab``).
      d_model: width of the residual stream (512).
      d_ff: feed-forward width (2048).
      num_heads: attention heads (8).
      num_layers: encoder layers and decoder layers, each (6).
      dropout: dropout rate everywhere (0.1).
      max_len: longest sequence the position table covers.
      pad_id: the padding token id (None: no padding mask).
      activation: the feed-forward nonlinearity (``nn.relu``, as Vaswani et al.'s and
        PyTorch's default).
      dtype: computation dtype; parameters stay float32, logits are returned in float32.

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> net = jp.models.Transformer(11, 7, d_model=8, d_ff=16, num_heads=2, num_layers=1)
    >>> src, tgt = jnp.ones((2, 5), int), jnp.ones((2, 4), int)
    >>> v = net.init(jax.random.key(0), src, tgt)
    >>> net.apply(v, src, tgt).shape, v["params"]["decoder_0"]["ffn"]["linear1"]["kernel"].shape
    ((2, 4, 7), (8, 16))

    References:
      Paper 004, App. C.2 (Fig. 25); Vaswani et al. 2017, "Attention is all you need".
    """

    src_vocab: int
    tgt_vocab: int | None = None
    d_model: int = 512
    d_ff: int = 2048
    num_heads: int = 8
    num_layers: int = 6
    dropout: float = 0.1
    max_len: int = 256
    pad_id: int | None = None
    activation: Callable = nn.relu
    dtype: Any = None

    def __post_init__(self):
        for field in ("src_vocab", "d_model", "d_ff", "num_heads", "num_layers", "max_len"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{field}: expected a positive int, got {value!r}")
        if self.tgt_vocab is not None and (
            not isinstance(self.tgt_vocab, int) or self.tgt_vocab < 1
        ):
            raise ValueError(f"tgt_vocab: expected a positive int or None, got {self.tgt_vocab!r}")
        if self.d_model % self.num_heads or self.d_model % 2:
            raise ValueError(
                f"d_model: expected an even multiple of num_heads={self.num_heads}, "
                f"got {self.d_model}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a rate in [0, 1), got {self.dropout!r}")
        super().__post_init__()

    def _embed(self, ids, vocab, name, train):
        if ids.ndim != 2:
            raise ValueError(f"{name}: expected token ids (batch, length), got shape {ids.shape}")
        if ids.shape[1] > self.max_len:
            raise ValueError(f"{name}: length {ids.shape[1]} exceeds max_len={self.max_len}")
        x = nn.Embed(vocab, self.d_model, name=name)(ids) * np.sqrt(self.d_model)
        x = x + sinusoidal_positions(ids.shape[1], self.d_model)
        return nn.Dropout(self.dropout, deterministic=not train)(x.astype(self.dtype or x.dtype))

    def _key_mask(self, ids):
        if self.pad_id is None:
            return None
        return (ids != self.pad_id)[:, None, None, :]

    @nn.compact
    def __call__(self, src: jax.Array, tgt: jax.Array, train: bool = False) -> jax.Array:
        """Next-token logits ``(batch, tgt_len, tgt_vocab)`` of the target given the source.

        ``tgt`` is the decoder's input (the target shifted right, starting with BOS);
        ``train=True`` turns dropout on (needs a ``"dropout"`` rng).
        """
        sizes = (self.d_model, self.d_ff, self.num_heads, self.dropout, self.activation, self.dtype)
        src_keys = self._key_mask(src)
        x = self._embed(src, self.src_vocab, "src_embed", train)
        for i in range(self.num_layers):
            x = _EncoderLayer(*sizes, name=f"encoder_{i}")(x, src_keys, train)
        memory = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="encoder_norm")(x)

        causal = nn.make_causal_mask(tgt)
        tgt_keys = self._key_mask(tgt)
        self_mask = causal if tgt_keys is None else nn.combine_masks(causal, tgt_keys)
        y = self._embed(tgt, self.tgt_vocab or self.src_vocab, "tgt_embed", train)
        for i in range(self.num_layers):
            y = _DecoderLayer(*sizes, name=f"decoder_{i}")(y, memory, self_mask, src_keys, train)
        y = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="decoder_norm")(y)
        out = nn.Dense(self.tgt_vocab or self.src_vocab, dtype=self.dtype, name="generator")(y)
        return out.astype(jnp.float32)
