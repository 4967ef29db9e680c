"""Digit data sets as uint8 NHWC arrays, and the input pipeline that feeds them to JAX.

    ds = load("svhn", "train")          # official .mat files (cached, md5-checked)
    ds = load(resolve("auto"), "train")  # SVHN if obtainable, else the synthetic stand-in (with a warning)

Sources: "svhn", "mnist" (official files), "tfds:svhn_cropped", "tfds:mnist" (prepared
tensorflow-datasets), "digits" (scikit-learn's bundled 8x8 digits), "synthetic" and
"synthetic-mnist" (generated, embedded, offline; `Dataset.real` is False).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

from ..files import cache_dir, reachable
from . import mnist, svhn
from .dataset import NUM_CLASSES, DataCorrupt, Dataset, DataUnavailable
from .digits import load_digits_dataset
from .normalize import IMAGENET_MEAN, IMAGENET_STD, MNIST_MEAN, MNIST_STD, dataset_mean_std, mean_std
from .pipeline import Loader, random_crop, throughput
from .splits import stratified_subset, train_val_split
from .synthetic import load_synthetic
from .tfds_source import load_tfds

__all__ = [
    "NUM_CLASSES", "SOURCES", "DataCorrupt", "DataUnavailable", "Dataset", "IMAGENET_MEAN", "IMAGENET_STD",
    "Loader", "MNIST_MEAN", "MNIST_STD", "cache_dir", "dataset_mean_std", "load", "mean_std", "random_crop",
    "resolve", "stratified_subset", "throughput", "train_val_split",
]


def _source(loader: Callable[..., Dataset], uses: tuple[str, ...], **defaults) -> Callable[..., Dataset]:
    """Adapt `loader` to load()'s signature, forwarding only the common keywords it `uses`
    (files have no seed; embedded sources download nothing)."""
    def adapted(split: str, *, data_dir: str | None, download: bool, seed: int, **kw) -> Dataset:
        common = {"data_dir": data_dir, "download": download, "seed": seed}
        return loader(split, **{k: common[k] for k in uses}, **{**defaults, **kw})
    return adapted


_FILES, _EMBEDDED = ("data_dir", "download"), ("data_dir", "seed")  # synthetic caches under data_dir
SOURCES: dict[str, Callable[..., Dataset]] = {
    "svhn": _source(svhn.load_svhn, _FILES),
    "mnist": _source(mnist.load_mnist, _FILES),
    "tfds:svhn_cropped": _source(partial(load_tfds, "svhn_cropped"), _FILES),
    "tfds:mnist": _source(partial(load_tfds, "mnist"), _FILES),
    "digits": _source(load_digits_dataset, ("seed",)),
    "synthetic": _source(load_synthetic, _EMBEDDED),
    "synthetic-mnist": _source(load_synthetic, _EMBEDDED, image_size=28, channels=1),
}
# What "auto" loads when the real data set cannot be had: the closest real data offline. For MNIST that is
# scikit-learn's bundled 8x8 handwritten digits (real handwriting; load them with image_size/channels to match
# a model); for SVHN nothing real is bundled, so the generated house numbers.
_OFFLINE_STAND_IN = {"svhn": "synthetic", "mnist": "digits"}


def load(source: str, split: str = "train", *, data_dir: str | None = None, download: bool = True,
         seed: int = 0, **kw) -> Dataset:
    """Split `split` of `source` (see SOURCES); `seed` only matters for digits/synthetic.

    Extra keywords go to the source, e.g. image_size/channels for digits and synthetic,
    n for synthetic. Raises DataUnavailable (offline, not downloaded) or DataCorrupt.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; choose one of {sorted(SOURCES)}")
    return SOURCES[source](split, data_dir=data_dir, download=download, seed=seed, **kw)


def resolve(data: str, dataset: str = "svhn", data_dir: str | None = None) -> str:
    """The source to load: `data` itself, or for "auto" the real `dataset` when its files are
    cached or its host is reachable, else its offline stand-in ("digits" for mnist, "synthetic"
    for svhn), with a warning that results are not on the real data set."""
    if data != "auto":
        if data not in SOURCES:
            raise ValueError(f"unknown data source {data!r}; choose 'auto' or one of {sorted(SOURCES)}")
        return data
    modules = {"svhn": svhn, "mnist": mnist}
    if dataset not in modules:
        raise ValueError(f"'auto' resolves 'svhn' or 'mnist', got dataset={dataset!r}")
    module = modules[dataset]
    if module.is_cached(data_dir) or reachable(module.MIRRORS):
        return dataset
    stand_in = _OFFLINE_STAND_IN[dataset]
    warnings.warn(f"{dataset} is not cached in {module.directory(data_dir)} and its host is unreachable: "
                  f"using {stand_in!r}; results are NOT on the real {dataset.upper()} data set", stacklevel=2)
    return stand_in
