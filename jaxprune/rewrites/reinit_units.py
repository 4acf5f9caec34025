"""Give chosen ReLU units a fresh start: redraw their weights, reset their optimizer state."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax.linen import initializers

from jaxprune._types import Params, UnitMask
from jaxprune._units import check_unit_mask, next_layer, outgoing_mask, unit_layers
from jaxprune.rewrites.optimizer_state import reset_optimizer_state

__all__ = ["OUTGOING_CHOICES", "reinit_units"]

OUTGOING_CHOICES = ("redraw", "zero", "keep")
"""What :func:`reinit_units` does with a reinitialized unit's outgoing weights."""

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]

_LECUN_NORMAL = initializers.lecun_normal()  # flax nn.Dense / nn.Conv default kernel_init
_ZEROS = initializers.zeros_init()  # flax nn.Dense / nn.Conv default bias_init


def reinit_units(
    params: Params,
    units: UnitMask,
    key: jax.Array,
    *,
    optimizer=None,
    opt_state=None,
    outgoing: str = "redraw",
    kernel_init: Initializer = _LECUN_NORMAL,
    bias_init: Initializer = _ZEROS,
) -> tuple[Params, object]:
    """Redraws the weights of the units in ``units`` and resets their optimizer-state entries.

    For every unit ``u`` with ``units[layer][u]`` True, ``kernel[..., u]`` is replaced by the
    same entries of a fresh ``kernel_init`` draw of the whole kernel and ``bias[u]`` by
    ``bias_init`` (the defaults are Flax's ``Dense``/``Conv`` defaults, i.e. the initializers the
    reference models were built with: LeCun-normal kernels, zero biases; Keras, which the paper
    used, starts biases at zero too). A fresh draw of the whole kernel keeps the layer's fan-in
    scaling. Every other unit is untouched. Pure and jittable: ``units`` may be traced, so one
    compiled program serves every mask and it can be ``vmap``-ed over seeds.

    Outgoing weights (the next layer's entries fed by ``u``; the paper does not say) are, by
    ``outgoing``:

    * ``"redraw"`` (default): redrawn from ``kernel_init`` for the next layer's kernel shape, so
      the unit restarts exactly as at initialization ("a fresh start");
    * ``"zero"``: set to 0 (the network's output is unchanged by the reinit; the unit then only
      learns through its outgoing weights' gradient);
    * ``"keep"``: left as they are.

    If ``optimizer`` and ``opt_state`` are given, the optimizer-state entries of every changed
    parameter entry are reset with :func:`~jaxprune.rewrites.reset_optimizer_state` (any optax
    optimizer), so a fresh weight does not inherit its predecessor's momentum.

    Args:
      params: params of a :class:`~jaxprune.models.MLP` or :class:`~jaxprune.models.ConvNet`
        (layout read from the layer names, see ``jaxprune._units``).
      units: ``{layer: bool[width]}``; True = reinitialize. Missing layers: no unit.
      key: PRNG key.
      optimizer: the optax transformation that produced ``opt_state`` (with ``opt_state``).
      opt_state: its state; returned with the reinitialized entries reset.
      outgoing: ``"redraw"``, ``"zero"`` or ``"keep"``.
      kernel_init: ``init(key, shape, dtype)`` for kernels.
      bias_init: ``init(key, shape, dtype)`` for biases.

    Returns:
      ``(new_params, new_opt_state)``; ``new_opt_state`` is ``None`` when none was given.

    Raises:
      ValueError: for an unknown ``outgoing``, a mask naming unknown layers or of the wrong
        width, or only one of ``optimizer``/``opt_state``.

    >>> import jax, jax.numpy as jnp, jaxprune as jp
    >>> model = jp.models.MLP(hidden=(3,))
    >>> p = model.init(jax.random.key(0), jnp.zeros((1, 2)))["params"]
    >>> q, _ = reinit_units(p, {"relu_0": jnp.array([False, True, False])}, jax.random.key(1))
    >>> (q["relu_0"]["kernel"] != p["relu_0"]["kernel"]).any(axis=0).tolist()
    [False, True, False]
    >>> (q["out"]["kernel"] != p["out"]["kernel"]).any(axis=1).tolist()
    [False, True, False]

    References:
      Paper 000, sec. 4.1 step 7 (reinitialize noncontributing nodes) and sec. 5 (kernels).
    """
    if outgoing not in OUTGOING_CHOICES:
        raise ValueError(f"outgoing: expected one of {OUTGOING_CHOICES}, got {outgoing!r}")
    if (optimizer is None) != (opt_state is None):
        raise ValueError("optimizer, opt_state: give both (to reset the state) or neither")
    units = check_unit_mask(params, units)
    new = {k: dict(v) for k, v in params.items()}
    changed = {
        k: {leaf: jnp.zeros(jnp.shape(a), bool) for leaf, a in v.items()} for k, v in params.items()
    }
    for i, name in enumerate(unit_layers(params)):
        m = units[name]
        k_kernel, k_bias, k_out = jax.random.split(jax.random.fold_in(key, i), 3)
        kernel = jnp.asarray(new[name]["kernel"])  # may hold outgoing redraws
        fresh = kernel_init(k_kernel, kernel.shape, kernel.dtype)
        new[name]["kernel"] = jnp.where(m, fresh, kernel)
        changed[name]["kernel"] = changed[name]["kernel"] | jnp.broadcast_to(m, kernel.shape)
        if "bias" in params[name]:
            bias = jnp.asarray(params[name]["bias"])
            new[name]["bias"] = jnp.where(m, bias_init(k_bias, bias.shape, bias.dtype), bias)
            changed[name]["bias"] = changed[name]["bias"] | m
        nxt = next_layer(params, name)
        if nxt is None or outgoing == "keep":
            continue
        nk = jnp.asarray(new[nxt]["kernel"])
        om = outgoing_mask(nk.shape, m)
        repl = kernel_init(k_out, nk.shape, nk.dtype) if outgoing == "redraw" else 0
        new[nxt]["kernel"] = jnp.where(om, repl, nk)
        changed[nxt]["kernel"] = changed[nxt]["kernel"] | om
    if optimizer is None:
        return new, None
    return new, reset_optimizer_state(optimizer, opt_state, new, changed)
