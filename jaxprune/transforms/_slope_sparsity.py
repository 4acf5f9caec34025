"""Sparsity pressure on PReLU slopes toward linearity, freezing units that become linear.

Paper 004, sec. 3 and sec. 4.1.2: the loss gets ``lambda * sum_i |1 - alpha_i|`` over every
channel-wise PReLU slope ``alpha_i``; a unit whose slope exceeds 0.99 is *inactive* (linear): its
slope is set to exactly 1 and frozen from then on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune._slopes import slope_layer, slope_layers_of
from jaxprune.graph.extend import check_mask

_LOG_MAX_BOOST = np.float32(math.log(1e6))  # the controller's penalty stays finite

__all__ = ["SlopeSparsityState", "slope_sparsity"]


class SlopeSparsityState(NamedTuple):
    """State of :func:`slope_sparsity`.

    Attributes:
      inactive: ``{layer: bool[width]}``, the frozen (linear) units of each PReLU layer; the key
        is the ``/``-joined path of the dict holding ``slope`` (``"prelu_0"``).
      strength: the penalty weight used at the last step (lowered near a target, 0 once the
        target is reached).
      inner_state: the wrapped optimizer's state.
      stall: target mode: steps since the last unit froze (or since the inactive fraction came
        within ``slow_margin`` of the target); drives the penalty controller.
    """

    inactive: dict[str, jax.Array]
    strength: jax.Array
    inner_state: Any
    stall: jax.Array | int = 0


def slope_sparsity(
    inner: optax.GradientTransformation,
    strength: float,
    *,
    threshold: float = 0.99,
    target: float | None = None,
    slow_margin: float = 0.05,
    slow_factor: float = 0.1,
    slow_growth: float = 1.02,
    inactive: Mapping[str, Any] | None = None,
    freeze_new: bool = True,
    slope_key: str = "slope",
) -> optax.GradientTransformation:
    """Wraps ``inner`` with the slope penalty and freezes slopes that become linear.

    Each step (``params`` required):

    1. a unit whose current slope is ``> threshold`` becomes inactive (in target mode only as
       many as the target still allows, the largest slopes first); the mask lives in the state,
       so freezing never recompiles;
    2. ``strength * d|1 - alpha|/d alpha = -strength * sign(1 - alpha)`` (the subgradient, 0 at
       ``alpha = 1``) is added to the slope gradients, which are zeroed for inactive units;
    3. ``inner`` turns the gradients into updates;
    4. the **final** update of every inactive slope is replaced by ``1 - alpha``: after
       ``optax.apply_updates`` its slope is exactly 1, and from then on its update is exactly 0.
       Setting the slope to 1 thus happens inside this transform's update, not as a rewrite.

    The penalty is the paper's sum over all slopes of the network (not a mean), so ``strength``
    scales with no layer size. Leaves named ``slope_key`` are the slopes; every other leaf passes
    through ``inner`` untouched.

    Target mode (sec. 4.1.2): with ``target`` set, freezing stops once
    ``ceil(target * n_units)`` units are inactive (never more: the step that reaches the target
    freezes only the largest slopes it needs) and the penalty is switched off. To avoid
    overshooting, the penalty is lowered once the inactive fraction is within ``slow_margin`` of
    the target; a fixed lower penalty can stall below the target (the loss gradient outweighs it
    and no slope reaches the threshold), so it is an integral controller instead:
    ``lambda = strength * slow_factor * slow_growth ** s``, ``s`` the steps since the last unit
    froze (or since the fraction came within the margin). Each freeze drops the penalty back to
    the gentle level; while nothing freezes it grows geometrically (up to 1e6 times the gentle
    level, which keeps it finite) until it
    outweighs the loss gradient, so training long enough always reaches the target, and ends
    exactly at it (the cap above). The paper tuned ``lambda`` by hand to avoid undershooting
    and gives no numbers; 0.05, 0.1 and 1.02 are our choice (``slow_growth=1`` is a fixed
    slow-down: ``lambda = strength * slow_factor``).

    Args:
      inner: the optimizer (e.g. ``optax.sgd(0.1, momentum=0.9)``).
      strength: the penalty weight ``lambda >= 0``; 0 with an ``inactive`` mask retrains with
        fixed linear units (mask transfer, sec. 4.1.1).
      threshold: slope above which a unit becomes inactive (paper: 0.99).
      target: goal fraction of inactive units in ``[0, 1]``, or ``None`` for no goal.
      slow_margin: distance to the target at which the penalty is lowered.
      slow_factor: factor in ``[0, 1]`` applied to ``strength`` near the target, right after
        a unit froze.
      slow_growth: factor ``>= 1`` by which the lowered penalty grows per step without a freeze.
      inactive: optional initial ``{layer: bool[width]}`` of units already inactive (layers left
        out start all active). Their slopes are set to 1 by the first update; set them
        beforehand with :func:`~jaxprune.rewrites.set_linear_slopes` so the first forward pass
        already sees them linear.
      freeze_new: if False, only the units of ``inactive`` are ever frozen: slopes that cross
        ``threshold`` stay trainable. With ``strength=0`` this retrains unregularized PReLUs
        around a transferred mask, as paper 004 does (sec. 4.1.1); with True (default) a unit
        becomes inactive when its slope crosses ``threshold``, whatever ``strength``.
      slope_key: the leaf name of PReLU slopes.

    Returns:
      An ``optax.GradientTransformation`` with a :class:`SlopeSparsityState`.

    Raises:
      ValueError: negative or non-finite ``strength``, ``threshold`` outside ``(0, 1]``,
        ``target`` outside ``[0, 1]``, bad ``slow_*``, ``target`` with ``freeze_new=False``,
        params without slopes, an ``inactive`` entry that names no slope layer or has the wrong
        shape, or ``update`` without params.

    >>> import jax.numpy as jnp, optax
    >>> params = {"prelu_0": {"slope": jnp.array([0.0, 0.995, 0.5])}, "w": jnp.ones(2)}
    >>> tx = slope_sparsity(optax.sgd(0.1), strength=1.0)
    >>> state = tx.init(params)
    >>> grads = jax.tree.map(jnp.zeros_like, params)
    >>> updates, state = tx.update(grads, state, params)
    >>> optax.apply_updates(params, updates)["prelu_0"]["slope"].tolist()
    [0.10000000149011612, 1.0, 0.6000000238418579]
    >>> state.inactive["prelu_0"].tolist()
    [False, True, False]

    References:
      Paper 004, sec. 3 (penalty, inactive at slope > 0.99), sec. 4 ("Linearization Phase"),
      sec. 4.1.2 (goal percentage, lowered weight near the target).
    """
    if not (np.isfinite(strength) and strength >= 0):
        raise ValueError(f"strength: expected a finite lambda >= 0, got {strength}")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold: expected a slope in (0, 1], got {threshold}")
    if target is not None and not 0 <= target <= 1:
        raise ValueError(f"target: expected a fraction in [0, 1], got {target}")
    if not 0 <= slow_margin <= 1:
        raise ValueError(f"slow_margin: expected a fraction in [0, 1], got {slow_margin}")
    if not 0 <= slow_factor <= 1:
        raise ValueError(f"slow_factor: expected a factor in [0, 1], got {slow_factor}")
    if not (np.isfinite(slow_growth) and slow_growth >= 1):
        raise ValueError(f"slow_growth: expected a finite factor >= 1, got {slow_growth}")
    if target is not None and not freeze_new:
        raise ValueError("target: needs freeze_new=True (the target is reached by freezing)")
    initial = dict(inactive or {})

    def init_fn(params):
        layers = slope_layers_of(params, slope_key)
        if not layers:
            raise ValueError(f"params: no leaf named {slope_key!r} (no PReLU slopes to regularize)")
        unknown = sorted(set(initial) - set(layers))
        if unknown:
            raise ValueError(
                f"inactive: {unknown[0]!r} is not a slope layer; expected {sorted(layers)}"
            )
        mask = {}
        for layer, shape in layers.items():
            m = initial.get(layer, np.zeros(shape, bool))
            mask[layer] = check_mask("inactive", layer, m, shape)  # bool: 0.5 is no answer
        return SlopeSparsityState(
            mask, jnp.asarray(strength, jnp.float32), inner.init(params), jnp.zeros((), jnp.int32)
        )

    def update_fn(grads, state, params=None):
        if params is None:
            raise ValueError("params: slope_sparsity needs the current params in update()")
        slopes = {}
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            layer = slope_layer(path, slope_key)
            if layer is not None:
                slopes[layer] = leaf
        old = state.inactive
        cand = {k: (slopes[k] > threshold) & ~old[k] for k in old}
        total = sum(m.size for m in old.values())
        lam = jnp.asarray(strength, jnp.float32)
        stall = jnp.zeros((), jnp.int32)
        if not freeze_new:
            new = old
        elif target is None:
            new = {k: old[k] | cand[k] for k in old}
        else:
            goal = math.ceil(target * total - 1e-9)
            allowed = jnp.maximum(goal - sum(jnp.sum(m) for m in old.values()), 0)
            score = jnp.concatenate(
                [jnp.where(cand[k], slopes[k], -jnp.inf).astype(jnp.float32).ravel() for k in old]
            )
            rank = jnp.zeros(total, jnp.int32).at[jnp.argsort(-score)].set(jnp.arange(total))
            pick = (rank < allowed) & jnp.isfinite(score)
            new, offset = {}, 0
            for k in old:
                n = old[k].size
                new[k] = old[k] | pick[offset : offset + n].reshape(old[k].shape)
                offset += n
            before = sum(jnp.sum(m) for m in old.values())
            count = sum(jnp.sum(m) for m in new.values())
            near = count / total >= target - slow_margin
            was_near = before / total >= target - slow_margin
            # integral controller: steps without a freeze since entering the slow zone
            stall = jnp.where(near & was_near & (count == before), state.stall + 1, 0)
            stall = jnp.minimum(stall, 2**30).astype(jnp.int32)
            log_boost = jnp.minimum(stall * np.float32(math.log(slow_growth)), _LOG_MAX_BOOST)
            slow = strength * slow_factor * jnp.exp(log_boost)
            lam = jnp.where(count >= goal, 0.0, jnp.where(near, slow, strength))
            lam = lam.astype(jnp.float32)

        def penalize(path, g, p):
            layer = slope_layer(path, slope_key)
            if layer is None:
                return g
            pull = -jnp.sign(1 - p) * lam.astype(p.dtype)
            return jnp.where(new[layer], jnp.zeros_like(g), g + pull.astype(g.dtype))

        grads = jax.tree_util.tree_map_with_path(penalize, grads, params)
        updates, inner_state = inner.update(grads, state.inner_state, params)

        def freeze(path, u, p):
            layer = slope_layer(path, slope_key)
            if layer is None:
                return u
            return jnp.where(new[layer], (1 - p).astype(u.dtype), u)

        updates = jax.tree_util.tree_map_with_path(freeze, updates, params)
        return updates, SlopeSparsityState(new, lam, inner_state, stall)

    return optax.GradientTransformation(init_fn, update_fn)
