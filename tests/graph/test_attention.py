"""Transformers through the layer graph: embeddings, attention heads and MLP units are units;
the graph's evaluation equals the model; masking a head equals zeroing its slices by hand."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformer_zoo import TRANSFORMERS, RandomTransformer, make_embed_mlp

import jaxprune as jp
from jaxprune.graph import as_model, path_str


@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_units_equal_hand_listed_and_evaluation_equals_model(name):
    case = TRANSFORMERS[name]()
    graph = jp.trace(case.model, *case.state, case.x, model_kwargs=case.kwargs)
    assert {k: u.width for k, u in graph.units.items()} == case.units
    adapter = as_model(case.model, case.variables)
    expected = adapter.apply(adapter.variables, case.x, **case.kwargs)
    np.testing.assert_array_equal(graph.apply(adapter.variables, case.x), expected)


def test_embedding_is_a_layer_whose_columns_are_the_residual_stream():
    case = make_embed_mlp()
    graph = jp.trace(case.model, *case.state, case.x)
    embed = graph.layers["Embed_0"]
    assert (embed.op, embed.kernel, embed.unit) == ("embed", "params/Embed_0/embedding", "Embed_0")
    assert graph.units["Embed_0"].layers == ("Embed_0", "Dense_1")
    # the residual unit j: the table's column j (written by the lookup, read by attend),
    # Dense_0's row j, Dense_1's column j and bias entry j
    slices = {(leaf, axis) for leaf, axis, _ in graph.slices("Embed_0")}
    assert slices == {
        ("params/Embed_0/embedding", 1),
        ("params/Dense_0/kernel", 0),
        ("params/Dense_1/kernel", 1),
        ("params/Dense_1/bias", 0),
    }


def test_masking_a_residual_channel_equals_the_hand_written_forward():
    case = make_embed_mlp()
    graph = jp.trace(case.model, *case.state, case.x)
    p = case.variables["params"]
    m = jnp.array([1.0, 0, 1, 1, 0, 1])
    table = p["Embed_0"]["embedding"]
    h = table[case.x] * m
    r = jax.nn.relu(h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    h = (h + r @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]) * m
    expected = h @ table.T
    got = graph.apply(case.variables, case.x, masks={"Embed_0": m})
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def _zero_heads(tree, leaves_axes, dead, head_dim=None):
    """``tree`` with the entries of heads ``dead`` zeroed along the given (leaf path, axis)
    pairs; ``head_dim`` set: the axis is flat, heads are blocks of ``head_dim`` entries."""
    out = jax.tree.map(lambda a: a, tree)
    for path, axis in leaves_axes:
        node = out
        *parents, leaf = path.split("/")
        for k in parents:
            node = node[k]
        a = node[leaf]
        n = a.shape[axis]
        head = np.arange(n) // (head_dim or 1)
        keep = ~np.isin(head, dead)
        shape = [1] * a.ndim
        shape[axis] = n
        node[leaf] = a * keep.reshape(shape)
    return out


def test_masking_flax_heads_equals_zeroing_their_value_slices_by_hand():
    case = TRANSFORMERS["encoder_block"]()
    graph = jp.trace(case.model, *case.state, case.x)
    att = "params/MultiHeadDotProductAttention_0"
    # a head's output is its value slice mixed by its attention weights: zeroing the value
    # kernel's and bias' head entries removes exactly that head's contribution
    hand = _zero_heads(
        case.variables, [(f"{att}/value/kernel", 1), (f"{att}/value/bias", 0)], [1, 3]
    )
    expected = case.model.apply(hand, case.x)
    mask = jnp.array([True, False, True, False])
    got = graph.apply(case.variables, case.x, masks={"MultiHeadDotProductAttention_0/query": mask})
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert not np.allclose(got, case.model.apply(case.variables, case.x), atol=1e-3)


def test_masking_einsum_heads_equals_zeroing_their_value_columns_by_hand():
    case = TRANSFORMERS["einsum_attention"]()
    graph = jp.trace(case.model, *case.state, case.x)
    hand = _zero_heads(case.variables, [("params/v/kernel", 1), ("params/v/bias", 0)], [0], 4)
    expected = case.model.apply(hand, case.x)
    got = graph.apply(case.variables, case.x, masks={"q": jnp.array([False, True])})
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


PRUNE_CASES = {
    # model: {unit: keep}
    "encoder_block": {
        "MultiHeadDotProductAttention_0/query": [True, False, True, False],
        "Dense_0": [i % 3 != 0 for i in range(16)],
    },
    "einsum_attention": {"q": [False, True]},
    "rope_attention": {"q": [True, True, False, True]},  # whole heads: head_dim is kept
    "gqa_block": {"wq": [True, False], "w1": [i < 7 for i in range(12)]},
    "nnx_block": {"att/query": [False, True, True, False], "fc1": [i < 5 for i in range(12)]},
    "equinox_block": {"att/query_proj": [True, False], "fc1": [i > 3 for i in range(12)]},
}


def _n_params(tree):
    return sum(int(np.size(a)) for a in jax.tree.leaves(tree))


def _leaves(variables):
    flat = jax.tree_util.tree_flatten_with_path(variables)[0]
    return {path_str(p): np.asarray(a) for p, a in flat}


@pytest.mark.parametrize("name", sorted(PRUNE_CASES))
def test_pruning_heads_and_mlp_units_equals_the_masked_model(name):
    case = TRANSFORMERS[name]()
    keep = {k: np.array(v) for k, v in PRUNE_CASES[name].items()}
    graph = jp.trace(case.model, *case.state, case.x)
    before = as_model(case.model, case.variables)
    r = jp.prune_units(case.model, *case.state, keep, case.x)
    narrow, nv = r.model, r.variables
    after = as_model(narrow, nv if before.kind == "linen" else None)
    expected = graph.apply(before.variables, case.x, masks=keep)
    got = after.apply(after.variables, case.x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    if before.kind == "linen":  # another batch size, under jit
        x2 = jnp.concatenate([case.x, case.x[:1]])
        got2 = jax.jit(narrow.apply)(nv, x2)[:2]
        np.testing.assert_allclose(got2, expected, rtol=1e-5, atol=1e-5)
    # the parameter count: the original minus every removed unit's entries, counted from the
    # slices (each entry of a removed unit's writing or reading slice, once per leaf)
    old = _leaves(before.variables)
    removed = 0
    for unit, m in keep.items():
        for leaf, axis, idx in graph.slices(unit):
            shape = old[leaf].shape
            gone = np.isin(idx, np.flatnonzero(~m))
            removed += int(gone.sum()) * (int(np.prod(shape)) // shape[axis])
    new = _leaves(after.variables)
    assert sum(a.size for a in new.values()) == sum(a.size for a in old.values()) - removed


def test_pruned_flax_attention_has_fewer_heads_by_hand():
    case = TRANSFORMERS["encoder_block"]()
    att = "MultiHeadDotProductAttention_0"
    keep = {f"{att}/query": np.array([True, False, True, False])}
    r = jp.prune_units(case.model, *case.state, keep, case.x)
    narrow, nv = r.model, r.variables
    assert r.report.changes == (
        f"{att}/query: 4 -> 2 heads",
        f"{att}: num_heads 4 -> 2, qkv_features 8 -> 4",
    )
    assert r.model.submodule(att).num_heads == 2
    p = nv["params"][att]
    # 2 heads of head_dim 2 remain in every projection, the output reads 2 heads
    assert p["query"]["kernel"].shape == p["key"]["kernel"].shape == (8, 2, 2)
    assert p["value"]["bias"].shape == (2, 2) and p["out"]["kernel"].shape == (2, 2, 8)
    # the same block written with num_heads=2 on the kept slices computes the same output
    small = type(case.model)(heads=2, qkv=4)
    sv = jax.tree.map(lambda a: a, case.variables)
    for proj in ("query", "key", "value"):
        for leaf in ("kernel", "bias"):
            sv["params"][att][proj][leaf] = np.take(
                case.variables["params"][att][proj][leaf], [0, 2], axis=-2
            )
    sv["params"][att]["out"]["kernel"] = np.take(
        case.variables["params"][att]["out"]["kernel"], [0, 2], axis=0
    )
    np.testing.assert_allclose(
        narrow.apply(nv, case.x), small.apply(sv, case.x), rtol=1e-5, atol=1e-5
    )


def test_pruned_lm_trains_with_dropout_and_exports():
    case = TRANSFORMERS["decoder_lm"]()
    keep = {
        "MultiHeadDotProductAttention_1/query": np.array([False, True]),
        "Dense_0": np.arange(16) < 9,
    }
    r = jp.prune_units(case.model, *case.state, keep, case.x)
    narrow, nv = r.model, r.variables
    assert nv["params"]["MultiHeadDotProductAttention_1"]["query"]["kernel"].shape == (8, 1, 4)
    assert nv["params"]["Dense_1"]["kernel"].shape == (9, 8)

    def loss(params, key):
        logits = narrow.apply({"params": params}, case.x, train=True, rngs={"dropout": key})
        return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    key = jax.random.key(3)
    l0, grads = jax.jit(jax.value_and_grad(loss))(nv["params"], key)
    # dropout is on in train mode: another key gives another loss; grads have the narrow shapes
    assert float(l0) != float(loss(nv["params"], jax.random.key(4)))
    assert jax.tree.map(jnp.shape, grads) == jax.tree.map(jnp.shape, nv["params"])
    exported = jax.export.export(jax.jit(narrow.apply))(nv, case.x)
    np.testing.assert_allclose(
        exported.call(nv, case.x), narrow.apply(nv, case.x), rtol=1e-6, atol=1e-6
    )


def test_residual_stream_is_coupled_by_layernorm_and_pruning_it_is_refused():
    case = TRANSFORMERS["decoder_lm"]()
    graph = jp.trace(case.model, *case.state, case.x)
    unit = graph.units["Embed_0"]
    assert unit.kind == "embedding" and any("reduce_sum" in c for c in unit.coupled)
    with pytest.raises(jp.graph.GraphError, match="Embed_0.*exact=False"):
        jp.prune_units(case.model, *case.state, {"Embed_0": np.arange(8) < 6}, case.x)


def test_approximate_residual_prune_reports_its_measured_output_error():
    case = TRANSFORMERS["decoder_lm"]()
    keep = {"Embed_0": np.arange(8) != 3}
    r = jp.prune_units(case.model, *case.state, keep, case.x, exact=False)
    assert r.variables["params"]["Embed_0"]["embedding"].shape == (13, 7)
    assert r.variables["params"]["LayerNorm_0"]["scale"].shape == (7,)
    got = r.model.apply(r.variables, case.x)
    want = case.model.apply(case.variables, case.x)
    assert r.report.output_error == pytest.approx(float(jnp.abs(got - want).max()), rel=1e-6)
    assert r.report.output_error > 1e-3  # the norms now see 7 channels: not exact
    assert exact_error_is_none(case)


def exact_error_is_none(case):
    keep = {"Dense_0": np.arange(16) < 8}
    return jp.prune_units(case.model, *case.state, keep, case.x).report.output_error is None


def test_the_primitive_registry_lists_every_structural_rule():
    from jaxprune.graph import _analyze, _primitives

    assert set(_analyze._RULES) | {"split"} == _primitives.STRUCTURAL
    sets = [_primitives.LINEAR_UNARY, _primitives.NONLINEAR_UNARY, _primitives.BINARY]
    sets += [_primitives.REDUCE, _primitives.REDUCE_WINDOW, _primitives.SHAPE_ONLY]
    sets += [_primitives.STRUCTURAL]
    assert sum(len(s) for s in sets) == len(frozenset().union(*sets))  # each primitive once


@settings(max_examples=6, deadline=None)
@given(
    heads_kv=st.sampled_from([(2, 2), (4, 2), (4, 1), (3, 3)]),
    gated=st.booleans(),
    pre_norm=st.booleans(),
    depth=st.integers(1, 2),
    seed=st.integers(0, 9),
)
def test_random_transformers_evaluate_mask_and_prune_exactly(
    heads_kv, gated, pre_norm, depth, seed
):
    heads, kv = heads_kv
    model = RandomTransformer(heads=heads, kv_heads=kv, gated=gated, pre_norm=pre_norm, depth=depth)
    x = jax.random.normal(jax.random.key(seed), (2, 3, 4))
    variables = model.init(jax.random.key(seed + 1), x)
    graph = jp.trace(model, variables, x)
    np.testing.assert_array_equal(graph.apply(variables, x), model.apply(variables, x))
    kinds = [u.kind for u in graph.units.values()]
    # one attention group per layer: heads, or key/value heads with their query heads (GQA)
    assert kinds.count("kv_groups" if kv < heads else "heads") == depth
    assert [u.width for u in graph.units.values() if u.kind != "channels"] == [kv] * depth
    assert [u.width for u in graph.units.values() if u.kind == "channels"] == [6] * depth
    rng = np.random.default_rng(seed)
    keep = {}
    for name, u in graph.units.items():
        m = rng.random(u.width) < 0.5
        m[rng.integers(u.width)] = True
        keep[name] = m
    r = jp.prune_units(model, variables, keep, x)
    masked = graph.apply(variables, x, masks=keep)
    np.testing.assert_allclose(r.model.apply(r.variables, x), masked, rtol=1e-5, atol=1e-5)


def test_attention_is_one_nonlinearity_on_query_and_key_paths_and_none_on_value_paths():
    class Attend(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x + nn.MultiHeadDotProductAttention(num_heads=2)(x)

    x = jax.random.normal(jax.random.key(0), (1, 3, 4))
    model = Attend()
    graph = jp.trace(model, model.init(jax.random.key(1), x), x)
    (unit,) = graph.units.values()
    assert unit.nonlinearity == ("attention", "softmax")
    # paths: the skip and the value projection cross no nonlinearity, the query and key
    # projections one (the softmax of their product); so the average lies strictly in (0, 1)
    assert 0.0 < jp.analysis.average_path_length(graph) < 1.0
    # with every head linear (inactive), no path crosses a nonlinearity
    inactive = {unit.name: np.zeros(2, bool)}
    assert jp.analysis.average_path_length(graph, inactive) == 0.0


class _ReluBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2)(h)
        h = nn.LayerNorm()(x)
        return x + nn.Dense(8, name="down")(nn.relu(nn.Dense(16, name="up")(h)))


def test_collapse_folds_the_mlps_layernorm_and_linearized_mlps_fold_exactly():
    x = jax.random.normal(jax.random.key(0), (2, 5, 8))
    model = _ReluBlock()
    v = model.init(jax.random.key(1), x)
    v = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(2), a.shape), v)
    want = model.apply(v, x)
    collapsed = jp.collapse(model, v, x)
    # the second LayerNorm's bias (8 entries) folds into the MLP's first layer's bias
    assert collapsed.report.changes == ("up + LayerNorm_1 -> up",)
    assert collapsed.report.params_before - collapsed.report.params_after == 8
    assert set(collapsed.variables["params"]["LayerNorm_1"]) == {"scale"}
    got = collapsed.model.apply(collapsed.variables, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # paper 004's transformer: the MLP's ReLU as a PReLU; with every slope 1 it is linear and
    # its two layers fold into one (8 x 8 instead of 8 x 16 + 16 x 8)
    swapped = jp.rewrites.swap_relu_for_prelu(model, v, x)
    sv = jax.tree.map(lambda a: a, swapped.variables)
    sv["params"]["prelu"]["up"]["slope"] = jnp.ones(16)
    folded = jp.rewrites.fold_linear(swapped.model, sv, x)
    p = v["params"]
    h = nn.LayerNorm().apply({"params": p["LayerNorm_1"]}, x + _attention(p, x))
    expected = x + _attention(p, x)
    expected = expected + (h @ p["up"]["kernel"] + p["up"]["bias"]) @ p["down"]["kernel"]
    expected = expected + p["down"]["bias"]
    np.testing.assert_allclose(
        folded.model.apply(folded.variables, x), expected, rtol=1e-4, atol=1e-4
    )
    shapes = [a.shape for a in jax.tree.leaves(folded.variables["params"]) if a.ndim == 2]
    assert (8, 8) in shapes and (8, 16) not in shapes and (16, 8) not in shapes


def _attention(p, x):
    h = nn.LayerNorm().apply({"params": p["LayerNorm_0"]}, x)
    att = nn.MultiHeadDotProductAttention(num_heads=2)
    return att.apply({"params": p["MultiHeadDotProductAttention_0"]}, h)


def test_ablating_a_head_equals_the_loss_with_its_value_slices_zeroed_by_hand():
    case = TRANSFORMERS["encoder_block"]()
    y = jnp.zeros_like(case.x)
    att = "params/MultiHeadDotProductAttention_0"
    ratios = jp.analysis.unit_ablation(
        case.model, case.variables, (case.x, y), units=["MultiHeadDotProductAttention_0/query"]
    )["MultiHeadDotProductAttention_0/query"]

    def mse(v):
        return float(jnp.mean((case.model.apply(v, case.x) - y) ** 2))

    base = mse(case.variables)
    for h in range(4):
        hand = _zero_heads(
            case.variables, [(f"{att}/value/kernel", 1), (f"{att}/value/bias", 0)], [h]
        )
        np.testing.assert_allclose(float(ratios[h]), mse(hand) / base, rtol=1e-5)


def test_freezing_and_reinitializing_a_head_touch_exactly_its_slices():
    case = TRANSFORMERS["encoder_block"]()
    graph = jp.trace(case.model, *case.state, case.x)
    unit = "MultiHeadDotProductAttention_0/query"
    head1 = {unit: np.array([False, True, False, False])}
    params = case.variables["params"]
    att = "MultiHeadDotProductAttention_0"
    # the head's entries, by hand: q/k/v kernel [:, 1, :] and bias [1, :], out kernel [1]
    hand = jax.tree.map(lambda a: np.zeros(a.shape, bool), params)
    for proj in ("query", "key", "value"):
        hand[att][proj]["kernel"][:, 1, :] = True
        hand[att][proj]["bias"][1, :] = True
    hand[att]["out"]["kernel"][1] = True
    # freeze: Adam's final updates of the head's entries are zero, all others move
    opt = optax.chain(optax.adam(0.1), jp.transforms.freeze_units(graph, head1))
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = opt.update(grads, opt.init(params), params)
    moved = jax.tree.map(lambda u: np.asarray(u != 0), updates)
    assert jax.tree.map(lambda m, h: bool((m == ~h).all()), moved, hand) == jax.tree.map(
        lambda _: True, hand
    )
    # reinit: only the head's entries change
    new, _ = jp.rewrites.reinit_units(graph, params, head1, key=jax.random.key(5))
    changed = jax.tree.map(lambda a, b: np.asarray(a != b), new, params)
    assert jax.tree.map(lambda c, h: bool((c <= h).all()), changed, hand) == jax.tree.map(
        lambda _: True, hand
    )
    assert bool(changed[att]["query"]["kernel"][:, 1, :].all())
