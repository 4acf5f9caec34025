"""Every function taking unit masks checks them with one checker and one message shape:
argument, unit, expected shape and dtype, what was given. A mask of the wrong length used to be
cut to the unit's width by ``Graph.apply``; a float mask would count 0.5 as True."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from jaxprune.training import set_frozen_units
from jaxprune.transforms import freeze_units


class Net(nn.Module):
    """A user's model: default names, BatchNorm, a skip over the second block."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.Dense(4)(x))
        h = nn.BatchNorm(use_running_average=not train)(h)
        g = nn.relu(nn.Dense(4)(h))
        return nn.Dense(2)(g + h)


X = jax.random.normal(jax.random.key(0), (8, 3))
Y = jax.random.normal(jax.random.key(1), (8, 2))
NET = Net()
VARIABLES = NET.init(jax.random.key(2), X)
GRAPH = jp.trace(NET, VARIABLES, X)
UNIT = "Dense_0"  # Dense_0 and Dense_1 are one group of 4 through the skip
WIDTH = 4

BAD = {
    "too long": (np.ones(WIDTH + 1, bool), "bool", (WIDTH + 1,)),
    "too short": (np.ones(WIDTH - 1, bool), "bool", (WIDTH - 1,)),
    "2-D": (np.ones((1, WIDTH), bool), "bool", (1, WIDTH)),
    "scalar": (np.bool_(True), "bool", ()),
    "float": (np.array([1.0, 0.5, 0.0, 1.0], np.float32), "float32", (WIDTH,)),
    "integer": (np.array([0, 1, 2, 3], np.int32), "int32", (WIDTH,)),  # indices, not a mask
}


def _message(arg, dtype, shape, want="bool"):
    return (
        rf"^{re.escape(arg)}\['{UNIT}'\]: expected shape \({WIDTH},\) and dtype {want}, "
        rf"got shape {re.escape(str(shape))} and dtype {dtype}"
    )


def _prune(keep):
    return jp.prune_units(NET, VARIABLES, keep, X)


def _reinit(units):
    return jp.rewrites.reinit_units(GRAPH, VARIABLES["params"], units, jax.random.key(0))


def _freeze(frozen):
    return freeze_units(GRAPH, frozen)


def _set_frozen(frozen):
    state = optax.chain(optax.sgd(0.1), freeze_units(GRAPH, {})).init(VARIABLES["params"])
    return set_frozen_units(state, frozen)


def _ablation(units):
    return jp.analysis.unit_ablation(NET, VARIABLES, (X, Y), units=units)


def _apl(active):
    return jp.analysis.average_path_length(GRAPH, active)


def _param_mask(units):
    return GRAPH.unit_param_mask(VARIABLES["params"], units)


TAKES_MASKS = {
    "keep": _prune,
    "units": _reinit,
    "frozen": _freeze,
    "frozen ": _set_frozen,  # set_frozen_units
    "units ": _ablation,
    "active": _apl,
    "units  ": _param_mask,  # Graph.unit_param_mask
}


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("arg", list(TAKES_MASKS))
def test_bool_masks_of_the_wrong_length_or_dtype_are_named(arg, bad):
    mask, dtype, shape = BAD[bad]
    with pytest.raises(ValueError, match=_message(arg.strip(), dtype, shape)):
        TAKES_MASKS[arg]({UNIT: mask})


@pytest.mark.parametrize("arg", list(TAKES_MASKS))
def test_unknown_units_are_named_with_the_known_ones(arg):
    pattern = (
        rf"^{arg.strip()}: unknown unit\(s\) \['Dense_9'\]; the model's units are \['Dense_0'\]"
    )
    with pytest.raises(ValueError, match=pattern):
        TAKES_MASKS[arg]({"Dense_9": np.ones(WIDTH, bool)})


