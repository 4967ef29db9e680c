"""scikit-learn's bundled handwritten digits: small, but real and always offline.

1,797 8x8 images (values 0..16) from the UCI optical-recognition set. They are the only
real digit images available without a download, so they serve as a sanity check on real
handwriting when SVHN/MNIST cannot be fetched.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .dataset import Dataset
from .resize import resize_uint8

SPLITS = ("train", "test")


def load_digits_dataset(split: str = "train", *, seed: int = 0, image_size: int = 32, channels: int = 3,
                        test_fraction: float = 0.2) -> Dataset:
    """Stratified `test_fraction` hold-out (seeded, so train/test stay disjoint across calls).

    Defaults give SVHN-shaped (32, 32, 3) images; image_size=28, channels=1 gives MNIST shape.
    """
    if split not in SPLITS:
        raise ValueError(f"digits split must be one of {SPLITS}, got {split!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int32)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=test_fraction,
                                           stratify=labels, random_state=seed)
    idx = np.sort(train_idx if split == "train" else test_idx)
    images = resize_uint8(pixels[idx], image_size)
    if channels == 3:
        images = np.repeat(images, 3, axis=-1)
    name = f"digits (scikit-learn, 8x8 resized to {image_size}x{image_size})"
    return Dataset(images, labels[idx], name, real=True)
