"""Wrap any Flax model so that its initial params stay fixed and only per-weight scores train."""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxprune._straight_through import check_kind, effective_params, init_scores

__all__ = ["Scored"]


class Scored(nn.Module):
    """Any Flax model whose params are gated by straight-through scores (masks or sign flips).

    The wrapper's params are ``{"weights": <the inner model's params>, "scores": <same tree>}``;
    the forward pass is ``model.apply({"params": effective_params(weights, scores, kind)}, x)``.
    Train it with ``train_scores(optax.adam(lr))`` (e.g. through
    :func:`~jaxprune.training.fit`) so the weights stay fixed. Every leaf is gated, biases
    included: the paper's networks have none, so give the inner model ``use_bias=False`` layers
    to follow it.

    Attributes:
      model: the inner Flax module (its own initializers draw the fixed weights).
      kind: ``"mask"`` or ``"flip"``.

    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> net = Scored(nn.Dense(2, use_bias=False), kind="flip")
    >>> params = net.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    >>> sorted(params), params["scores"]["kernel"].shape
    (['scores', 'weights'], (3, 2))

    References:
      Paper 003, sec. 2 (scores per weight, weights fixed) and sec. 3 (sign flipping).
    """

    model: nn.Module
    kind: str = "mask"

    def __post_init__(self):
        check_kind(self.kind)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *args, **kwargs) -> jax.Array:
        inner = self.model.clone(parent=None)
        weights = self.param("weights", lambda k: inner.init(k, x, *args, **kwargs)["params"])
        scores = self.param("scores", lambda k: init_scores(k, weights))
        out = inner.apply(
            {"params": effective_params(weights, scores, self.kind)}, x, *args, **kwargs
        )
        return out  # type: ignore[return-value]  # apply without mutable= returns the output
