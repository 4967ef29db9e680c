"""Input pipeline: reproducibility, coverage of eval data, normalisation, crops, prefetch thread."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest

import jaxdl.data as data
from jaxdl.data import random_crop


def toy(n: int = 50, size: int = 8, channels: int = 3) -> data.Dataset:
    """Each image is constant = its index, so batches reveal exactly which samples they hold."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None] + 1, (n, size, size, channels))
    return data.Dataset(images.copy(), (np.arange(n) % 10).astype(np.int32), "toy", real=False)


UNIT = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)}  # image values == uint8 values


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("jaxdl-prefetch")]


def images_of(loader: data.Loader, epoch: int) -> np.ndarray:
    return np.stack([b["image"] for b in loader.epoch(epoch)])


def test_train_batches_depend_only_on_seed_and_epoch():
    ds = toy()
    a = images_of(data.Loader(ds, 8, train=True, seed=1, **UNIT), 3)
    b = images_of(data.Loader(ds, 8, train=True, seed=1, prefetch=0, **UNIT), 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, images_of(data.Loader(ds, 8, train=True, seed=1, **UNIT), 4))
    assert not np.array_equal(a, images_of(data.Loader(ds, 8, train=True, seed=2, **UNIT), 3))
    resumed = np.stack([b["image"] for b in data.Loader(ds, 8, train=True, seed=1, **UNIT).epoch(3, start=2)])
    np.testing.assert_array_equal(resumed, a[2:])


def test_train_drops_remainder_with_static_shapes():
    loader = data.Loader(toy(50), 8, train=True, **UNIT)
    batches = list(loader.epoch(0))
    assert len(loader) == len(batches) == 6
    assert {b["image"].shape for b in batches} == {(8, 8, 8, 3)} and all(b["mask"].all() for b in batches)
    assert all(b["image"].dtype == np.float32 and b["label"].dtype == np.int32 for b in batches)


def test_eval_covers_every_sample_once_with_mask():
    ds = toy(50)
    loader = data.Loader(ds, 8, train=False, **UNIT)
    batches = list(loader.epoch(0))
    assert len(loader) == len(batches) == 7 and batches[-1]["image"].shape[0] == 8
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 50 and not mask[50:].any()
    centre = np.concatenate([b["image"][:, 4, 4, 0] for b in batches])[mask]
    np.testing.assert_array_equal(np.sort(centre), np.arange(50) + 1)  # no augmentation, no repeats
    labels = np.concatenate([b["label"] for b in batches])[mask]
    np.testing.assert_array_equal(labels, ds.labels)


def test_normalisation_values():
    ds = data.Dataset(np.full((4, 4, 4, 3), 255, np.uint8), np.zeros(4, np.int32), "white", real=False)
    batch = next(data.Loader(ds, 4, train=False, mean=data.IMAGENET_MEAN, std=data.IMAGENET_STD).epoch(0))
    expected = (1 - np.array(data.IMAGENET_MEAN)) / np.array(data.IMAGENET_STD)
    np.testing.assert_allclose(batch["image"][0, 0, 0], expected, rtol=1e-6)


def test_grey_to_rgb_and_resize():
    ds = toy(16, size=28, channels=1)
    loader = data.Loader(ds, 4, train=True, channels=3, image_size=64, **UNIT)
    batch = next(loader.epoch(0))
    assert batch["image"].shape == (4, 64, 64, 3)
    np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])
    with pytest.raises(ValueError, match="mean/std"):
        data.Loader(ds, 4, train=True, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_random_crop_keeps_shape_and_shifts_content():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (64, 10, 10, 3), dtype=np.uint8)
    crops = random_crop(images, 4, rng)
    assert crops.shape == images.shape and crops.dtype == np.uint8
    assert (crops == 0).any()  # some crops reach into the zero border
    assert np.all(crops == images, axis=(1, 2, 3)).sum() < 8  # offset (4, 4) has probability 1/81
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    offsets = set()
    for img, crop in zip(padded, crops, strict=True):  # every crop is a window of the zero-padded original
        found = [(y, x) for y in range(9) for x in range(9) if np.array_equal(img[y:y + 10, x:x + 10], crop)]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 20  # offsets spread over the 81 possible ones


