"""Paper 004's transformer (Fig. 25): PyTorch's nn.Transformer count, the graph, the rewrites."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.models import Transformer, sinusoidal_positions

SRC = jnp.array([[1, 2, 3, 4, 0], [5, 6, 7, 0, 0]])
TGT = jnp.array([[1, 2, 3, 0], [4, 5, 6, 6]])
SMALL = dict(src_vocab=11, tgt_vocab=7, d_model=8, d_ff=16, num_heads=2, num_layers=1, pad_id=0)


def _count(tree):
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _closed_form(d, f, layers, vs, vt):
    attention = 4 * d * d + 4 * d  # q, k, v, out: kernel and bias each
    ffn = d * f + f + f * d + d
    norm = 2 * d
    encoder = layers * (attention + ffn + 2 * norm) + norm
    decoder = layers * (2 * attention + ffn + 3 * norm) + norm
    return encoder, decoder, vs * d + vt * d + d * vt + vt


@functools.cache
def _small():
    net = Transformer(**SMALL)
    v = jax.jit(net.init)(jax.random.key(0), SRC, TGT)
    # away from the initializer's zeros (biases, LayerNorm) so that every term counts
    v = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(1), a.shape), v)
    return net, v


def test_parameter_count_is_pytorchs_nn_transformer_and_the_closed_form():
    # Fig. 25's sizes: the encoder and decoder stacks are PyTorch's nn.Transformer(), whose
    # parameter count is 44,140,544
    net = Transformer(src_vocab=19214, tgt_vocab=10837)
    shapes = jax.eval_shape(net.init, jax.random.key(0), SRC, TGT)["params"]
    enc, dec, rest = _closed_form(512, 2048, 6, 19214, 10837)
    assert enc + dec == 44_140_544
    stacks = {k: v for k, v in shapes.items() if k.startswith(("encoder", "decoder"))}
    assert _count(stacks) == enc + dec
    assert _count(shapes) == enc + dec + rest
    for layers in (1, 2):
        small = Transformer(**{**SMALL, "num_layers": layers})
        v = jax.eval_shape(small.init, jax.random.key(0), SRC, TGT)
        assert _count(v["params"]) == sum(_closed_form(8, 16, layers, 11, 7))
    shared = Transformer(**{**SMALL, "tgt_vocab": None})
    v = jax.eval_shape(shared.init, jax.random.key(0), SRC, SRC)
    assert _count(v["params"]) == sum(_closed_form(8, 16, 1, 11, 11))


@functools.cache
def _apply():
    return jax.jit(_small()[0].apply)


def test_decoder_is_causal_reads_the_source_and_masks_padding():
    net, v = _small()
    apply = _apply()
    y = apply(v, SRC, TGT)
    # changing the last target token leaves the logits of earlier positions unchanged
    later = apply(v, SRC, TGT.at[:, -1].set(3))
    np.testing.assert_array_equal(later[:, :-1], y[:, :-1])
    assert np.abs(later[:, -1] - y[:, -1]).max() > 1e-3
    # the cross-attention reads the source: a changed source token changes every position
    other = apply(v, SRC.at[:, 0].set(9), TGT)
    assert np.abs(other - y).max(axis=-1).min() > 1e-4
    # a padded source position (id 0) is masked as a key: its embedding does not matter
    nopad = Transformer(**{**SMALL, "pad_id": None})
    v2 = jax.tree.map(lambda a: a, v)
    v2["params"]["src_embed"]["embedding"] = v["params"]["src_embed"]["embedding"].at[0].set(5.0)
    np.testing.assert_allclose(apply(v2, SRC, TGT), y, rtol=1e-5, atol=1e-6)
    nopad_apply = jax.jit(nopad.apply)
    assert np.abs(nopad_apply(v2, SRC, TGT) - nopad_apply(v, SRC, TGT)).max() > 1e-3


def test_dropout_only_in_training():
    net, v = _small()
    train = jax.jit(lambda key: net.apply(v, SRC, TGT, train=True, rngs={"dropout": key}))
    a, b = train(jax.random.key(2)), train(jax.random.key(3))
    assert np.abs(a - b).max() > 1e-3
    assert np.abs(a - _apply()(v, SRC, TGT)).max() > 1e-3


def test_sinusoidal_positions_closed_form():
    pe = sinusoidal_positions(7, 6)
    t, i = 5, 2  # PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(...)
    np.testing.assert_allclose(pe[t, 2 * i], np.sin(t / 10000 ** (2 * i / 6)), rtol=1e-6)
    np.testing.assert_allclose(pe[t, 2 * i + 1], np.cos(t / 10000 ** (2 * i / 6)), rtol=1e-6)


def test_traces_with_cross_attention_and_evaluates_as_the_model():
    net, v = _small()
    graph = jp.trace(net, v, SRC, TGT)
    np.testing.assert_allclose(
        graph.apply(v, SRC, TGT), _apply()(v, SRC, TGT), rtol=1e-5, atol=1e-5
    )
    units = graph.units
    cross = units["decoder_0/cross_attn/attn/query"]
    # a cross-attention head: the decoder's query with the encoder memory's key and value
    assert cross.kind == "heads" and cross.width == 2
    assert set(cross.layers) == {
        f"decoder_0/cross_attn/attn/{n}" for n in ("query", "key", "value")
    }
    ffns = [n for n, u in units.items() if u.nonlinearity == ("relu",)]
    assert ffns == ["encoder_0/ffn/linear1", "decoder_0/ffn/linear1"]
    assert all(units[n].width == 16 for n in ffns)
    # pruning a cross-attention head equals masking it in the graph
    keep = {"decoder_0/cross_attn/attn/query": np.array([True, False])}
    r = jp.prune_units(net, v, keep, SRC, TGT)
    np.testing.assert_allclose(
        r.model.apply(r.variables, SRC, TGT), graph.apply(v, SRC, TGT, masks=keep), atol=1e-5
    )


def test_prelu_swap_is_exact_and_linear_ffns_fold_into_one_layer():
    net, v = _small()
    want = _apply()(v, SRC, TGT)
    swapped = jp.rewrites.swap_relu_for_prelu(net, v, SRC, TGT)
    got = swapped.model.apply(swapped.variables, SRC, TGT)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    slopes = swapped.variables["params"]["prelu"]
    assert sorted(jax.tree.leaves(jax.tree.map(np.shape, slopes))) == [16, 16]
    # "linearize all PReLU activations": every slope 1, the FFNs are linear maps and fold
    sv = jax.tree.map(lambda a: a, swapped.variables)
    sv["params"]["prelu"] = jax.tree.map(jnp.ones_like, slopes)
    folded = jp.rewrites.fold_linear(swapped.model, sv, SRC, TGT)
    linear = Transformer(**SMALL, activation=lambda h: h).apply(v, SRC, TGT)
    got = folded.model.apply(folded.variables, SRC, TGT)
    np.testing.assert_allclose(got, linear, rtol=1e-4, atol=1e-4)
    assert np.abs(linear - want).max() > 1e-3  # the ReLUs mattered
    p = folded.variables["params"]
    for stack in ("encoder_0", "decoder_0"):
        assert set(p[stack]["ffn"]) == {"linear2"}
        assert p[stack]["ffn"]["linear2"]["kernel"].shape == (8, 8)
    assert _count(v["params"]) - _count(p) == 2 * (8 * 16 + 16 + 16 * 8 - 8 * 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"src_vocab": 0}, "src_vocab"),
        ({"src_vocab": 5, "d_model": 10, "num_heads": 4}, "d_model"),
        ({"src_vocab": 5, "dropout": 1.0}, "dropout"),
        ({"src_vocab": 5, "tgt_vocab": -1}, "tgt_vocab"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Transformer(**kwargs)
