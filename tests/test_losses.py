"""Built-in losses check the shapes of predictions and targets (no silent broadcasting)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune as jp
from jaxprune._losses import accuracy

X = jax.random.normal(jax.random.key(0), (48, 3))
W_TRUE = jnp.array([1.5, -2.0, 0.5])


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(x)


class Logistic(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.sigmoid(nn.Dense(1)(x))


def _fit(model, x, y, loss, epochs=300):
    return jp.training.fit(
        model,
        (x, y),
        keys=jax.random.key(0),
        loss=loss,
        optimizer=optax.adam(0.05),
        batch_size=x.shape[0],
        patience=epochs,
        max_epochs=epochs,
        progress=False,
    )


def test_regression_with_column_predictions_and_flat_targets_reaches_least_squares():
    # (N, 1) predictions against (N,) targets: the trailing axis of size 1 is dropped (as
    # Keras); broadcasting to (N, N) would end near var(y) with near-constant predictions
    noise = 0.3 * jax.random.normal(jax.random.key(1), (48,))
    y = X @ W_TRUE + 0.7 + noise
    a = np.concatenate([np.asarray(X), np.ones((48, 1))], axis=1)
    coef, *_ = np.linalg.lstsq(a, np.asarray(y), rcond=None)
    optimum = float(np.mean((a @ coef - np.asarray(y)) ** 2))
    res = _fit(Linear(), X, y, "mse")
    got = float(jp.training.evaluate(Linear(), res.params, (X, y), "mse"))
    assert got == pytest.approx(optimum, rel=1e-3)
    np.testing.assert_allclose(res.params["Dense_0"]["kernel"][:, 0], coef[:3], atol=2e-3)
    np.testing.assert_allclose(res.params["Dense_0"]["bias"], coef[3:], atol=2e-3)
    assert optimum < 0.5 * float(jnp.var(y))


def test_binary_classification_of_a_separable_set_reaches_accuracy_one():
    y = (X @ W_TRUE > 0).astype(jnp.float32)  # (N,) labels, (N, 1) sigmoid outputs
    res = _fit(Logistic(), X, y, "binary_cross_entropy", epochs=200)
    prob = Logistic().apply({"params": res.params}, X)
    assert prob.shape == (48, 1)
    assert float(jnp.mean((prob[:, 0] > 0.5) == (y > 0.5))) == 1.0
    assert float(accuracy(prob, y, "binary_cross_entropy")) == 1.0


@pytest.mark.parametrize(
    "loss, pred_shape, target_shape, integer",
    [
        ("mse", (4, 2), (4,), False),
        ("mse", (4, 3), (4, 2), False),
        ("mse", (4,), (4, 2), False),
        ("mse", (4, 1), (5,), False),
        ("binary_cross_entropy", (4, 2), (4,), False),
        ("binary_cross_entropy", (4, 1, 1), (4,), False),
        ("cross_entropy", (4, 3), (4, 2), True),
        ("cross_entropy", (4, 3), (5,), True),
        ("cross_entropy", (4, 3), (4,), False),
        ("cross_entropy", (4, 3), (4, 2), False),
        ("cross_entropy", (4, 1), (4,), True),
    ],
)
def test_every_builtin_loss_names_both_shapes_on_a_mismatch(
    loss, pred_shape, target_shape, integer
):
    pred = jnp.full(pred_shape, 0.5)
    target = jnp.zeros(target_shape, jnp.int32 if integer else jnp.float32)
    with pytest.raises(ValueError, match=rf"^loss {loss!r}: .*{pred_shape}.*{target_shape}"):
        jp.training.get_loss(loss)(pred, target)
    with pytest.raises(ValueError, match=rf"^loss {loss!r}: .*{pred_shape}.*{target_shape}"):
        jax.jit(jp.training.get_loss(loss))(pred, target)  # shapes are static under jit


@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy"])
def test_a_trailing_singleton_on_one_side_is_dropped_under_jit(loss):
    p = jnp.array([[0.2], [0.9], [0.6]])
    t = jnp.array([0.0, 1.0, 1.0])
    if loss == "mse":
        want = [0.04, 0.01, 0.16]
    else:
        want = [-np.log(0.8), -np.log(0.9), -np.log(0.6)]
    fn = jax.jit(jp.training.get_loss(loss))
    np.testing.assert_allclose(fn(p, t), want, rtol=1e-5)
    np.testing.assert_allclose(fn(p[:, 0], t[:, None]), want, rtol=1e-5)
    np.testing.assert_allclose(fn(p, t[:, None]), want, rtol=1e-5)


def test_cross_entropy_label_forms_agree_and_are_per_example():
    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    labels = jnp.array([0, 2])
    want = [2.0 - np.log(np.exp(2) + 2), 3.0 - np.log(1 + np.e + np.exp(3))]
    ce = jp.training.get_loss("cross_entropy")
    np.testing.assert_allclose(ce(logits, labels), -np.asarray(want), rtol=1e-6)
    np.testing.assert_allclose(ce(logits, labels[:, None]), -np.asarray(want), rtol=1e-6)
    np.testing.assert_allclose(ce(logits, jax.nn.one_hot(labels, 3)), -np.asarray(want), rtol=1e-6)
    # one label per position (e.g. per pixel): the per-example loss is the mean over positions
    seq = jnp.stack([logits, logits[::-1]], axis=0)  # (2 examples, 2 positions, 3 classes)
    got = ce(seq, jnp.array([[0, 2], [2, 0]]))
    np.testing.assert_allclose(got, [-np.mean(want)] * 2, rtol=1e-6)


def test_cross_entropy_on_one_logit_is_refused():
    # softmax over a single class is 1 whatever the logit: the loss would be 0 forever
    with pytest.raises(ValueError, match="binary_cross_entropy"):
        jp.training.get_loss("cross_entropy")(jnp.zeros((4, 1)), jnp.zeros(4, jnp.int32))


def test_accuracy_follows_the_loss():
    prob = jnp.array([[0.9], [0.2], [0.6]])
    assert float(
        accuracy(prob, jnp.array([1.0, 0.0, 0.0]), "binary_cross_entropy")
    ) == pytest.approx(2 / 3)
    logits = jnp.array([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    assert float(accuracy(logits, jnp.array([1, 0, 0]), "cross_entropy")) == pytest.approx(2 / 3)
    assert float(accuracy(logits, jnp.array([[1], [0], [0]]), "cross_entropy")) == pytest.approx(
        2 / 3
    )
    one_hot = jax.nn.one_hot(jnp.array([1, 0, 0]), 2)
    assert float(accuracy(logits, one_hot, "cross_entropy")) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="loss 'mse': accuracy"):
        accuracy(prob, jnp.array([1.0, 0.0, 0.0]), "mse")  # argmax of one output is always 0
