"""reinit_scnn --arch: Table 6's architectures run --quick on mock CIFAR-10 (paper 002)."""

import json

import numpy as np
import pytest

from experiments import reinit_scnn

tfds = pytest.importorskip("tensorflow_datasets")

# LW's K: VGG16's 13 convs; the shallow MobileNet's stem and 8 separable blocks; the --quick
# ResNet-50's four bottleneck blocks (one a stage, the stem joining the first)
ROUNDS = {"vgg16": 13, "mobilenet": 9, "resnet50": 4}
PAPER_LW_CIFAR10 = {"vgg16": "81.4", "mobilenet": "83.6", "resnet50": "70.2"}


@pytest.mark.parametrize("arch", sorted(ROUNDS))
def test_quick_arch_on_mock_cifar10(arch, tmp_path):
    argv = ["--quick", "--no-progress", "--arch", arch, "--dataset", "cifar10", "--methods", "lw"]
    argv += ["--seeds", "1", "--steps", "2", "--draws", "0", "--margins", "5"]
    argv += ["--analysis-size", "16", "--out", str(tmp_path)]
    with tfds.testing.mock_data(num_examples=40):
        out = reinit_scnn.main(argv)
    data = json.loads((out / "results.json").read_text())
    config, run = data["config"], data["runs"]["lw"]
    assert config["arch"] == arch and config["rounds"] == ROUNDS[arch]
    assert config["lr_patience"] == 0 and config["image_size"] is None  # --quick: native size
    # 36 training images (4 held out), batch 256 > 36: one full batch a step, 2 steps a round
    np.testing.assert_array_equal(run["steps"], [[2] * ROUNDS[arch]])
    assert len(run["test_acc"]) == 1 and 0.0 <= run["test_acc"][0] <= 100.0
    assert len(run["margins"][0]) == 5 and run["head_product"][0] > 0
    table = (out / "table.md").read_text()
    assert f"paper Table 6: {arch} CIFAR10" in table
    assert f"| {PAPER_LW_CIFAR10[arch]} |" in table.split("| LW |")[1].split("\n")[0] + " |"


def test_on_device_resize_scales_uint8_and_keeps_the_models_variables():
    import jax
    import jax.numpy as jnp

    net = reinit_scnn.ARCHS["scnn"].build(10, True)
    model = reinit_scnn.OnDevice(net, 16)
    x8 = jnp.full((2, 8, 8, 1), 255, jnp.uint8)
    v = model.init(jax.random.key(0), x8)
    assert jax.tree.structure(v) == jax.tree.structure(net.init(jax.random.key(0), x8 / 255.0))
    ones = jnp.ones((2, 16, 16, 1))  # 255 -> 1.0, and a constant image resizes to itself
    np.testing.assert_allclose(model.apply(v, x8), net.apply(v, ones), rtol=1e-6)
    assert model.lw_blocks() == net.lw_blocks() and model.fc_layers() == net.fc_layers()
