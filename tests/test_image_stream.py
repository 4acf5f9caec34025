"""Streaming TFDS batches by random access (under ``tfds.testing.mock_data``) and prefetch."""

import numpy as np
import pytest

import jaxprune as jp

tfds = pytest.importorskip("tensorflow_datasets")


def _records(name, split, n):
    source = tfds.data_source(name, split=split)
    return [(np.asarray(source[i]["image"]), int(source[i]["label"])) for i in range(n)]


def test_image_batches_cover_the_split_once_with_the_stored_labels():
    with tfds.testing.mock_data(num_examples=10):
        batches = list(jp.data.image_batches("cifar10", "train", 4, drop_remainder=False))
        again = list(jp.data.image_batches("cifar10", "train", 4, drop_remainder=False))
        other = list(jp.data.image_batches("cifar10", "train", 4, epoch=1, drop_remainder=False))
        dropped = list(jp.data.image_batches("cifar10", "train", 4))
        records = _records("cifar10", "train", 10)
        classes = jp.data.image_classes("cifar10"), jp.data.image_classes("cifar100")
    assert classes == (10, 100)
    assert [len(y) for _, y in batches] == [4, 4, 2] and len(dropped) == 2
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.shape == (10, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int32
    assert ((0 <= y) & (y < 10)).all()
    # every record once, each image with its own label
    pairs = sorted((img.tobytes(), lab) for img, lab in zip(x, y, strict=True))
    assert pairs == sorted((img.tobytes(), lab) for img, lab in records)
    # the order is a function of (seed, epoch)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in again]), y)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(batches, other, strict=True))


def test_variable_size_images_are_brought_to_the_square_side():
    with tfds.testing.mock_data(num_examples=6):
        ((x, y),) = list(jp.data.image_batches("imagenet2012", "validation", 6, image_size=24))
        with pytest.raises(ValueError, match="image_size: imagenet2012's images differ in size"):
            next(jp.data.image_batches("imagenet2012", "train", 2))
        with pytest.raises(ValueError, match="image_batches"):
            jp.data.image_dataset("imagenet2012", "train", image_size=24)
        xp, _ = jp.data.image_dataset("oxford_iiit_pet", "test", image_size=16, dtype="uint8")
    assert x.shape == (6, 24, 24, 3) and x.dtype == np.uint8 and ((0 <= y) & (y < 1000)).all()
    assert xp.shape == (6, 16, 16, 3)


def test_fit_image_keeps_the_central_square_of_a_resized_image():
    from jaxprune.data._images import fit_image

    img = np.zeros((10, 20, 1), np.uint8)
    img[:, 5:15] = 255  # the central 10 x 10 square is white, the sides black
    out = fit_image(img, 10)
    assert out.shape == (10, 10, 1) and (out == 255).all()
    np.testing.assert_array_equal(fit_image(img, None), img)


def test_prefetch_to_device_keeps_order_and_reraises_the_readers_error():
    items = [(np.full(3, i), np.int32(i)) for i in range(5)]
    out = list(jp.data.prefetch_to_device(iter(items), size=2))
    assert [int(y) for _, y in out] == list(range(5))
    np.testing.assert_array_equal(out[3][0], np.full(3, 3))

    def failing():
        yield np.zeros(1)
        raise RuntimeError("bad record 7")

    it = jp.data.prefetch_to_device(failing())
    next(it)
    with pytest.raises(RuntimeError, match="bad record 7"):
        next(it)
    with pytest.raises(ValueError, match="size: expected a positive int"):
        next(jp.data.prefetch_to_device(iter(items), size=0))


def test_threaded_reads_give_the_same_batches_as_one_thread():
    with tfds.testing.mock_data(num_examples=12):
        kw = dict(image_size=8, seed=3, drop_remainder=False)
        one = list(jp.data.image_batches("caltech101", "train", 5, workers=1, **kw))
        four = list(jp.data.image_batches("caltech101", "train", 5, workers=4, **kw))
        with pytest.raises(ValueError, match="workers: expected a positive int"):
            next(jp.data.image_batches("cifar10", "train", 5, workers=0))
    assert [len(y) for _, y in one] == [5, 5, 2]
    for (x1, y1), (x4, y4) in zip(one, four, strict=True):
        np.testing.assert_array_equal(x1, x4)
        np.testing.assert_array_equal(y1, y4)


def test_prefetch_to_device_places_each_batch_with_the_given_sharding():
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    n = jax.device_count()
    mesh = jax.make_mesh((n,), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    items = [np.arange(4 * n, dtype=np.float32) + i for i in range(3)]
    out = list(jp.data.prefetch_to_device(iter(items), sharding=sharding))
    for got, want in zip(out, items, strict=True):
        assert got.sharding == sharding and len(got.addressable_shards) == n
        np.testing.assert_array_equal(got, want)
