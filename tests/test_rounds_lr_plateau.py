"""train_rounds' learning-rate halving on a validation plateau (paper 002, App. B)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp


class Scalar(nn.Module):
    """``out = w`` on an input of ones: plain gradient descent on one number, w0 = 0."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1, use_bias=False, kernel_init=nn.initializers.zeros)(x)


def _by_hand(lr, steps, lr_patience, patience, factor=0.5):
    """The same run written out: GD on (w - 2)^2, validation loss (w - 2.3)^2 after every
    step, Keras' ReduceLROnPlateau and EarlyStopping (best weights restored)."""
    w, scale = 0.0, 1.0
    best_es, wait_es, best_w, done = np.inf, 0, None, False
    best_pl, wait_pl = np.inf, 0
    for _ in range(steps):
        if done:
            break
        w = w - lr * scale * 2 * (w - 2.0)
        v = (w - 2.3) ** 2
        if v < best_es:
            best_es, wait_es, best_w = v, 0, w
        else:
            wait_es += 1
        done = wait_es >= patience
        if lr_patience:
            if v < best_pl:
                best_pl, wait_pl = v, 0
            else:
                wait_pl += 1
            if wait_pl >= lr_patience:
                scale, wait_pl = scale * factor, 0
    return best_w


@pytest.mark.parametrize("lr_patience", [None, 1, 2])
def test_rate_halves_after_lr_patience_evaluations_without_improvement(lr_patience):
    # lr 0.9 overshoots: w oscillates around 2, so the validation loss (optimum 2.3) improves on
    # every other step and a plateau rule with patience 1 halves the rate early.
    x, y = jnp.ones((1, 1)), jnp.full((1, 1), 2.0)
    res = jp.training.train_rounds(
        Scalar(),
        (x, y),
        keys=jax.random.key(0),
        method="bl",
        rounds=1,
        steps_per_round=12,
        loss="mse",
        optimizer=optax.sgd(0.9),
        validation=(x, jnp.full((1, 1), 2.3)),
        eval_every=1,
        patience=6,
        lr_patience=lr_patience,
    )
    w = float(res.variables["params"]["Dense_0"]["kernel"][0, 0])
    np.testing.assert_allclose(w, _by_hand(0.9, 12, lr_patience, 6), rtol=1e-5)


def test_plateau_outcomes_differ_and_bad_arguments():
    assert _by_hand(0.9, 12, None, 6) != pytest.approx(_by_hand(0.9, 12, 1, 6), rel=1e-3)
    x, y = jnp.ones((4, 1)), jnp.ones((4, 1))
    kw = dict(keys=jax.random.key(0), method="bl", rounds=1, steps_per_round=2, loss="mse")
    with pytest.raises(ValueError, match="lr_patience: .* needs validation"):
        jp.training.train_rounds(Scalar(), (x, y), optimizer=optax.sgd(0.1), lr_patience=2, **kw)
    with pytest.raises(ValueError, match="lr_factor"):
        jp.training.train_rounds(
            Scalar(), (x, y), optimizer=optax.sgd(0.1), validation=(x, y), lr_patience=2,
            lr_factor=1.5, **kw,
        )  # fmt: skip