def test_prefetch_thread_stops_when_abandoned():
    loader = data.Loader(toy(200), 4, train=True, prefetch=2, **UNIT)
    it = loader.epoch(0)
    next(it)
    assert prefetch_threads()
    it.close()
    assert not prefetch_threads()
    it = loader.epoch(1)
    next(it)
    del it
    gc.collect()
    deadline = time.monotonic() + 2
    while prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not prefetch_threads()


def test_worker_errors_reach_the_consumer(monkeypatch):
    loader = data.Loader(toy(40), 4, train=True, **UNIT)
    monkeypatch.setattr(loader, "batch", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        next(loader.epoch(0))
    assert not prefetch_threads()


def slow_batches(monkeypatch, loader: data.Loader, seconds: float) -> None:
    """Make building each batch take `seconds` (a sleep: the timing holds on a busy host, no CPU needed)."""
    build = loader.batch

    def slow(*args):
        time.sleep(seconds)
        return build(*args)

    monkeypatch.setattr(loader, "batch", slow)


def test_device_put_with_sharding_and_throughput(monkeypatch):
    """throughput() reports the rate batches are actually delivered at: here bounded by a 50 ms build per batch."""
    jax = pytest.importorskip("jax")
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    loader = data.Loader(toy(64), 16, train=True, sharding=sharding, **UNIT)
    batch = next(iter(loader.epoch(0)))
    assert isinstance(batch["image"], jax.Array) and batch["image"].sharding == sharding
    slow_batches(monkeypatch, loader, 0.05)
    ceiling = 16 / 0.05  # img/s if building were the only cost; the worker starts inside the timed region
    assert ceiling / 3 < data.throughput(loader, 4) <= ceiling * 1.01
    assert not prefetch_threads()


def test_prefetch_overlaps_production_with_a_slow_consumer(monkeypatch):
    """With prefetch, building batch i+1 happens while the consumer works on batch i.

    10 batches, 0.1 s to build and 0.1 s to consume each: 2.0 s one after the other, ~1.1 s overlapped.
    Without overlap the elapsed time cannot be below 2.0 s, so the 1.6 s bound leaves 0.5 s of slack for a
    busy host and still fails on a pipeline that stopped prefetching.
    """
    loader = data.Loader(toy(40), 4, train=True, prefetch=2, **UNIT)
    slow_batches(monkeypatch, loader, 0.1)
    start = time.monotonic()
    for _ in loader.epoch(0):
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    assert len(loader) == 10
    assert elapsed < 0.8 * (10 * 0.1 + 10 * 0.1), f"no overlap: {elapsed:.2f} s for 10 x (0.1 s build + 0.1 s use)"


@pytest.mark.parametrize("train", [True, False])
def test_a_process_builds_its_rows_with_the_numbers_of_the_whole_batch(train):
    """Each process of a multi-process run builds only its rows of every global batch: the crops and AutoAugment
    draws are the whole batch's, so the parts put together are the single-process batch (the ragged eval
    batch included, padded and masked per part)."""
    ds = data.Dataset(np.random.default_rng(0).integers(0, 255, (20, 8, 8, 3), np.uint8), (np.arange(20) % 10).astype(np.int32),
                      "toy", real=False)
    kw = {"train": train, "mean": (0.5,) * 3, "std": (0.25,) * 3, "seed": 3, "autoaugment": "autoaugment-svhn"}
    whole = data.Loader(ds, 8, **kw)
    parts = [data.Loader(ds, 8, rows=rows, **kw) for rows in ((0, 2), (2, 8))]
    for index in range(len(whole)):  # eval: the last batch holds 4 samples, so the second part holds 2 and 4 pads
        expected = whole.batch(1, index)
        got = [p.batch(1, index) for p in parts]
        for key in expected:
            np.testing.assert_array_equal(np.concatenate([g[key] for g in got]), expected[key])
    with pytest.raises(ValueError, match="rows"):
        data.Loader(ds, 8, rows=(4, 9), **kw)
