"""Channel-wise PReLU and the networks built on it (paper 004, sec. 3).

A channel-wise PReLU has one learnable slope per channel (Flax's ``nn.PReLU`` has one scalar per
layer). Slope 0 is a ReLU, slope 1 is the identity: a channel whose slope is 1 is *linear*
("inactive" in paper 004's words) and only forms linear combinations of earlier channels.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprune.models._activations import output_activation

__all__ = ["ChannelPReLU", "PReLUMLP", "PReLUResMLP", "prelu"]


def prelu(x: jax.Array, slope: jax.Array) -> jax.Array:
    """``x`` where ``x >= 0``, ``slope * x`` elsewhere; ``slope`` broadcasts over the last axis.

    >>> import jax.numpy as jnp
    >>> prelu(jnp.array([[-2.0, 3.0], [-2.0, -1.0]]), jnp.array([0.5, 1.0])).tolist()
    [[-1.0, 3.0], [-1.0, -1.0]]

    References:
      He et al. 2015 (PReLU); paper 004, sec. 3 (one slope per channel).
    """
    return jnp.where(x >= 0, x, jnp.asarray(slope, x.dtype) * x)


class ChannelPReLU(nn.Module):
    """PReLU with one slope per channel (last axis), param ``slope`` of shape ``(channels,)``.

    Initialized to ``slope_init`` (default 0: the module starts as a ReLU, as in paper 004,
    "PReLUs with initial negative slope 0").

    >>> import jax, jax.numpy as jnp
    >>> act = ChannelPReLU()
    >>> v = act.init(jax.random.key(0), jnp.ones((1, 3)))
    >>> v["params"]["slope"].tolist()
    [0.0, 0.0, 0.0]
    >>> act.apply({"params": {"slope": jnp.array([0.0, 0.5, 1.0])}}, -jnp.ones((1, 3))).tolist()
    [[-0.0, -0.5, -1.0]]

    References:
      Paper 004, sec. 3.
    """

    slope_init: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        slope = self.param(
            "slope", lambda _, shape: jnp.full(shape, self.slope_init, jnp.float32), x.shape[-1:]
        )
        return prelu(x, slope)


def _check_skips(skips, n_nodes: int) -> tuple[tuple[int, int], ...]:
    out = []
    for pair in skips:
        if len(pair) != 2:
            raise ValueError(f"skips: expected (src, dst) pairs, got {pair!r}")
        a, b = int(pair[0]), int(pair[1])
        if not (0 <= a and a + 2 <= b <= n_nodes - 1):
            raise ValueError(
                f"skips: ({a}, {b}) is not a skip; expected 0 <= src and src + 2 <= dst <= "
                f"{n_nodes - 1} (node 0 is the input, node i + 1 hidden layer i, node "
                f"{n_nodes - 1} the output)"
            )
        out.append((a, b))
    if len(set(out)) != len(out):
        raise ValueError(f"skips: duplicate pairs in {skips}")
    return tuple(sorted(out))


class PReLUMLP(nn.Module):
    """Dense network with channel-wise PReLU activations and optional linear skip connections.

    Nodes are numbered ``0`` (input), ``i + 1`` (hidden layer ``i``'s PReLU output) and
    ``len(hidden) + 1`` (the output, before ``out_activation``). Node ``b``'s pre-activation is
    the dense layer from node ``b - 1`` plus, for every ``(a, b)`` in ``skips``, a bias-free
    linear map from node ``a``. Without skips this is a plain PReLU MLP; the skips are what
    :func:`~jaxprune.rewrites.fold_linear` produces when it folds linear channels away.

    Parameter paths:

    * ``dense_{i}``: hidden layer ``i``, ``kernel (in, hidden[i])``, ``bias (hidden[i],)``.
    * ``prelu_{i}``: ``slope (hidden[i],)``, initialized to 0 (ReLU).
    * ``skip_{a}_{b}``: ``kernel (width(a), width(b))``, no bias.
    * ``out``: output layer ``kernel (hidden[-1], out)``, ``bias (out,)``.

    Attributes:
      hidden: widths of the hidden layers (at least one).
      out: output width.
      out_activation: as in :class:`~jaxprune.models.MLP`.
      skips: ``(src, dst)`` node pairs with ``dst >= src + 2``.

    >>> import jax, jaxprune as jp
    >>> net = jp.models.PReLUMLP(hidden=(4, 3), out=2, skips=((0, 2),))
    >>> p = net.init(jax.random.key(0), jax.numpy.zeros((1, 5)))["params"]
    >>> {k: {n: v.shape for n, v in d.items()} for k, d in p.items()}["skip_0_2"]
    {'kernel': (5, 3)}
    >>> net.slope_layers()
    ('prelu_0', 'prelu_1')

    References:
      Paper 004, sec. 3 (ReLUs replaced by channel-wise PReLUs).
    """

    hidden: tuple[int, ...] = (16,)
    out: int = 1
    out_activation: str = "identity"
    skips: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        if not self.hidden or any(int(w) < 1 for w in self.hidden):
            raise ValueError(f"hidden: expected at least one width >= 1, got {self.hidden}")
        if self.out < 1:
            raise ValueError(f"out: must be >= 1, got {self.out}")
        output_activation(self.out_activation)
        _check_skips(self.skips, len(self.hidden) + 2)
        super().__post_init__()

    def slope_layers(self) -> tuple[str, ...]:
        """Names of the PReLU layers (``prelu_0``, ...), in forward order."""
        return tuple(f"prelu_{i}" for i in range(len(self.hidden)))

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Forward pass on ``(..., features)`` inputs; returns ``(..., out)``."""
        skips = _check_skips(self.skips, len(self.hidden) + 2)
        nodes = [x]
        n_out = len(self.hidden) + 1
        for b in range(1, n_out + 1):
            width = self.out if b == n_out else self.hidden[b - 1]
            name = "out" if b == n_out else f"dense_{b - 1}"
            z = nn.Dense(width, name=name)(nodes[b - 1])
            for a, bb in skips:
                if bb == b:
                    z = z + nn.Dense(width, use_bias=False, name=f"skip_{a}_{b}")(nodes[a])
            if b < n_out:
                z = ChannelPReLU(name=f"prelu_{b - 1}")(z)
            nodes.append(z)
        return output_activation(self.out_activation)(nodes[-1])


class PReLUResMLP(nn.Module):
    """Residual dense network (pre-activation blocks) with channel-wise PReLUs.

    ``h = stem(x)``; each block ``b`` computes ``t = h`` then, for ``j < block_size``,
    ``t = dense_{b}_{j}(prelu_{b}_{j}(t))``, and ``h = h + t`` (``shortcut=True``) or ``h = t``;
    finally ``out(prelu_final(h))``. This is the dense analogue of the pre-activation ResNet
    (BasicBlock v2, identity shortcut "A") used in paper 004; ``shortcut=False`` is its
    "NoShort" variant.

    Parameter paths: ``stem``, ``dense_{b}_{j}`` (``kernel``, ``bias``), ``prelu_{b}_{j}``
    (``slope``), ``prelu_final`` (``slope``), ``out``.

    >>> import jax, jaxprune as jp
    >>> net = jp.models.PReLUResMLP(width=8, blocks=2, out=3)
    >>> p = net.init(jax.random.key(0), jax.numpy.zeros((1, 5)))["params"]
    >>> net.slope_layers()
    ('prelu_0_0', 'prelu_0_1', 'prelu_1_0', 'prelu_1_1', 'prelu_final')
    >>> net.apply({"params": p}, jax.numpy.ones((2, 5))).shape
    (2, 3)

    References:
      Paper 004, sec. 4 and App. C.1 (ResNet with and without shortcuts).
    """

    width: int = 32
    blocks: int = 3
    block_size: int = 2
    out: int = 10
    out_activation: str = "identity"
    shortcut: bool = True

    def __post_init__(self):
        for field in ("width", "blocks", "block_size", "out"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field}: must be >= 1, got {getattr(self, field)}")
        output_activation(self.out_activation)
        super().__post_init__()

    def slope_layers(self) -> tuple[str, ...]:
        """Names of the PReLU layers in forward order."""
        names = [f"prelu_{b}_{j}" for b in range(self.blocks) for j in range(self.block_size)]
        return (*names, "prelu_final")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Forward pass on ``(..., features)`` inputs; returns ``(..., out)``."""
        h = nn.Dense(self.width, name="stem")(x)
        for b in range(self.blocks):
            t = h
            for j in range(self.block_size):
                t = ChannelPReLU(name=f"prelu_{b}_{j}")(t)
                t = nn.Dense(self.width, name=f"dense_{b}_{j}")(t)
            h = h + t if self.shortcut else t
        h = ChannelPReLU(name="prelu_final")(h)
        return output_activation(self.out_activation)(nn.Dense(self.out, name="out")(h))
