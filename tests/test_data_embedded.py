"""Embedded sources (scikit-learn digits, synthetic), splitters, resize and normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import jaxdl.data as data
from jaxdl.data import synthetic
from jaxdl.data.resize import resize_uint8


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_DATA", str(tmp_path / "cache"))


def test_digits_split_disjoint_and_stratified():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert len(train) + len(test) == 1797 and abs(len(test) - 0.2 * 1797) < 1
    assert train.images.shape[1:] == (32, 32, 3) and train.real and "scikit-learn" in train.name
    train_rows = {im.tobytes() for im in train.images}
    assert sum(im.tobytes() in train_rows for im in test.images) <= 2  # the source has a few duplicate scans
    train_share = np.bincount(train.labels, minlength=10) / len(train)
    test_share = np.bincount(test.labels, minlength=10) / len(test)
    assert np.abs(train_share - test_share).max() < 0.01
    gray = data.load("digits", "test", image_size=28, channels=1)
    assert gray.images.shape[1:] == (28, 28, 1)
    np.testing.assert_array_equal(gray.labels, test.labels)


def test_resize_matches_pil():
    rng = np.random.default_rng(0)
    for size_in, size_out in [(8, 32), (32, 63), (32, 13)]:
        x = rng.integers(0, 256, (3, size_in, size_in, 1), dtype=np.uint8)
        pil = np.stack([np.asarray(Image.fromarray(im[..., 0]).resize((size_out,) * 2, Image.BILINEAR)) for im in x])
        assert np.abs(resize_uint8(x, size_out)[..., 0].astype(int) - pil).max() <= 1


def test_synthetic_deterministic_shapes_balance():
    a = data.load("synthetic", "train", n=300, seed=3, cache=False)
    b = data.load("synthetic", "train", n=300, seed=3, cache=False)
    c = data.load("synthetic", "train", n=300, seed=4, cache=False)
    assert a.images.shape == (300, 32, 32, 3) and a.images.dtype == np.uint8 and a.labels.dtype == np.int32
    assert a.images.tobytes() == b.images.tobytes() and np.array_equal(a.labels, b.labels)
    assert a.images.tobytes() != c.images.tobytes()
    assert not a.real and "NOT real SVHN" in a.name
    np.testing.assert_array_equal(np.bincount(a.labels, minlength=10), np.full(10, 30))
    assert a.images.std() > 20  # not blank: digits, colours and noise are drawn


def test_synthetic_train_and_test_differ():
    train = data.load("synthetic", "train", n=50, cache=False)
    test = data.load("synthetic", "test", n=50, cache=False)
    assert not {im.tobytes() for im in train.images} & {im.tobytes() for im in test.images}


def test_synthetic_mnist_variant():
    ds = data.load("synthetic-mnist", "test", n=20, cache=False)
    assert ds.images.shape == (20, 28, 28, 1) and "NOT real MNIST" in ds.name and not ds.real


def test_synthetic_cache_hit(monkeypatch):
    first = data.load("synthetic", "test", n=40, seed=1)
    assert len(list((data.cache_dir() / "synthetic").glob("*.npz"))) == 1
    with monkeypatch.context() as m:
        m.setattr(synthetic, "generate", lambda *a, **k: pytest.fail("regenerated despite the cache"))
        again = data.load("synthetic", "test", n=40, seed=1)
    assert again.images.tobytes() == first.images.tobytes() and again.name == first.name
    data.load("synthetic", "test", n=41, seed=1)  # another parameter, another file
    assert len(list((data.cache_dir() / "synthetic").glob("*.npz"))) == 2


def test_stratified_subset_proportions():
    ds = data.load("digits", "train")
    sub = data.stratified_subset(ds, 0.25, seed=0)
    assert len(sub) == round(0.25 * len(ds))
    full_share, sub_share = (np.bincount(d.labels, minlength=10) / len(d) for d in (ds, sub))
    assert np.abs(full_share - sub_share).max() < 0.01
    assert data.stratified_subset(ds, 1.0) is ds
    assert data.stratified_subset(ds, 0.25, seed=1).images.tobytes() != sub.images.tobytes()
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            data.stratified_subset(ds, bad)


def test_train_val_split_disjoint():
    ds = data.load("synthetic", "train", n=200, cache=False)
    train, val = data.train_val_split(ds, 0.1, seed=0)
    assert len(train) == 180 and len(val) == 20
    np.testing.assert_array_equal(np.bincount(val.labels, minlength=10), np.full(10, 2))
    assert not {im.tobytes() for im in train.images} & {im.tobytes() for im in val.images}
    with pytest.raises(ValueError):
        data.train_val_split(ds, 1.0)


def test_normalisation_constants():
    assert data.mean_std(3) == (data.IMAGENET_MEAN, data.IMAGENET_STD)
    (gray_mean,), (gray_std,) = data.mean_std(1)
    assert 0.44 < gray_mean < 0.47 and 0.22 < gray_std < 0.23
    assert data.mean_std(3, "mnist") == ((0.1307,) * 3, (0.3081,) * 3)
    ds = data.Dataset(np.array([0, 255], np.uint8).reshape(2, 1, 1, 1), np.zeros(2, np.int32), "t", True)
    assert data.dataset_mean_std(ds) == ((0.5,), (0.5,))
