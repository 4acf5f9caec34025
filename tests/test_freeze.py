"""freeze_units on user-style models: frozen entries stay bit-identical under Adam."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trainable import loss_fn, trainable
from zoo import ZOO

import jaxprune as jp
from jaxprune.training import set_frozen_units
from jaxprune.transforms import FreezeUnitsState, freeze_units

# (zoo model, unit to freeze): the resnet unit is block 2's output, written through the 1x1
# projection shortcut; "Conv_0" of the cnn is read through a linear conv; "Conv_2" through the
# flatten head.
CASES = [
    ("mlp", "Dense_0"),
    ("resnet_v1_b", "ResBlockV1_1/Conv_1"),
    ("resnet_v1_b", "Conv_0"),
    ("concat", None),
    ("cnn", "Conv_2"),
    ("nnx_mlp", "fc1"),
    ("equinox_mlp", "layers/0"),
    ("function", "w1"),
]


def _setup(name):
    case = ZOO[name]()
    graph = jp.trace(case.model, case.variables, case.x, model_kwargs=case.kwargs)
    params, combine = trainable(case, graph)
    return case, graph, params, loss_fn(case, graph, combine)


def _np(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def _trainer(tx, loss):
    @jax.jit
    def run(p, s):  # 5 steps in one program; the frozen mask is data (no recompilation)
        def step(c, _):
            p, s = c
            updates, s = tx.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, updates), s), None

        return jax.lax.scan(step, (p, s), None, length=5)[0]

    return run


@pytest.mark.parametrize("name, unit", CASES, ids=[f"{n}-{u}" for n, u in CASES])
def test_frozen_entries_stay_bit_identical_under_adam_momentum(name, unit):
    case, graph, params, loss = _setup(name)
    unit = unit or list(graph.units)[0]
    w = graph.units[unit].width
    frozen = {unit: jnp.arange(w) % 2 == 0}
    tx = optax.chain(optax.adam(1e-2), freeze_units(graph, {}))
    run = _trainer(tx, loss)
    p5, s5 = run(params, tx.init(params))  # momentum built up, nothing frozen
    p5_tree = p5
    p10, _ = run(p5, set_frozen_units(s5, frozen))
    mask = _np(graph.unit_param_mask(p5, frozen))
    p5, p10 = _np(p5), _np(p10)
    n_frozen = sum(int(m.sum()) for m in mask)
    assert n_frozen > 0
    assert sum(bool(m.any()) for m in mask) >= 2  # writers and readers
    for a, b, m in zip(p5, p10, mask, strict=True):
        assert np.array_equal(a[m], b[m])
    # Not vacuous: unfrozen, Adam's momentum moves those entries.
    free = _np(run(p5_tree, set_frozen_units(s5, {}))[0])
    moved = sum(int((a != b)[m].sum()) for a, b, m in zip(p5, free, mask, strict=True))
    assert moved > n_frozen // 2
    # ... and unfrozen entries of the frozen run keep training.
    unfrozen_moved = sum(int((a != b)[~m].sum()) for a, b, m in zip(p5, p10, mask, strict=True))
    assert unfrozen_moved > 0


def test_projection_shortcut_readers_are_frozen():
    # Block 1's output ("Conv_0" group) is read by block 2's conv and its 1x1 projection.
    _, graph, params, _ = _setup("resnet_v1_b")
    mask = graph.unit_param_mask(params, {"Conv_0": jnp.array([False, True, False, False])})
    proj = np.asarray(mask["ResBlockV1_1"]["Conv_2"]["kernel"])  # (1, 1, 4, 8)
    assert proj[:, :, 1, :].all() and not proj[:, :, [0, 2, 3], :].any()
    conv = np.asarray(mask["ResBlockV1_1"]["Conv_0"]["kernel"])  # (3, 3, 4, 8)
    assert conv[:, :, 1, :].all() and not conv[:, :, [0, 2, 3], :].any()


def test_hand_computed_sgd_updates_and_state_is_data():
    _, graph, params, _ = _setup("mlp")
    tx = optax.chain(
        optax.sgd(1.0), freeze_units(graph, {"Dense_1": jnp.array([1, 0, 0, 0, 0, 1], bool)})
    )
    grads = jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    assert isinstance(state[1], FreezeUnitsState) and set(state[1].frozen) == {"Dense_0", "Dense_1"}
    u, _ = jax.jit(tx.update)(grads, state, params)
    u = jax.tree.map(np.asarray, u)
    assert u["Dense_1"]["bias"].tolist() == [0.0, -1.0, -1.0, -1.0, -1.0, 0.0]
    assert (u["Dense_1"]["kernel"][:, [0, 5]] == 0).all() and (
        u["Dense_1"]["kernel"][:, 1:5] == -1
    ).all()
    assert (u["Dense_2"]["kernel"][[0, 5]] == 0).all() and (u["Dense_2"]["kernel"][1:5] == -1).all()
    assert (u["Dense_2"]["bias"] == -1).all() and (u["Dense_0"]["kernel"] == -1).all()
    # Per-seed masks under vmap: one program, different frozen units.
    masks = jnp.eye(6, dtype=bool)[:2]
    states = jax.vmap(lambda m: set_frozen_units(state, {"Dense_1": m}))(masks)
    us = jax.vmap(lambda s: tx.update(grads, s, params)[0])(states)
    assert us["Dense_1"]["bias"][:, :2].tolist() == [[0.0, -1.0], [-1.0, 0.0]]


def test_bad_input_names_the_argument():
    _, graph, params, _ = _setup("mlp")
    with pytest.raises(ValueError, match=r"frozen: unknown unit\(s\) \['relu_0'\].*Dense_0"):
        freeze_units(graph, {"relu_0": jnp.ones(8, bool)})
    with pytest.raises(ValueError, match=r"frozen\['Dense_0'\]: expected shape \(8,\)"):
        freeze_units(graph, {"Dense_0": jnp.ones(7, bool)})
    with pytest.raises(ValueError, match=r"frozen\['Dense_0'\]: .* and dtype bool, got .* float32"):
        freeze_units(graph, {"Dense_0": jnp.full(8, 0.5)})
    with pytest.raises(ValueError, match="frozen: expected a mapping"):
        freeze_units(graph, [jnp.ones(8, bool)])
    state = freeze_units(graph, {}).init(params)
    with pytest.raises(ValueError, match=r"frozen: unknown unit\(s\) \['out'\]"):
        set_frozen_units(state, {"out": jnp.ones(3, bool)})
    with pytest.raises(ValueError, match=r"frozen\['Dense_1'\]: expected shape \(6,\)"):
        set_frozen_units(state, {"Dense_1": jnp.ones(5, bool)})
    with pytest.raises(ValueError, match=r"frozen\['Dense_1'\]: .* and dtype bool, got .* float32"):
        set_frozen_units(state, {"Dense_1": jnp.ones(6)})
    with pytest.raises(ValueError, match="opt_state: contains no FreezeUnitsState"):
        set_frozen_units(optax.sgd(1.0).init(params), {})
