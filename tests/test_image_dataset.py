"""Image datasets: the offline digits split and the TFDS path (under ``tfds.testing.mock_data``)."""

import sys

import numpy as np
import pytest

import jaxprune as jp

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.mark.parametrize(
    ("name", "shape"), [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3)), ("cifar100", (32, 32, 3))]
)
def test_tfds_path_reads_a_whole_split_as_scaled_float_images(name, shape):
    with tfds.testing.mock_data(num_examples=6):
        x, y = jp.data.image_dataset(name, "test")
        raw = tfds.data_source(name, split="test")
        expected = np.stack([raw[i]["image"] for i in range(6)]).astype(np.float32) / 255.0
        labels = np.array([raw[i]["label"] for i in range(6)])
    assert x.shape == (6, *shape) and x.dtype == np.float32
    assert y.shape == (6,) and y.dtype == np.int32
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(y, labels)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_missing_tfds_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"jaxprune\[tfds\]"):
        jp.data.image_dataset("mnist")


def test_digits_split_is_a_deterministic_partition():
    x_tr, y_tr = jp.data.image_dataset("digits", "train", seed=3)
    x_te, y_te = jp.data.image_dataset("digits", "test", seed=3)
    assert len(y_tr) + len(y_te) == 1797 and len(y_te) == 359
    # the two splits share no image and together hold every digit
    rows = {r.tobytes() for r in x_tr.reshape(len(x_tr), -1)}
    assert not any(r.tobytes() in rows for r in x_te.reshape(len(x_te), -1)[:50])
    np.testing.assert_array_equal(jp.data.image_dataset("digits", "test", seed=3)[0], x_te)
    assert not np.array_equal(jp.data.image_dataset("digits", "test", seed=4)[1], y_te)
