"""Per-channel normalisation constants.

Pretrained torchvision weights expect ImageNet statistics whatever the target data set,
so those are the default; MNIST's own statistics are there for models trained from
scratch on one channel.
"""

from __future__ import annotations

import numpy as np

from .dataset import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")


def mean_std(channels: int, stats: str = "imagenet") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of length `channels` on the [0, 1] scale.

    stats="imagenet" with channels=1 gives the luma-weighted ImageNet values, i.e. what a
    grey image has when a pretrained RGB model's first conv is summed over its inputs;
    stats="mnist" gives MNIST's (1 channel, or replicated to 3 for grey-to-RGB input).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if stats == "imagenet":
        if channels == 3:
            return IMAGENET_MEAN, IMAGENET_STD
        return (float(np.dot(_LUMA, IMAGENET_MEAN)),), (float(np.dot(_LUMA, IMAGENET_STD)),)
    if stats == "mnist":
        return MNIST_MEAN * channels, MNIST_STD * channels
    raise ValueError(f"stats must be 'imagenet' or 'mnist', got {stats!r}")


def dataset_mean_std(ds: Dataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of `ds` on the [0, 1] scale (for training from scratch).

    Computed from 256-bin histograms: exact for uint8 and without a float copy of the data.
    """
    values = np.arange(256, dtype=np.float64) / 255.0
    mean, std = [], []
    for c in range(ds.images.shape[-1]):
        hist = np.bincount(ds.images[..., c].ravel(), minlength=256) / ds.images[..., c].size
        m = float(hist @ values)
        mean.append(m)
        std.append(float(np.sqrt(max(hist @ values**2 - m * m, 0.0))))
    return tuple(mean), tuple(std)
