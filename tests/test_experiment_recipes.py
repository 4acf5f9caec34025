"""The recipe registry and the shared --arch/--dataset plumbing of the experiments."""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import _common, _recipes

tfds = pytest.importorskip("tensorflow_datasets")


def test_paper004_recipe_is_fig26_and_its_multistep_schedule_divides_by_ten():
    r = _recipes.get_arch("resnet56").recipe
    assert (r.optimizer, r.lr, r.momentum, r.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    assert (r.batch, r.epochs, r.milestones, r.augment) == (256, 200, (100, 150), "flip")
    post = _recipes.get_arch("resnet56_noshort").post
    assert (post.epochs, post.milestones, post.lr) == (30, (10, 20), 0.1)
    lr = r.schedule(steps_per_epoch=3)
    got = [float(lr(s)) for s in (0, 299, 300, 449, 450, 10_000)]
    np.testing.assert_allclose(got, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
    quick = r.quick(epochs=4, batch=8)
    assert (quick.epochs, quick.batch, quick.milestones) == (4, 8, (2, 3))


def test_recipe_optimizer_is_pytorch_sgd_with_coupled_weight_decay():
    # two steps by hand: v1 = g1 + wd w0, w1 = w0 - lr v1; v2 = 0.9 v1 + g2 + wd w1, ...
    r = _recipes.Recipe(lr=0.5, momentum=0.9, weight_decay=0.1, epochs=10, milestones=(1,))
    tx = r.optimizer_for(steps_per_epoch=1)
    w0, g1, g2 = jnp.array([2.0]), jnp.array([1.0]), jnp.array([-3.0])
    state = tx.init(w0)
    u1, state = tx.update(g1, state, w0)
    w1 = w0 + u1
    u2, _ = tx.update(g2, state, w1)
    v1 = 1.0 + 0.1 * 2.0
    w1_hand = 2.0 - 0.5 * v1
    v2 = 0.9 * v1 + -3.0 + 0.1 * w1_hand
    np.testing.assert_allclose(w1, [w1_hand], rtol=1e-6)
    np.testing.assert_allclose(w1 + u2, [w1_hand - 0.05 * v2], rtol=1e-6)  # lr / 10 at epoch 1


def test_recipes_and_registry_reject_bad_input():
    with pytest.raises(ValueError, match="milestones: expected epochs in"):
        _recipes.Recipe(epochs=10, milestones=(10,))
    with pytest.raises(ValueError, match="augment: expected one of"):
        _recipes.Recipe(augment="mixup")
    with pytest.raises(ValueError, match="--arch: expected one of"):
        _recipes.get_arch("resnet1001")
    with pytest.raises(ValueError, match="already registered"):
        _recipes.register("resnet56", _recipes.get_arch("resnet56"))


@pytest.mark.parametrize("name", ["resnet56", "resnet56_noshort", "pyramidnet110"])
def test_quick_archs_build_and_give_logits(name):
    model = _recipes.get_arch(name).build(10, True)
    x = jnp.zeros((2, 32, 32, 3))
    variables = model.init(jax.random.key(0), x)
    assert model.apply(variables, x).shape == (2, 10)


def test_load_images_reads_quick_slices_of_a_tfds_dataset():
    parser = argparse.ArgumentParser()
    _common.add_arch_dataset(
        parser, archs=["resnet56"], datasets=["digits", "cifar10"],
        default_arch="resnet56", default_dataset="digits",
    )  # fmt: skip
    args = parser.parse_args(["--dataset", "cifar10"])
    args.quick = True
    with tfds.testing.mock_data(num_examples=20):
        data = _common.load_images(args, quick_train=12, quick_test=5)
    assert data.train[0].shape == (12, 32, 32, 3) and data.train[0].dtype == np.uint8
    assert data.test[1].shape == (5,) and data.num_classes == 10
    digits = _common.load_images(parser.parse_args([]))
    assert digits.train[0].shape == (1438, 8, 8, 1) and digits.num_classes == 10
    assert digits.train[0].max() == 255
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "svhn"])