@pytest.mark.parametrize("bad", ["too long", "too short", "2-D", "scalar"])
def test_graph_apply_refuses_masks_of_the_wrong_shape(bad):
    # a too-long mask used to be cut to its first `width` entries
    mask, dtype, shape = BAD[bad]
    pattern = _message("masks", dtype, shape, want="bool, integer or float")
    with pytest.raises(ValueError, match=pattern):
        GRAPH.apply(VARIABLES, X, masks={UNIT: mask})
    with pytest.raises(ValueError, match=pattern):  # shapes are static: checked under jit too
        jax.jit(lambda m: GRAPH.apply(VARIABLES, X, masks={UNIT: m}))(mask)


def test_graph_apply_refuses_other_dtypes_and_non_mappings():
    with pytest.raises(
        ValueError, match=_message("masks", "complex64", (WIDTH,), "bool, integer or float")
    ):
        GRAPH.apply(VARIABLES, X, masks={UNIT: jnp.ones(WIDTH, jnp.complex64)})
    with pytest.raises(ValueError, match=r"^masks: expected a mapping \{unit: mask\[width\]\}"):
        GRAPH.apply(VARIABLES, X, masks=[np.ones(WIDTH, bool)])
    with pytest.raises(ValueError, match=r"^masks: unknown unit\(s\) \['Dense_9'\]"):
        GRAPH.apply(VARIABLES, X, masks={"Dense_9": np.ones(WIDTH)})


def test_graph_apply_masks_are_multipliers_bool_or_real():
    # documented: {unit: bool or real[width]} multiplied onto the channels; True/1.0 keep
    keep = np.array([True, False, True, True])
    by_bool = GRAPH.apply(VARIABLES, X, masks={UNIT: keep})
    by_float = GRAPH.apply(VARIABLES, X, masks={UNIT: keep.astype(np.float32)})
    np.testing.assert_array_equal(by_bool, by_float)
    result = jp.prune_units(NET, VARIABLES, {UNIT: keep}, X)
    narrow, nv = result.model, result.variables
    np.testing.assert_allclose(narrow.apply(nv, X), by_bool, rtol=1e-5, atol=1e-6)
    # vmapped one-hot masks (as unit_ablation does): the per-example shape is checked
    eye = 1.0 - jnp.eye(WIDTH)
    outs = jax.vmap(lambda m: GRAPH.apply(VARIABLES, X, masks={UNIT: m}))(eye)
    np.testing.assert_allclose(outs[1], GRAPH.apply(VARIABLES, X, masks={UNIT: eye[1]}))


def test_set_frozen_units_keeps_a_seed_axis_of_a_stacked_state():
    state = optax.chain(optax.sgd(0.1), freeze_units(GRAPH, {})).init(VARIABLES["params"])
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), state)
    m = np.array([[True, False, False, True], [False, False, True, False]])
    assert set_frozen_units(stacked, {UNIT: m})[1].frozen[UNIT].tolist() == m.tolist()
    with pytest.raises(ValueError, match=r"shape \(2, 4\) and dtype bool, got shape \(4,\)"):
        set_frozen_units(stacked, {UNIT: m[0]})


def test_slope_sparsity_and_transfer_mask_refuse_float_masks():
    # both cast with jnp.asarray(m, bool): 0.5 would have counted as inactive
    params = {"prelu_0": {"slope": jnp.full(3, 0.5)}}
    half = jnp.array([0.0, 0.5, 1.0])
    tx = jp.transforms.slope_sparsity(optax.sgd(0.1), strength=1.0, inactive={"prelu_0": half})
    pattern = r"^inactive\['prelu_0'\]: expected shape \(3,\) and dtype bool, got shape \(3,\)"
    with pytest.raises(ValueError, match=pattern):
        tx.init(params)
    with pytest.raises(ValueError, match=pattern):
        jp.rewrites.transfer_mask({"prelu_0": half})
    mask = {"prelu_0": jnp.array([True, False, True])}
    tx = jp.transforms.slope_sparsity(optax.sgd(0.1), strength=1.0, inactive=mask)
    assert tx.init(params).inactive["prelu_0"].tolist() == [True, False, True]
    assert jp.rewrites.transfer_mask(mask)["prelu_0"].tolist() == [True, False, True]
