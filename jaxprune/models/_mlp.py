"""Dense ReLU network with optional collapsible linear layers (paper 000, sec. 3, Eqs. 1-6)."""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxprune.models._activations import kernel_initializer, output_activation

__all__ = ["MLP"]


class MLP(nn.Module):
    """A fully connected ReLU network padded with purely linear layers.

    The architecture is described entirely by the fields, so a frozen dataclass *is* the
    architecture and the parameters are a plain pytree.

    Parameter paths (documented, relied on by rewrites and analyses):

    * ``relu_{i}``: the i-th hidden ReLU layer, ``kernel`` of shape ``(in, hidden[i])`` and
      ``bias`` of shape ``(hidden[i],)``.
    * ``linear_{i}_{j}``: the j-th linear (identity-activation) layer inserted after ``relu_{i}``.
    * ``out``: the output layer, followed by ``out_activation``.

    Attributes:
      hidden: widths of the hidden ReLU layers.
      out: width of the output layer.
      out_activation: ``"sigmoid"``, ``"identity"`` (logits) or ``"softmax"``.
      linear_after: for each hidden layer, the widths of the linear layers inserted after it
        (``()`` for none). Empty means no linear layers anywhere.
      kernel_init: kernel initializer name; default ``"glorot_uniform"`` with zero biases, which
        is Keras' ``Dense`` default and so the paper's (Flax's own default is ``lecun_normal``).

    The paper's four models (sec. 3.2, Table 1):

    >>> import jax, jaxprune as jp
    >>> m1 = jp.models.MLP(hidden=(3,))
    >>> m2 = jp.models.MLP(hidden=(3,), linear_after=((9,),))
    >>> m3 = jp.models.MLP(hidden=(3,), linear_after=((3, 3, 3),))
    >>> m4 = jp.models.MLP(hidden=(12,))
    >>> x = jax.numpy.zeros((1, 2))
    >>> [jp.analysis.count_params(m.init(jax.random.key(0), x)["params"]) for m in (m1, m2, m3, m4)]
    [13, 55, 49, 49]

    Model 1 has 13 parameters, not the paper's 9: 2x3 weights + 3 biases + 3x1 weights + 1 bias.
    The paper's 9 counts weights only (6 + 3); its 55 and 49 for models 2-4 include biases.
    """

    hidden: tuple[int, ...] = (3,)
    out: int = 1
    out_activation: str = "sigmoid"
    linear_after: tuple[tuple[int, ...], ...] = ()
    kernel_init: str = "glorot_uniform"

    def __post_init__(self):
        if any(int(w) < 1 for w in self.hidden):
            raise ValueError(f"hidden: widths must be >= 1, got {self.hidden}")
        if self.linear_after and len(self.linear_after) != len(self.hidden):
            raise ValueError(
                f"linear_after: expected {len(self.hidden)} tuples (one per hidden layer) or (), "
                f"got {len(self.linear_after)}"
            )
        for widths in self.linear_after:
            if any(int(w) < 1 for w in widths):
                raise ValueError(f"linear_after: widths must be >= 1, got {self.linear_after}")
        if self.out < 1:
            raise ValueError(f"out: must be >= 1, got {self.out}")
        output_activation(self.out_activation)
        kernel_initializer(self.kernel_init)  # validates the name
        super().__post_init__()

    def _linear_widths(self, i: int) -> tuple[int, ...]:
        """Widths of the linear layers after hidden layer ``i`` (``()`` if none)."""
        return tuple(self.linear_after[i]) if self.linear_after else ()

    def layer_names(self) -> tuple[str, ...]:
        """All dense layers in forward order."""
        names = []
        for i in range(len(self.hidden)):
            names.append(f"relu_{i}")
            names += [f"linear_{i}_{j}" for j in range(len(self._linear_widths(i)))]
        return (*names, "out")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Forward pass.

        Args:
          x: inputs of shape ``(..., features)``.

        Returns:
          Outputs of shape ``(..., out)`` after ``out_activation``.
        """
        init = kernel_initializer(self.kernel_init)
        h = x
        for i, width in enumerate(self.hidden):
            name = f"relu_{i}"
            h = nn.relu(nn.Dense(width, kernel_init=init, name=name)(h))
            for j, lw in enumerate(self._linear_widths(i)):
                h = nn.Dense(lw, kernel_init=init, name=f"linear_{i}_{j}")(h)
        return output_activation(self.out_activation)(
            nn.Dense(self.out, kernel_init=init, name="out")(h)
        )
